"""The lab's benchmark: six measurements side by side, in one run, on this machine.

Usage: make bench                      (the lab must be up: make up)
       .venv/bin/python loadtests/bench.py [--only 1,2,3] [--seconds 10] [--profile] [--no-readme]

Every server measured runs the same gunicorn configuration as the lab
(``labctl.supervisor.GUNICORN_ARGS``: 2 workers x 4 threads, gthread):

1. ceiling: a bare Django ``JsonResponse`` (``loadtests/bench_apps``, started
   here on a free loopback port);
2. a bare DRF list of the catalog's rows without the chassis (same project,
   its own table filled from ``inventory_service/catalog/seed.py``; on MySQL
   in schema ``lab_bench`` when the lab runs on MySQL, else SQLite);
3. the catalog list through the full chassis: inventory ``GET /api/products/``
   (tracing and metrics as the lab runs them, no fault active);
4. sync checkout end to end: orders/s and p50/p95/p99 of ``POST /api/orders/``
   at 32 users without think time;
5. async checkout: acceptance latency (202) and orders/s completed, or
   "not available" while the order service has no saga switch;
6. order creation with payment down (outage fault): breaker on (it opens) vs
   breaker off, p50/p99;

plus the peak resident memory of the whole lab (supervisord and every
process under it, RSS summed, PSS beside it since forked workers share pages).

Plain GETs are driven by ``wrk`` (C, one thread, 32 connections), flows by
Locust FastHttpUsers in 2 worker processes. Both share this machine's cores
with the lab: on a 2-core box the generator takes part of the CPU it
measures, and the table says so. Targets are recorded, never asserted.

Results: ``loadtests/results/<date>.json`` and a Markdown table written into
README.md between ``<!-- bench:start -->`` and ``<!-- bench:end -->``.
``--profile`` samples one gunicorn worker of each service under test with
``py-spy --gil`` during steps 3, 4 and 6 and writes where its CPU goes into
the notes; each row also has the CPU the servers (and MySQL) spent per
request, which bounds throughput on this machine whatever the concurrency.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

import requests

ROOT = Path(__file__).resolve().parents[1]

from labctl import config, load, supervisor  # noqa: E402
from labctl.config import Paths  # noqa: E402
from labctl.labapi import LabApi  # noqa: E402
from retry_after import post_waiting_out_limits  # noqa: E402

PATHS = Paths(ROOT)
URLS = {s.short: s.url for s in config.SERVICES}
WORK = PATHS.var / "bench"
RESULTS = ROOT / "loadtests" / "results"
README = ROOT / "README.md"
MARK_START, MARK_END = "<!-- bench:start -->", "<!-- bench:end -->"
WRK_CONNECTIONS = 32
FLOW_USERS = 32
FLOW_WORKERS = 2
PAYMENT_DOWN_USERS = 8
ACCOUNT_PASSWORD = "bench-lab-2024"
TARGETS = {
    "chassis_vs_drf": 0.80,  # (3) >= 80 % of (2)
    "checkout_orders_per_s": 100,
    "checkout_p99_ms": 250,  # (4) at 32 users
    "breaker_open_p99_ms": 20,  # (6)
    "lab_rss_mb": 1536,
}
WRK_SCRIPT = """
done = function(summary, latency, requests)
  io.write(string.format("BENCH_JSON {\\"requests\\": %d, \\"duration_us\\": %d, \\"status_errors\\": %d, "
    .. "\\"socket_errors\\": %d, \\"p50_us\\": %d, \\"p95_us\\": %d, \\"p99_us\\": %d, \\"max_us\\": %d}\\n",
    summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max))
end
"""


def say(text: str = "") -> None:
    print(text, flush=True)


# ------------------------------------------------------------ the machine


class MemorySampler:
    """Samples the lab's memory (supervisord and all its descendants) every half second."""

    def __init__(self):
        import psutil

        self.psutil = psutil
        self.peak_rss = 0
        self.peak_pss = 0
        self.processes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def root(self):
        try:
            pid = int(PATHS.supervisord_pidfile.read_text().strip())
            return self.psutil.Process(pid)
        except (OSError, ValueError, self.psutil.Error):
            return None

    def sample(self) -> tuple[int, int, int]:
        root = self.root()
        if root is None:
            return 0, 0, 0
        rss = pss = count = 0
        for process in [root, *root.children(recursive=True)]:
            try:
                info = process.memory_full_info()
                rss += info.rss
                pss += getattr(info, "pss", info.rss)
                count += 1
            except self.psutil.Error:
                continue
        return rss, pss, count

    def _run(self):
        for _ in range(7200):  # at most an hour
            if self._stop.wait(0.5):
                return
            rss, pss, count = self.sample()
            if rss > self.peak_rss:
                self.peak_rss, self.processes = rss, count
            self.peak_pss = max(self.peak_pss, pss)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)


def wait_quiet(limit: int) -> list[float]:
    """Wait (at most ``limit`` s) until the 1-minute load average is below the core count; return it."""
    cores = os.cpu_count() or 1
    deadline = time.monotonic() + max(limit, 0)
    announced = False
    while os.getloadavg()[0] >= cores and time.monotonic() < deadline:
        if not announced:
            say(
                f"waiting (up to {limit} s) for the machine to calm down: load average {os.getloadavg()[0]:.1f} "
                f"on {cores} cores ..."
            )
            announced = True
        time.sleep(5)
    return [round(v, 2) for v in os.getloadavg()]


class CpuMeter:
    """CPU seconds (user + system) used by a set of processes: the servers measured, and MySQL apart.

    Divided by the requests served, it is what one request costs the machine,
    a figure that a busy neighbour does not inflate the way it inflates latency.
    """

    def __init__(self, root_pid):
        import psutil

        self.psutil = psutil
        self.root_pid = root_pid  # a callable: the pid whose process tree is measured

    def _tree(self):
        try:
            root = self.psutil.Process(self.root_pid())
            return [root, *root.children(recursive=True)]
        except (self.psutil.Error, TypeError, ValueError, OSError):
            return []

    def _mysql(self):
        return [p for p in self.psutil.process_iter(["name"]) if p.info["name"] in ("mariadbd", "mysqld")]

    @staticmethod
    def _seconds(processes) -> float:
        import psutil

        total = 0.0
        for process in processes:
            try:
                times = process.cpu_times()
                total += times.user + times.system
            except psutil.Error:  # the process ended between the listing and the reading
                continue
        return total

    def read(self) -> tuple[float, float]:
        return self._seconds(self._tree()), self._seconds(self._mysql())

    @staticmethod
    def per_request(before, after, requests_made: int) -> dict:
        if not requests_made:
            return {}
        servers, mysql = (after[0] - before[0]) * 1000 / requests_made, (after[1] - before[1]) * 1000 / requests_made
        cores = os.cpu_count() or 1
        return {
            "server_cpu_ms": round(servers, 2),
            "mysql_cpu_ms": round(mysql, 2),
            "cpu_bound_per_s": round(cores * 1000 / (servers + mysql), 1) if servers + mysql > 0 else None,
        }


def supervisord_pid() -> int:
    return int(PATHS.supervisord_pidfile.read_text().strip())


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# ------------------------------------------------------------------ wrk


def wrk(url: str, seconds: int, *, cpu: CpuMeter, warmup: int = 2) -> dict:
    """Requests/s and latency percentiles of GET ``url`` (wrk, 1 thread, 32 connections)."""
    script = WORK / "report.lua"
    script.write_text(WRK_SCRIPT)
    base = ["wrk", "-t1", f"-c{WRK_CONNECTIONS}", "-s", str(script), "--timeout", "10s"]
    subprocess.run(base + [f"-d{warmup}s", url], capture_output=True, text=True, timeout=warmup + 30)
    before = cpu.read()
    done = subprocess.run(base + [f"-d{seconds}s", url], capture_output=True, text=True, timeout=seconds + 60)
    after = cpu.read()
    match = re.search(r"BENCH_JSON (\{.*\})", done.stdout)
    if not match:
        raise RuntimeError(f"wrk gave no figures: {done.stdout[-500:]} {done.stderr[-500:]}")
    data = json.loads(match.group(1))
    duration = data["duration_us"] / 1e6
    return {
        "rps": round(data["requests"] / duration, 1),
        "requests": data["requests"],
        "errors": data["status_errors"] + data["socket_errors"],
        "p50_ms": round(data["p50_us"] / 1000, 2),
        "p95_ms": round(data["p95_us"] / 1000, 2),
        "p99_ms": round(data["p99_us"] / 1000, 2),
        "generator": f"wrk 1 thread, {WRK_CONNECTIONS} connections, {seconds} s",
        **CpuMeter.per_request(before, after, data["requests"]),
    }


# ------------------------------------------------------------ the baselines


def lab_database() -> str:
    from labctl.provision import read_env_file

    url = read_env_file(PATHS.env_file(config.SERVICE_BY_NAME["inventory"])).get("DATABASE_URL", "")
    return "mysql" if url.startswith("mysql") else "sqlite"


def baseline_database() -> tuple[str, str]:
    """(DATABASE_URL, description) of the baseline's table: MySQL when the lab runs on it."""
    if lab_database() == "mysql":
        admin = urlparse(os.environ.get("LAB_MYSQL_ADMIN_URL") or config.DEFAULT_MYSQL_ADMIN_URL)
        import MySQLdb

        conn = MySQLdb.connect(
            host=admin.hostname or "127.0.0.1",
            port=admin.port or 3306,
            user=admin.username or "root",
            passwd=admin.password or "",
        )
        try:
            conn.cursor().execute("CREATE DATABASE IF NOT EXISTS `lab_bench` CHARACTER SET utf8mb4")
        finally:
            conn.close()
        return admin._replace(path="/lab_bench").geturl(), "MySQL schema lab_bench"
    return f"sqlite:///{WORK / 'baseline.sqlite3'}", "SQLite file var/bench/baseline.sqlite3"


class Baseline:
    """The throwaway Django project, under gunicorn with the lab's options."""

    def __init__(self, database_url: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "BENCH_DATABASE_URL": database_url,
            "DJANGO_SETTINGS_MODULE": "benchsite.settings",
            "PYTHONUNBUFFERED": "1",
        }
        self.cwd = ROOT / "loadtests" / "bench_apps"
        self.process = None

    def __enter__(self):
        subprocess.run(
            [sys.executable, "-m", "benchsite.load_rows", str(ROOT / "inventory_service/catalog/seed.py")],
            cwd=self.cwd,
            env=self.env,
            check=True,
            capture_output=True,
            timeout=120,
        )
        log = (WORK / "baseline.log").open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "benchsite.wsgi:application",
                "--bind",
                f"127.0.0.1:{self.port}",
                *supervisor.GUNICORN_ARGS.split(),
            ],
            cwd=self.cwd,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        for _ in range(100):
            try:
                if requests.get(f"{self.url}/ping/", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            if self.process.poll() is not None:
                break
            time.sleep(0.2)
        raise RuntimeError(f"the baseline project did not start; see {WORK / 'baseline.log'}")

    def __exit__(self, *exc):
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


# ----------------------------------------------------------------- profiles


# (label, substrings of a frame as py-spy writes it: "function (path/relative/to/site-packages.py:line)");
# the innermost frame that matches names the layer a sample belongs to.
PROFILE_RATE = 100  # samples per second
LAYERS = (
    ("tracing (OpenTelemetry)", ("opentelemetry", "otel_middleware", "instrumentation/", "sdk/trace", "exporter/")),
    ("metrics (prometheus_client)", ("prometheus_client", "chassis/metrics")),
    ("Redis (faults, switches, cache)", ("redis/",)),
    ("MySQL driver and Django's db backend", ("MySQLdb", "mysqlclient", "django/db/backends")),
    ("Django ORM (query building)", ("django/db/models",)),
    ("HTTP client to peers (requests, urllib3, http.client)", ("requests/", "urllib3/", "http/client")),
    ("JWT / signatures (cryptography, PyJWT)", ("jwt/", "cryptography")),
    ("logging (access log, service logs)", ("logging/", "glogging")),
    ("chassis", ("chassis/",)),
    ("DRF", ("rest_framework",)),
    ("Django (request, middleware)", ("django/", "whitenoise")),
    ("gunicorn", ("gunicorn",)),
    ("service code", ("catalog/", "orders/", "payments/", "accounts/")),
)


class Profiler:
    """py-spy record on a few pids while a step runs; raw collapsed stacks kept under var/bench/profiles/."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and shutil.which("py-spy", path=str(PATHS.venv_bin)) is not None
        self.procs: list[tuple[str, subprocess.Popen, Path]] = []

    @staticmethod
    def worker_pid(service: str) -> int | None:
        info = supervisor.process_info(PATHS).get(service)
        if not info or not info.get("pid"):
            return None
        from labctl.scale import _children

        children = _children(info["pid"])
        return children[0] if children else info["pid"]

    def start(self, step: str, services: list[str], seconds: int) -> None:
        if not self.enabled:
            return
        out = WORK / "profiles"
        out.mkdir(parents=True, exist_ok=True)
        for service in services:
            pid = self.worker_pid(service)
            if pid is None:
                continue
            path = out / f"{step}-{service}.txt"
            # --gil: only samples of a thread holding the GIL, i.e. Python code on a CPU. The figures are
            # CPU-bound (see the CPU per request), so where that CPU goes is the question.
            cmd = [
                str(PATHS.venv_bin / "py-spy"),
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(seconds),
                "--rate",
                str(PROFILE_RATE),
                "--format",
                "raw",
                "--output",
                str(path),
                "--gil",
            ]
            self.procs.append(
                (service, subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), path, seconds)
            )

    def finish(self) -> dict[str, dict]:
        """``{service: {"samples", "layers": {label: share}, "top": [(function, share)]}}``."""
        out = {}
        for service, proc, path, seconds in self.procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if path.exists():
                out[service] = summarize_profile(path, seconds=seconds)
        self.procs = []
        return out


def summarize_profile(path: Path, *, seconds: float | None = None) -> dict:
    """Where one worker's CPU goes: share of its GIL-holding samples per layer (the innermost recognised
    frame of each stack), the top functions, and how much of one core its Python code kept busy."""
    layers: Counter = Counter()
    leaves: Counter = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        total += n
        leaves[re.sub(r" \((?:.*/)?([^/]+)\)$", r" \1", frames[-1])] += n
        label = "other (standard library, threads)"
        for frame in reversed(frames):  # the innermost library that runs is what costs
            hit = next((name for name, keys in LAYERS if any(k in frame for k in keys)), None)
            if hit:
                label = hit
                break
        layers[label] += n
    if not total:
        return {"samples": 0, "layers": {}, "top": [], "file": str(path), "seconds": seconds}
    return {
        "samples": total,
        "seconds": seconds,
        "core_share": round(total / (PROFILE_RATE * seconds), 2) if seconds else None,
        "layers": {k: round(v / total, 3) for k, v in layers.most_common()},
        "top": [(k.strip(), round(v / total, 3)) for k, v in leaves.most_common(8)],
        "file": str(path),
    }


# ------------------------------------------------------------ accounts, stock


def lab_api() -> LabApi:
    return LabApi(PATHS, urls=URLS, timeout=15)


def prepare_accounts(count: int) -> Path:
    """``count`` bench accounts logged in, each with an approved card; cached in var/bench/accounts.json."""
    cache = WORK / "accounts.json"
    accounts = []
    if cache.exists():
        try:
            accounts = json.loads(cache.read_text())
        except ValueError:
            accounts = []
    fresh = [a for a in accounts if a.get("expires_at", 0) > time.time() + 600 and a.get("cards", {}).get("approved")]
    if len(fresh) >= count and _token_works(fresh[0]):
        return cache
    session = requests.Session()
    accounts = []
    for n in range(1, count + 1):
        email = f"bench-{n:02d}@lab.local"
        body = {"email": email, "password": ACCOUNT_PASSWORD, "name": f"Bench customer {n}"}
        session.post(f"{URLS['user']}/api/auth/register/", json=body, timeout=30)  # 400 when it exists: fine
        login = session.post(
            f"{URLS['user']}/api/auth/login/", json={"email": email, "password": ACCOUNT_PASSWORD}, timeout=30
        )
        if login.status_code != 200:
            raise RuntimeError(f"cannot log {email} in: HTTP {login.status_code} {login.text[:200]}")
        access = login.json()["access"]
        headers = {"Authorization": f"Bearer {access}"}
        cards = session.get(f"{URLS['payment']}/api/payment-methods/", headers=headers, timeout=30).json()
        rows = cards.get("results", cards) if isinstance(cards, dict) else cards
        approved = next((c["token"] for c in rows if c.get("last4") == "4242"), None)
        if approved is None:
            added = session.post(
                f"{URLS['payment']}/api/payment-methods/",
                headers=headers,
                timeout=30,
                json={"card_number": "4242424242424242", "exp_month": 12, "exp_year": 2035, "cvc": "123"},
            )
            added.raise_for_status()
            approved = added.json()["token"]
        accounts.append(
            {
                "email": email,
                "password": ACCOUNT_PASSWORD,
                "access": access,
                "expires_at": time.time() + float(login.json().get("expires_in", 900)),
                "cards": {"approved": approved},
            }
        )
    cache.write_text(json.dumps(accounts, indent=2))
    return cache


def _token_works(account: dict) -> bool:
    try:
        response = requests.get(
            f"{URLS['order']}/api/orders/?page_size=1",
            headers={"Authorization": f"Bearer {account['access']}"},
            timeout=10,
        )
        return response.status_code == 200
    except requests.RequestException:
        return False


def restock(floor: int) -> None:
    """Bring every active product up to ``floor`` units, as the staff account (recorded as restocks).

    (loadtests/common.py does the same inside Locust; importing it here would
    import locust, which monkey-patches this process for gevent.)
    """
    session = requests.Session()
    login = session.post(
        f"{URLS['user']}/api/auth/login/",
        timeout=30,
        json={
            "email": os.environ.get("LAB_ADMIN_EMAIL", "admin@lab.local"),
            "password": os.environ.get("LAB_ADMIN_PASSWORD", "admin-lab-2024"),
        },
    )
    login.raise_for_status()
    session.headers["Authorization"] = f"Bearer {login.json()['access']}"
    products = session.get(f"{URLS['inventory']}/api/products/", params={"page_size": 100}, timeout=30).json()[
        "results"
    ]
    topped = 0
    for product in products:
        missing = floor - product.get("available", 0)
        if missing > 0:
            post_waiting_out_limits(
                session,
                f"{URLS['inventory']}/api/products/{product['sku']}/restock/",
                timeout=30,
                json={"quantity": missing, "note": "bench: stock floor"},
            ).raise_for_status()
            topped += 1
    if topped:
        say(f"   restocked {topped} product(s) up to {floor} units")


def program_starts() -> dict[str, int]:
    """When each program under supervisor last started: a change means it restarted."""
    return {name: info.get("start", 0) for name, info in supervisor.process_info(PATHS).items()}


def wait_healthy(limit: float = 90) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if not load.lab_healthy(URLS):
            return True
        time.sleep(2)
    return False


def attempt(step: int, what: str, measure, *, payment_fault: bool = False) -> dict:
    """One row: ``measure()``'s figures, measured again once if the lab restarted under it or it failed.

    The lab is shared: someone's ``make up`` or ``labctl restart`` in the middle of a
    measurement would otherwise be recorded as the lab's performance.
    """
    reason = ""
    for tries in (1, 2):
        before = program_starts()
        try:
            figures = measure()
        except Exception as exc:  # noqa: BLE001 — a failed measurement is retried once, then recorded as failed
            reason = f"{type(exc).__name__}: {exc}"[:300]
        else:
            requests_made, errors = figures.get("requests") or 0, figures.get("errors") or 0
            if program_starts() != before:
                reason = "a lab program restarted during the measurement"
            elif requests_made and errors > 0.05 * requests_made:
                reason = f"{errors} errors in {requests_made} requests"
            else:
                return {"step": step, "what": what, **figures, **({"attempts": tries} if tries > 1 else {})}
        say(f"   {reason}" + ("; measuring again once the lab is healthy" if tries == 1 else "; giving up"))
        if tries == 1:
            if payment_fault:  # the outage makes payment's /health/ fail on purpose
                time.sleep(10)
            else:
                wait_healthy()
    return {"step": step, "what": what, "unavailable": f"not measured: {reason}"}


def saga_mode(api: LabApi) -> str | None:
    """The order service's saga mode, or None while it has no /_lab/saga/ switch."""
    response = api.call("GET", "order", "/_lab/saga/")
    return response.json().get("mode") if response.status_code == 200 else None


def cancel_unfinished(accounts_file: Path) -> int:
    """Cancel the bench accounts' orders a payment outage left paused (compensation: stock back, nothing charged)."""
    cancelled = 0
    for account in json.loads(accounts_file.read_text()):
        headers = {"Authorization": f"Bearer {account['access']}"}
        for _ in range(50):  # pages of 100: far more than a bench step makes
            page = requests.get(
                f"{URLS['order']}/api/orders/",
                params={"status": "PENDING", "page_size": 100},
                headers=headers,
                timeout=30,
            ).json()
            pending = [o for o in page.get("results", []) if o.get("saga_step") not in ("none", None)]
            if not pending:
                break
            for order in pending:
                for _attempt in range(3):
                    r = requests.post(f"{URLS['order']}/api/orders/{order['id']}/cancel/", headers=headers, timeout=60)
                    if r.status_code == 200:
                        cancelled += 1
                        break
                    time.sleep(1)  # 409 while a runner holds its lease, 503 while a peer is still down
    return cancelled


# -------------------------------------------------------------------- steps


def flow(label: str, *, users: int, seconds: int, env: dict) -> dict:
    spec = load.RunSpec(
        scenario="checkout",
        users=users,
        spawn_rate=users,
        duration=f"{seconds}s",
        workers=FLOW_WORKERS,
        env={"THINK_TIME": "0", "DECLINE_SHARE": "0", "STOCK_FLOOR": "0", **env},
    )
    cpu = CpuMeter(supervisord_pid)
    before = cpu.read()
    # Health was checked once at the start; during step 6 payment's /health/ answers 503 on purpose.
    code, summary = load.run(spec, PATHS, stream=False, check_health=False)
    after = cpu.read()
    rows = {e["name"]: e for e in summary["endpoints"]}
    return {"summary": summary, "rows": rows, "exit_code": code, "run_dir": summary["run_id"], "cpu": (before, after)}


def order_row(result: dict, *, with_cpu: bool = True) -> dict:
    """The figures of POST /api/orders/ (and the lab's CPU per order: all requests of the run, warm-up included)."""
    row = result["rows"].get("/api/orders/") or {}
    figures = {
        "rps": row.get("rps"),
        "requests": row.get("requests"),
        "errors": row.get("failures"),
        "p50_ms": row.get("p50_ms"),
        "p95_ms": row.get("p95_ms"),
        "p99_ms": row.get("p99_ms"),
    }
    if with_cpu:
        figures.update(CpuMeter.per_request(*result["cpu"], row.get("requests") or 0))
    return figures


def generator_flows(users: int) -> str:
    return f"Locust FastHttpUser, {FLOW_WORKERS} worker processes, {users} users, no think time"


def set_resilience(api: LabApi, **switches) -> None:
    api.json("PUT", "order", "/_lab/resilience/", json=switches)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="1,2,3,4,5,6", help="steps to run, e.g. 1,2,3")
    parser.add_argument("--seconds", type=int, default=10, help="seconds of each wrk step (default 10)")
    parser.add_argument("--flow-seconds", type=int, default=20, help="seconds of each checkout step (default 20)")
    parser.add_argument("--profile", action="store_true", help="py-spy the service under test in steps 3, 4, 6")
    parser.add_argument("--no-readme", action="store_true", help="do not write the table into README.md")
    parser.add_argument(
        "--from-results", metavar="JSON", help="judge, explain and render a saved result again (no measuring)"
    )
    parser.add_argument(
        "--wait-quiet",
        type=int,
        default=300,
        metavar="SECONDS",
        help="first wait up to this long for the 1-minute load average to drop below the core "
        "count (default 300; 0: do not wait)",
    )
    args = parser.parse_args(argv)
    if args.from_results:
        return rerender(Path(args.from_results).resolve(), readme=not args.no_readme)
    steps = {int(s) for s in args.only.split(",") if s.strip()}
    seconds = min(max(args.seconds, 3), 30)
    flow_seconds = min(max(args.flow_seconds, 5), 30)

    quiet_before = wait_quiet(args.wait_quiet)
    problems = load.lab_healthy(URLS)
    if problems:
        say("The lab is down or unhealthy: " + ", ".join(f"{n} {p}" for n, p in problems.items()))
        say("The benchmark measures the lab started by make up: run make up, then make bench.")
        return 1
    if not shutil.which("wrk") and steps & {1, 2, 3}:
        say("wrk is not installed (apt-get install -y wrk): it drives the plain GET steps 1-3.")
        return 1
    WORK.mkdir(parents=True, exist_ok=True)
    say(f"The lab is healthy ({', '.join(URLS.values())}); benchmarking on {os.cpu_count()} cores.")
    api = lab_api()
    for service in URLS:
        api.json("DELETE", service, "/_lab/faults/")
    set_resilience(api, reset_breakers=True)

    started = time.monotonic()
    rows: list[dict] = []
    profiles: dict[str, dict] = {}
    profiler = Profiler(args.profile)
    database_note = ""

    def profiled(step: str, services: list[str], length: int, measure):
        def run():
            profiler.start(step, services, length)
            try:
                return measure()
            finally:
                profiles[step] = profiler.finish()

        return run

    with MemorySampler() as memory:
        if steps & {1, 2}:
            database_url, database_note = baseline_database()
            with Baseline(database_url) as base:
                base_cpu = CpuMeter(lambda: base.process.pid)
                if 1 in steps:
                    say("1. ceiling: bare Django JsonResponse ...")
                    rows.append(
                        attempt(
                            1,
                            "Bare Django JsonResponse (ceiling)",
                            lambda: wrk(f"{base.url}/ping/", seconds, cpu=base_cpu),
                        )
                    )
                if 2 in steps:
                    say("2. bare DRF list of the catalog rows ...")
                    rows.append(
                        attempt(
                            2,
                            f"Bare DRF list, 20 of 30 rows ({database_note})",
                            lambda: wrk(f"{base.url}/products/", seconds, cpu=base_cpu),
                        )
                    )
        if 3 in steps:
            say("3. catalog list through the chassis (inventory GET /api/products/) ...")
            rows.append(
                attempt(
                    3,
                    f"Chassis catalog list, inventory GET /api/products/ ({lab_database()})",
                    profiled(
                        "3",
                        ["inventory"],
                        seconds,
                        lambda: wrk(f"{URLS['inventory']}/api/products/", seconds, cpu=CpuMeter(supervisord_pid)),
                    ),
                )
            )

        accounts = None
        if steps & {4, 5, 6}:
            say("preparing 32 bench accounts and stock ...")
            accounts = prepare_accounts(FLOW_USERS)
            restock(max(3000, 150 * flow_seconds))
        if 4 in steps:
            say(f"4. sync checkout, {FLOW_USERS} users ...")

            def sync_checkout():
                result = flow(
                    "sync",
                    users=FLOW_USERS,
                    seconds=flow_seconds,
                    env={"ACCOUNTS_FILE": str(accounts), "SAGA_MODE": "sync"},
                )
                return {
                    **order_row(result),
                    "unit": "orders/s",
                    "generator": generator_flows(FLOW_USERS),
                    "run": result["run_dir"],
                }

            rows.append(
                attempt(
                    4,
                    f"Sync checkout end to end, POST /api/orders/ at {FLOW_USERS} users",
                    profiled("4", ["order", "inventory", "payment"], flow_seconds, sync_checkout),
                )
            )
        if 5 in steps:
            mode = saga_mode(api)
            worker = supervisor.process_info(PATHS).get("worker", {}).get("statename")
            missing = (
                "the order service has no /_lab/saga/ switch (async saga) yet"
                if mode is None
                else None
                if worker == "RUNNING"
                else f"no Celery worker runs under supervisor (program worker: {worker or 'absent'})"
            )
            if missing:
                say(f"5. async checkout: not available: {missing}")
                rows.append({"step": 5, "what": "Async checkout", "unavailable": f"not available: {missing}"})
            else:
                say(f"5. async checkout, {FLOW_USERS} users ...")

                def async_checkout():
                    result = flow(
                        "async",
                        users=FLOW_USERS,
                        seconds=flow_seconds,
                        env={"ACCOUNTS_FILE": str(accounts), "SAGA_MODE": "async"},
                    )
                    flows = result["summary"]["flows"]
                    return {
                        **order_row(result, with_cpu=False),
                        "completed_per_s": flows[0]["rps"] if flows else None,
                        "completion_p50_ms": flows[0]["p50_ms"] if flows else None,
                        "completion_p99_ms": flows[0]["p99_ms"] if flows else None,
                        "unit": "accepted/s",
                        "generator": generator_flows(FLOW_USERS),
                        "run": result["run_dir"],
                    }

                rows.append(attempt(5, f"Async checkout: acceptance (202) at {FLOW_USERS} users", async_checkout))
        if 6 in steps:
            window = max(8, flow_seconds // 2)
            api.json(
                "PUT",
                "payment",
                "/_lab/faults/",
                json={"id": "bench-payment-down", "kind": "outage", "ttl_seconds": 4 * window + 120},
            )
            try:
                for breaker in (True, False):
                    label = "breaker on (open)" if breaker else "breaker off"
                    say(f"6. order creation with payment down, {label}, {PAYMENT_DOWN_USERS} users ...")

                    def payment_down(breaker=breaker):
                        set_resilience(lab_api(), breaker={"enabled": breaker}, reset_breakers=True)
                        result = flow(
                            "payment-down",
                            users=PAYMENT_DOWN_USERS,
                            seconds=window,
                            env={"ACCOUNTS_FILE": str(accounts), "FOLLOW_ORDERS": "false", "SAGA_MODE": "sync"},
                        )
                        return {
                            **order_row(result),
                            "unit": "orders/s",
                            "generator": generator_flows(PAYMENT_DOWN_USERS),
                            "run": result["run_dir"],
                        }

                    rows.append(
                        attempt(
                            6,
                            f"Order creation, payment down, {label}",
                            profiled(f"6-{'on' if breaker else 'off'}", ["order"], window, payment_down),
                            payment_fault=True,
                        )
                    )
            finally:
                api.json("DELETE", "payment", "/_lab/faults/bench-payment-down/")
                set_resilience(api, breaker={"enabled": True}, reset_breakers=True)
                time.sleep(1)
                say(f"   cancelled {cancel_unfinished(accounts)} order(s) the outage left paused")
        rss_now, pss_now, count_now = memory.sample()
    elapsed = time.monotonic() - started

    machine = load.machine()
    machine["load_average_at_end"] = machine.pop("load_average")
    machine["load_average_at_start"] = quiet_before
    lab_memory = {
        "peak_rss_mb": round(memory.peak_rss / 2**20),
        "peak_pss_mb": round(memory.peak_pss / 2**20),
        "processes": memory.processes,
        "idle_rss_mb_at_end": round(rss_now / 2**20),
    }
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "gunicorn": supervisor.GUNICORN_ARGS,
        "lab_database": lab_database(),
        "baseline_database": database_note,
        "elapsed_s": round(elapsed, 1),
        "rows": rows,
        "lab_memory": lab_memory,
        "profiles": profiles,
        "profiled": bool(args.profile),
    }
    out = RESULTS / f"{datetime.now().strftime('%Y-%m-%d')}.json"
    return finish(result, out, readme=not args.no_readme)


def finish(result: dict, out: Path, *, readme: bool) -> int:
    """Judge the targets, explain the misses, save the JSON, print the table (and put it in README.md)."""
    result["targets"] = judge(result["rows"], result["lab_memory"])
    result["notes"] = explain(result)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    table = markdown(result)
    say()
    say(table)
    say()
    say(f"Results: {out.relative_to(ROOT)} ({result['elapsed_s']:.0f} s of measuring)")
    if readme:
        write_readme(table)
        say(f"Table written into {README.relative_to(ROOT)} between {MARK_START} and {MARK_END}.")
    return 0


def rerender(path: Path, *, readme: bool) -> int:
    """Judge, explain and render a saved result again (profiles re-read from their raw files): no measuring."""
    result = json.loads(path.read_text())
    for by_service in result.get("profiles", {}).values():
        for service, profile in by_service.items():
            if profile.get("file") and Path(profile["file"]).exists():
                by_service[service] = summarize_profile(Path(profile["file"]), seconds=profile.get("seconds"))
    return finish(result, path, readme=readme)


# ------------------------------------------------------------------ verdicts


def _row(rows, step, what=None):
    return next((r for r in rows if r["step"] == step and (what is None or what in r["what"])), None)


def judge(rows: list[dict], memory: dict) -> dict:
    verdicts = {}
    drf, chassis = _row(rows, 2), _row(rows, 3)
    if drf and chassis and drf.get("rps") and chassis.get("rps"):
        share = chassis["rps"] / drf["rps"]
        value = f"{share:.2f}"
        if drf.get("cpu_bound_per_s") and chassis.get("cpu_bound_per_s"):
            # Throughput of two short wrk runs on a shared box moves with the neighbours; CPU per request does not.
            value += f" (by CPU per request: {chassis['cpu_bound_per_s'] / drf['cpu_bound_per_s']:.2f})"
        verdicts["chassis_vs_drf"] = {
            "target": "(3) >= 80 % of (2) in req/s",
            "value": value,
            "met": share >= TARGETS["chassis_vs_drf"],
        }
    checkout = _row(rows, 4)
    if checkout and checkout.get("rps") is not None:
        verdicts["checkout"] = {
            "target": ">= 100 orders/s at p99 <= 250 ms, 32 users",
            "value": f"{checkout['rps']} orders/s, p99 {checkout['p99_ms']} ms",
            "met": checkout["rps"] >= TARGETS["checkout_orders_per_s"]
            and (checkout["p99_ms"] or 1e9) <= TARGETS["checkout_p99_ms"],
        }
    breaker = _row(rows, 6, "breaker on")
    if breaker and breaker.get("p99_ms") is not None:
        verdicts["breaker_open"] = {
            "target": "p99 <= 20 ms with the breaker open",
            "value": f"{breaker['p99_ms']} ms",
            "met": breaker["p99_ms"] <= TARGETS["breaker_open_p99_ms"],
        }
    verdicts["lab_memory"] = {
        "target": "whole lab <= 1.5 GB RSS",
        "value": f"{memory['peak_rss_mb']} MB",
        "met": memory["peak_rss_mb"] <= TARGETS["lab_rss_mb"],
    }
    return verdicts


def explain(result: dict) -> list[str]:
    """Why each missed target is missed: the CPU each request costs (a hard bound on this machine's cores)
    and, with --profile, where the threads serving requests spend their time."""
    rows, verdicts, profiles = result["rows"], result["targets"], result.get("profiles", {})
    cores = result["machine"]["cpus"] or 1
    notes = []
    load_average = (result["machine"].get("load_average_at_start") or [0])[0]
    if load_average >= cores:
        notes.append(
            f"The machine was busy when the bench started (1-minute load average {load_average:.1f} on "
            f"{cores} cores, from work other than the bench): latencies are inflated by it."
        )
    where = {"chassis_vs_drf": (3, ["3"]), "checkout": (4, ["4"]), "breaker_open": (6, ["6-on"])}
    for name, verdict in verdicts.items():
        if verdict["met"]:
            continue
        if name == "lab_memory":
            memory = result["lab_memory"]
            notes.append(
                f"lab_memory: {memory['peak_rss_mb']} MB is the sum of the RSS of {memory['processes']} "
                f"processes (every gunicorn master and worker, the dashboard, the Celery worker and its pool, "
                f"beat, supervisord); forked workers share pages, and the proportional sum (PSS) is "
                f"{memory['peak_pss_mb']} MB."
            )
            continue
        step, profile_steps = where[name]
        row = _row(rows, step, "breaker on") if step == 6 else _row(rows, step)
        text = f"{name}: target missed ({verdict['value']})."
        if row and row.get("server_cpu_ms") is not None:
            text += (
                f" Each request costs the lab's servers {row['server_cpu_ms']:.1f} ms of CPU and MySQL "
                f"{row['mysql_cpu_ms']:.1f} ms: on {cores} cores no more than {row['cpu_bound_per_s']:g}/s "
                "can be served, whatever the concurrency; beyond that requests queue, which is the latency seen."
            )
        if name == "chassis_vs_drf" and _row(rows, 2, None) and _row(rows, 2).get("server_cpu_ms"):
            text += f" The bare DRF list costs {_row(rows, 2)['server_cpu_ms']:.1f} ms."
        notes.append(text)
        for profile_step in profile_steps:
            for service, profile in profiles.get(profile_step, {}).items():
                if profile.get("samples"):
                    layers = ", ".join(f"{k} {v:.0%}" for k, v in list(profile["layers"].items())[:7])
                    busy = (
                        f" kept {profile['core_share']:.0%} of a core busy running Python;"
                        if profile.get("core_share") is not None
                        else ""
                    )
                    notes.append(
                        f"{name}: py-spy --gil, step {profile_step}: one {service} worker{busy} its CPU went "
                        f"to {layers}."
                    )
        if not result.get("profiled"):
            notes.append(f"{name}: make bench BENCH_ARGS=--profile adds py-spy evidence of where the time goes.")
    if cores <= 2:
        notes.append(
            f"This machine has {cores} cores for the lab's gunicorn workers, MySQL, Redis and the load "
            "generator together; every throughput figure here is bounded by that."
        )
    return notes


def _ms(value) -> str:
    return "-" if value is None else (f"{value:.1f}" if value < 100 else f"{value:.0f}")


def markdown(result: dict) -> str:
    machine = result["machine"]
    lines = [
        f"Measured {result['date'][:10]} on {machine['cpus']} cores, {machine['memory_mb'] / 1024:.1f} GB RAM, "
        f"Python {machine['python']}, 1-minute load average {machine['load_average_at_start'][0]} at the start "
        f"and {(machine.get('load_average_at_end') or ['?'])[0]} at the end (other work shares the machine), "
        f"lab database {result['lab_database']}; every server runs gunicorn "
        f"`{result['gunicorn']}`. Load generator and lab share the machine. Command: `make bench"
        + (
            " BENCH_ARGS=--profile` (py-spy --gil sampled one worker of each service under test"
            " during steps 3, 4 and 6)."
            if result["profiled"]
            else "`."
        ),
        "",
        "| # | measurement | throughput | p50 ms | p95 ms | p99 ms | errors "
        "| CPU ms per request: servers + MySQL (bound on this machine) | load generator |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        if row.get("unavailable"):
            lines.append(f"| {row['step']} | {row['what']} | {row['unavailable']} | | | | | | |")
            continue
        unit = row.get("unit", "req/s")
        throughput = f"{row['rps']} {unit}" if row.get("rps") is not None else "-"
        if row.get("completed_per_s") is not None:
            throughput += f"; completed {row['completed_per_s']}/s (p50 {_ms(row['completion_p50_ms'])} ms)"
        cpu = (
            f"{row['server_cpu_ms']:.1f} + {row['mysql_cpu_ms']:.1f} (≤ {row['cpu_bound_per_s']:g}/s)"
            if row.get("server_cpu_ms") is not None and row.get("cpu_bound_per_s")
            else "-"
        )
        lines.append(
            f"| {row['step']} | {row['what']} | {throughput} | {_ms(row.get('p50_ms'))} | "
            f"{_ms(row.get('p95_ms'))} | {_ms(row.get('p99_ms'))} | {row.get('errors', '-')} | {cpu} | "
            f"{row.get('generator', '')} |"
        )
    memory = result["lab_memory"]
    lines.append(
        f"| - | Whole lab, peak memory ({memory['processes']} processes) | "
        f"{memory['peak_rss_mb']} MB RSS ({memory['peak_pss_mb']} MB PSS) | | | | | | sampled every 0.5 s |"
    )
    lines += ["", "| target | value | met |", "|---|---|---|"]
    for verdict in result["targets"].values():
        lines.append(f"| {verdict['target']} | {verdict['value']} | {'yes' if verdict['met'] else 'no'} |")
    if result["notes"]:
        lines.append("")
        lines += [f"- {note}" for note in result["notes"]]
    return "\n".join(lines)


def write_readme(table: str) -> None:
    """Put the table between the markers (adding a Performance section with them if README has none)."""
    text = README.read_text() if README.exists() else "# Microservices lab\n"
    block = f"{MARK_START}\n{table}\n{MARK_END}"
    if MARK_START in text and MARK_END in text:
        before, _, rest = text.partition(MARK_START)
        _, _, after = rest.partition(MARK_END)
        text = before + block + after
    else:
        text = text.rstrip("\n") + (
            "\n\n## Performance\n\n"
            "Figures from `make bench` (loadtests/bench.py) on the machine named below; "
            "each run rewrites this table and saves loadtests/results/<date>.json.\n\n" + block + "\n"
        )
    README.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
