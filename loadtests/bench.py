"""The lab's benchmark: six measurements side by side, in one run, on this machine.

Usage: make bench                      (the lab must be up: make up)
       .venv/bin/python loadtests/bench.py [--only 1,2,3] [--seconds 10] [--profile] [--no-readme]

Every server measured runs the same gunicorn configuration as the lab
(``labctl.supervisor.GUNICORN_ARGS``: one gthread worker of 8 threads; the
table says what the lab's processes actually run, ``labctl scale`` included):

1. ceiling: a bare Django ``JsonResponse`` (``loadtests/bench_apps``, started
   here on a free loopback port);
2. a bare DRF list of the catalog's rows without the chassis (same project,
   its own table filled from ``inventory_service/catalog/seed.py``; on MySQL
   in schema ``lab_bench`` when the lab runs on MySQL, else SQLite);
3. the catalog list through the full chassis: inventory ``GET /api/products/``
   (tracing and metrics as the lab runs them, no fault active);
4. sync checkout end to end: orders/s and p50/p95/p99 of ``POST /api/orders/``
   at 32 users without think time;
5. async checkout: the bench switches the order service to the async saga
   (``PUT /_lab/saga/``, the previous mode put back afterwards, whatever
   happens), the users place orders without waiting for them, and order's own
   API, counted once a second, says how many orders were accepted and how many
   reached a final status (CONFIRMED, CANCELLED, or beyond) per second while
   orders came in; or "not available" while there is no saga switch or worker;
6. order creation with payment down (outage fault): breaker on (it opens) vs
   breaker off, p50/p99;

plus the peak resident memory of the whole lab (supervisord and every
process under it, RSS summed, PSS beside it).

Plain GETs are driven by ``wrk`` (C, one thread, 32 connections), flows by
Locust FastHttpUsers in 2 worker processes. Both share this machine's cores
with the lab: on a 2-core box the generator takes part of the CPU it
measures, and the table says so. Targets (issue 11) are recorded, never
asserted, and judged from the figures of the run itself: the checkout's CPU
per order against the bare DRF list's CPU per request of the same run, not
against a figure from another day. The spread of the run (the 1-minute load
average's range during each step and the run, and the share of the cores
that processes other than the lab, its databases and the bench used) is
printed beside the verdicts. What tracing and metrics cost is measured by
``loadtests/overhead.py`` on its own (``--only`` never runs it); the table
shows its latest result, with its date.

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
# Issue 11's targets. Each is judged from figures of the same run (see judge()).
TARGETS = {
    "checkout_cost_vs_drf": 6.0,  # (4) servers + MySQL CPU per checkout <= 6 x (2)'s per request
    "checkout_orders_per_s": 100,  # (4) at 32 users ...
    "checkout_p99_ms": 300,  # ... and p99 <= 300 ms
    "async_accepted_per_s": 300,  # (5)
    "async_completed_per_s": 80,  # (5)
    "chassis_vs_drf": 0.90,  # (3) >= 90 % of (2) in req/s
    "breaker_open_p99_ms": 20,  # (6) breaker on
    "lab_rss_mb": 1024,  # peak of the whole lab
    "overhead_percent": 10,  # tracing + metrics, server CPU per request (loadtests/overhead.py)
}
ASYNC_DRAIN_LIMIT_S = 120  # after step 5, wait at most this long for the worker's backlog to drain

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
    """Samples the lab's memory (supervisord and all its descendants) and the load average every half second."""

    def __init__(self):
        import psutil

        self.psutil = psutil
        self.peak_rss = 0
        self.peak_pss = 0
        self.processes = 0
        self.loads: list[tuple[float, float]] = []  # (time.monotonic(), 1-minute load average)
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
            self.loads.append((time.monotonic(), os.getloadavg()[0]))
            rss, pss, count = self.sample()
            if rss > self.peak_rss:
                self.peak_rss, self.processes = rss, count
            self.peak_pss = max(self.peak_pss, pss)

    def load_range(self, start: float | None = None, end: float | None = None) -> list[float] | None:
        """[min, max] of the 1-minute load average sampled between ``start`` and ``end`` (monotonic)."""
        values = [v for t, v in self.loads if (start is None or t >= start) and (end is None or t <= end)]
        return [round(min(values), 2), round(max(values), 2)] if values else None

    def __enter__(self):
        self.loads.append((time.monotonic(), os.getloadavg()[0]))
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)
        self.loads.append((time.monotonic(), os.getloadavg()[0]))


class MachineMeter:
    """Where this machine's CPU went during the run: the lab, its databases, the bench, everything else.

    The bench's own share counts its children once they have ended (``os.times()`` adds the CPU of
    waited-for children): the load generators (wrk, Locust, py-spy) and the baseline servers of
    steps 1-2. What is left of the machine's busy time is other people's work, the noise the
    figures were measured in; steal is time the hypervisor took.
    """

    DATABASES = ("mariadbd", "mysqld", "redis-server")

    def __init__(self):
        import psutil

        self.psutil = psutil
        self.cores = os.cpu_count() or 1
        self.start = self.read()

    def read(self) -> dict:
        times = self.psutil.cpu_times()
        busy = sum(getattr(times, f, 0.0) for f in ("user", "nice", "system", "irq", "softirq"))
        busy -= getattr(times, "guest", 0.0) + getattr(times, "guest_nice", 0.0)  # already counted in user
        try:
            root = self.psutil.Process(supervisord_pid())
            lab = CpuMeter.seconds([root, *root.children(recursive=True)])
        except (self.psutil.Error, OSError, ValueError):
            lab = 0.0
        databases = CpuMeter.seconds(p for p in self.psutil.process_iter(["name"]) if p.info["name"] in self.DATABASES)
        own = os.times()
        return {
            "at": time.monotonic(),
            "busy": busy,
            "steal": getattr(times, "steal", 0.0),
            "lab": lab,
            "databases": databases,
            "bench": own.user + own.system + own.children_user + own.children_system,
        }

    def summary(self, end: dict | None = None) -> dict:
        """Shares of all the cores over the run (1.0 = every core busy all the time)."""
        end = end or self.read()
        capacity = self.cores * max(end["at"] - self.start["at"], 1e-6)
        delta = {k: end[k] - self.start[k] for k in end}
        others = delta["busy"] - delta["lab"] - delta["databases"] - delta["bench"]
        return {
            "busy_share": round(delta["busy"] / capacity, 3),
            "lab_share": round(delta["lab"] / capacity, 3),
            "databases_share": round(delta["databases"] / capacity, 3),
            "bench_share": round(delta["bench"] / capacity, 3),
            "others_share": round(max(others, 0.0) / capacity, 3),
            "steal_share": round(delta["steal"] / capacity, 3),
        }


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
    def seconds(processes) -> float:
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
        return self.seconds(self._tree()), self.seconds(self._mysql())

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


# The options of a command line that say how many requests or tasks a process serves at once.
CONCURRENCY_OPTIONS = ("--workers", "--threads", "--worker-class", "--pool", "--concurrency")


def concurrency_of(argv: list[str]) -> str:
    """``--workers 1 --threads 8 --worker-class gthread`` out of a gunicorn or Celery command line."""
    picked = []
    for i, arg in enumerate(argv):
        name, eq, value = arg.partition("=")
        if name in CONCURRENCY_OPTIONS:
            if not eq:
                value = argv[i + 1] if i + 1 < len(argv) else ""
            picked.append(f"{name} {value}")
    return " ".join(picked)


def lab_processes() -> dict[str, str]:
    """What each program under supervisor runs now, read from its command line: ``{program: options}``
    (gunicorn's workers and threads, the Celery worker's pool). From the lab's config when it is not running."""
    import psutil

    running = {}
    for name, info in supervisor.process_info(PATHS).items():
        try:
            argv = psutil.Process(info["pid"]).cmdline() if info.get("pid") else []
        except psutil.Error:
            argv = []
        if "gunicorn" in " ".join(argv[:2]) or "worker" in argv:
            running[name] = concurrency_of(argv)
    if not running:
        running = {s.short: concurrency_of(supervisor.GUNICORN_ARGS.split()) for s in config.APPS}
        running.update({w.short: concurrency_of(w.command.split()) for w in config.WORKERS if "--pool" in w.command})
    return {name: options for name, options in sorted(running.items()) if options}


def describe_processes(processes: dict[str, str]) -> str:
    """``every server runs gunicorn `...`; the Celery worker `...``` for the table's first line."""
    servers = {name: options for name, options in processes.items() if "--workers" in options}
    others = {name: options for name, options in processes.items() if name not in servers}
    by_options: dict[str, list[str]] = {}
    for name, options in servers.items():
        by_options.setdefault(options, []).append(name)
    if len(by_options) == 1:
        parts = [f"every server runs gunicorn `{next(iter(by_options))}`"]
    else:
        parts = [f"gunicorn `{options}` for {', '.join(names)}" for options, names in by_options.items()]
    parts += [f"the Celery {name} `{options}`" for name, options in others.items()]
    return "; ".join(parts)


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
                "--no-control-socket",  # its default path is shared by every gunicorn of the user
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


def staff_session() -> requests.Session:
    """A session logged in as the lab's staff account (who sees every customer's orders)."""
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
    return session


def restock(floor: int) -> None:
    """Bring every active product up to ``floor`` units, as the staff account (recorded as restocks).

    (loadtests/common.py does the same inside Locust; importing it here would
    import locust, which monkey-patches this process for gevent.)
    """
    session = staff_session()
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
        started = time.monotonic()
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
                return {
                    "step": step,
                    "what": what,
                    **figures,
                    **({"attempts": tries} if tries > 1 else {}),
                    "_window": (started, time.monotonic()),  # replaced by the load average's range in it
                }
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


class OrderCounter:
    """The lab's orders counted through order's API as staff, once a second: all of them, and those PENDING.

    An order that is no longer PENDING has reached its final status (CONFIRMED or CANCELLED; the
    simulated carrier may have moved a confirmed one on to SHIPPED since), so ``total - pending``
    counts the sagas finished, wherever they ran: in the request or in the Celery worker.
    """

    def __init__(self, session: requests.Session, interval: float = 1.0):
        self.session = session
        self.interval = interval
        self.samples: list[tuple[float, int, int]] = []  # (time.monotonic(), total, pending)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _count(self, **params) -> int:
        response = self.session.get(f"{URLS['order']}/api/orders/", params={"page_size": 1, **params}, timeout=10)
        response.raise_for_status()
        return int(response.json()["count"])

    def sample(self) -> tuple[float, int, int]:
        pending = self._count(status="PENDING")
        total = self._count()
        self.samples.append((time.monotonic(), total, pending))
        return self.samples[-1]

    def _run(self):
        while not self._stop.wait(self.interval):
            try:
                self.sample()
            except (requests.RequestException, ValueError, KeyError):
                continue  # one missed second; the rate is taken between the samples there are

    def __enter__(self):
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=15)

    def wait_drained(self, limit: float) -> tuple[float, int | None]:
        """Wait (at most ``limit`` s) until no more orders are PENDING than before the step: (seconds, left)."""
        started, before = time.monotonic(), self.samples[0][2]
        left = None
        while True:
            try:
                left = self.sample()[2] - before
            except (requests.RequestException, ValueError, KeyError):
                pass  # the last count read stands
            if (left is not None and left <= 0) or time.monotonic() - started >= limit:
                return round(time.monotonic() - started, 1), None if left is None else max(left, 0)
            time.sleep(2)


def completion_rates(samples: list[tuple[float, int, int]]) -> dict:
    """Orders accepted and finished per second while orders came in, from ``(time, total, pending)`` samples.

    The window is that of the load: from the first sample at which the count of orders had risen
    to the one before the last rise, so that it holds only seconds in which orders came in all
    along (with fewer than three rises, from the sample before the first rise to the last rise).
    """
    rises = [i for i in range(1, len(samples)) if samples[i][1] > samples[i - 1][1]]
    if not rises:
        return {}
    first, last = (rises[0], rises[-1] - 1) if len(rises) >= 3 else (rises[0] - 1, rises[-1])
    (t0, total0, pending0), (t1, total1, pending1) = samples[first], samples[last]
    span = t1 - t0
    if span <= 0:
        return {}
    return {
        "accepted_per_s_by_order": round((total1 - total0) / span, 1),
        "completed_per_s": round(((total1 - pending1) - (total0 - pending0)) / span, 1),
        "window_s": round(span, 1),
        "backlog_growth": (pending1 - pending0),
    }


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


REFUSED_AT_ONCE = "dependency_unavailable"  # order's 503 when a peer's breaker is open: the fail-fast answer


def order_row(result: dict, *, with_cpu: bool = True, name: str = "/api/orders/") -> dict:
    """The figures of POST /api/orders/ (and the lab's CPU per order: all requests of the run, warm-up included).

    ``name`` picks another row of the same endpoint, as the breaker-open step picks the refusals.
    """
    row = result["rows"].get(name) or {}
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


def async_checkout(api: LabApi, accounts: Path, *, previous_mode: str, seconds: int) -> dict:
    """Step 5: the async saga under load; the saga mode is put back to ``previous_mode`` even on failure.

    The users do not wait for their orders (``FOLLOW_ORDERS=false``): what they measure is the
    acceptance (202). The completions are order's own count of orders no longer PENDING, read once a
    second; afterwards the worker's backlog is given ``ASYNC_DRAIN_LIMIT_S`` to drain, so that it
    does not run into the next step.
    """
    counter = OrderCounter(staff_session())
    api.json("PUT", "order", "/_lab/saga/", json={"mode": "async"})
    try:
        with counter:
            # SAGA_MODE is left unset: the bench holds the switch, not the Locust run.
            result = flow(
                "async",
                users=FLOW_USERS,
                seconds=seconds,
                env={"ACCOUNTS_FILE": str(accounts), "FOLLOW_ORDERS": "false"},
            )
    finally:
        if previous_mode != "async":
            api.json("PUT", "order", "/_lab/saga/", json={"mode": previous_mode})
    rates = completion_rates(counter.samples)
    say(
        f"   accepted {rates.get('accepted_per_s_by_order', '?')}/s and finished {rates.get('completed_per_s', '?')}/s "
        f"(order's count); waiting up to {ASYNC_DRAIN_LIMIT_S} s for the worker's backlog ..."
    )
    drained_s, left = counter.wait_drained(ASYNC_DRAIN_LIMIT_S)
    return {
        **order_row(result, with_cpu=False),
        **rates,
        "drained_after_s": drained_s,
        "left_pending": left,
        "unit": "accepted/s",
        "generator": generator_flows(FLOW_USERS) + ", not waiting for the outcome",
        "run": result["run_dir"],
    }


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

    machine_cpu = MachineMeter()
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
                say(f"5. async checkout, {FLOW_USERS} users (saga mode async, was {mode}) ...")
                rows.append(
                    attempt(
                        5,
                        f"Async checkout: accepted (202) at {FLOW_USERS} users, and finished",
                        lambda: async_checkout(api, accounts, previous_mode=mode, seconds=flow_seconds),
                    )
                )
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
                    label = "breaker on (open): refused at once, 503" if breaker else "breaker off"
                    say(f"6. order creation with payment down, {label}, {PAYMENT_DOWN_USERS} users ...")

                    def payment_down(breaker=breaker):
                        set_resilience(lab_api(), breaker={"enabled": breaker}, reset_breakers=True)
                        env = {"ACCOUNTS_FILE": str(accounts), "FOLLOW_ORDERS": "false", "SAGA_MODE": "sync"}
                        if breaker:  # once open, the breaker refuses at once: that answer is what is measured
                            env["EXPECTED_REFUSALS"] = REFUSED_AT_ONCE
                        result = flow("payment-down", users=PAYMENT_DOWN_USERS, seconds=window, env=env)
                        name = f"/api/orders/ [refused: {REFUSED_AT_ONCE}]" if breaker else "/api/orders/"
                        return {
                            **order_row(result, name=name),
                            "unit": "refusals/s" if breaker else "orders/s",
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
    for row in rows:
        window = row.pop("_window", None)
        if window:
            row["load_average_range"] = memory.load_range(*window)

    machine = load.machine()
    machine["load_average_at_end"] = [round(v, 2) for v in machine.pop("load_average") or []]
    machine["load_average_at_start"] = quiet_before
    machine["load_average_range"] = memory.load_range()
    machine["cpu_shares"] = machine_cpu.summary()
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
        "lab_processes": lab_processes(),
        "lab_database": lab_database(),
        "baseline_database": database_note,
        "elapsed_s": round(elapsed, 1),
        "rows": rows,
        "lab_memory": lab_memory,
        "profiles": profiles,
        "profiled": bool(args.profile),
        "overhead": latest_overhead(),
    }
    out = RESULTS / f"{datetime.now().strftime('%Y-%m-%d')}.json"
    return finish(result, out, readme=not args.no_readme)


def finish(result: dict, out: Path, *, readme: bool) -> int:
    """Judge the targets, explain the misses, save the JSON, print the table (and put it in README.md)."""
    result["targets"] = judge(result["rows"], result["lab_memory"], result.get("overhead"))
    result["notes"] = explain(result)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    table = markdown(result)
    say()
    say(table)
    say()
    shown = out.relative_to(ROOT) if out.is_relative_to(ROOT) else out
    say(f"Results: {shown} ({result['elapsed_s']:.0f} s of measuring)")
    if readme:
        write_readme(table)
        say(f"Table written into {README.relative_to(ROOT)} between {MARK_START} and {MARK_END}.")
    return 0


def rerender(path: Path, *, readme: bool) -> int:
    """Judge, explain and render a saved result again (profiles re-read from their raw files): no measuring."""
    result = json.loads(path.read_text())
    result["overhead"] = latest_overhead() or result.get("overhead")  # the table shows the newest, with its date
    for by_service in result.get("profiles", {}).values():
        for service, profile in by_service.items():
            if profile.get("file") and Path(profile["file"]).exists():
                by_service[service] = summarize_profile(Path(profile["file"]), seconds=profile.get("seconds"))
    return finish(result, path, readme=readme)


# ------------------------------------------------------------------ verdicts


def latest_overhead() -> dict | None:
    """The newest result of ``loadtests/overhead.py`` judged by CPU per request, or None.

    Older files (best requests/s of each side) are skipped: their figure moved with the machine's load.
    """
    for path in sorted(RESULTS.glob("*-overhead.json"), reverse=True):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if data.get("overhead_percent") is not None:
            return {
                "file": str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path),
                "date": data.get("date"),
                "overhead_percent": data["overhead_percent"],
                "pairs_overhead_percent": data.get("pairs_overhead_percent") or [],
            }
    return None


def _row(rows, step, what=None):
    return next((r for r in rows if r["step"] == step and (what is None or what in r["what"])), None)


def _has(row: dict | None, *keys: str) -> bool:
    """The row was measured and has every one of ``keys``."""
    return bool(row) and not row.get("unavailable") and all(row.get(k) is not None for k in keys)


def _cpu(row: dict) -> float:
    return row["server_cpu_ms"] + row["mysql_cpu_ms"]


def _range(values) -> str:
    return f"{min(values):g}–{max(values):g}" if values else "-"


NOT_MEASURED = "not measured in this run"


def judge(rows: list[dict], memory: dict, overhead: dict | None = None) -> dict:
    """Each of issue 11's targets with its figure and ``met``: True or False, None where not measured.

    Every figure comes from this run's own rows (a ratio of two of its steps where the target is
    one), except the overhead of tracing and metrics, which ``loadtests/overhead.py`` measures on
    its own: the newest result of it is shown with its date.
    """
    targets = TARGETS
    verdicts: dict[str, dict] = {}

    def verdict(name: str, target: str, value: str | None = None, met: bool | None = None) -> None:
        verdicts[name] = {"target": target, "value": NOT_MEASURED if value is None else value, "met": met}

    drf, chassis, checkout, async_row = _row(rows, 2), _row(rows, 3), _row(rows, 4), _row(rows, 5)
    breaker = _row(rows, 6, "breaker on")
    cpu_keys = ("server_cpu_ms", "mysql_cpu_ms")

    target = (
        f"(4) servers + MySQL CPU per checkout <= {targets['checkout_cost_vs_drf']:g} x "
        "(2) the bare DRF list's per request"
    )
    if _has(drf, *cpu_keys) and _has(checkout, *cpu_keys) and _cpu(drf) > 0:
        ratio = _cpu(checkout) / _cpu(drf)
        verdict(
            "checkout_cost",
            target,
            f"{ratio:.1f} x ({checkout['server_cpu_ms']:.1f} + {checkout['mysql_cpu_ms']:.1f} ms per checkout, "
            f"{drf['server_cpu_ms']:.1f} + {drf['mysql_cpu_ms']:.1f} ms per DRF list request)",
            ratio <= targets["checkout_cost_vs_drf"],
        )
    else:
        verdict("checkout_cost", target)

    target = (
        f"(4) >= {targets['checkout_orders_per_s']:g} orders/s at {FLOW_USERS} users, "
        f"p99 <= {targets['checkout_p99_ms']:g} ms"
    )
    if _has(checkout, "rps", "p99_ms"):
        verdict(
            "checkout",
            target,
            f"{checkout['rps']:g} orders/s, p99 {checkout['p99_ms']:g} ms",
            checkout["rps"] >= targets["checkout_orders_per_s"] and checkout["p99_ms"] <= targets["checkout_p99_ms"],
        )
    else:
        verdict("checkout", target)

    target = (
        f"(5) async: accepted >= {targets['async_accepted_per_s']:g}/s, "
        f"finished >= {targets['async_completed_per_s']:g}/s"
    )
    if _has(async_row, "rps"):
        finished = async_row.get("completed_per_s")
        verdict(
            "async_checkout",
            target,
            f"accepted {async_row['rps']:g}/s, finished " + ("not counted" if finished is None else f"{finished:g}/s"),
            async_row["rps"] >= targets["async_accepted_per_s"]
            and finished is not None
            and finished >= targets["async_completed_per_s"],
        )
    else:
        verdict("async_checkout", target)

    target = f"(3) chassis catalog list >= {targets['chassis_vs_drf']:g} x (2) the bare DRF list, in req/s"
    if _has(drf, "rps") and _has(chassis, "rps") and drf["rps"] > 0:
        share = chassis["rps"] / drf["rps"]
        value = f"{share:.2f} ({chassis['rps']:g} vs {drf['rps']:g} req/s)"
        if _has(drf, *cpu_keys) and _has(chassis, *cpu_keys) and _cpu(chassis) > 0:
            # Throughput of two short wrk runs on a shared box moves with the neighbours; CPU per request less so.
            value += (
                f"; by CPU per request {_cpu(drf) / _cpu(chassis):.2f} "
                f"({_cpu(chassis):.1f} vs {_cpu(drf):.1f} ms servers + MySQL)"
            )
        verdict("chassis_vs_drf", target, value, share >= targets["chassis_vs_drf"])
    else:
        verdict("chassis_vs_drf", target)

    target = f"(6) payment down, breaker open: p99 <= {targets['breaker_open_p99_ms']:g} ms"
    if _has(breaker, "p99_ms"):
        verdict(
            "breaker_open", target, f"{breaker['p99_ms']:g} ms", breaker["p99_ms"] <= targets["breaker_open_p99_ms"]
        )
    else:
        verdict("breaker_open", target)

    target = f"whole lab <= {targets['lab_rss_mb']:g} MB RSS at the bench's peak"
    if memory and memory.get("peak_rss_mb"):
        verdict("lab_memory", target, f"{memory['peak_rss_mb']} MB", memory["peak_rss_mb"] <= targets["lab_rss_mb"])
    else:
        verdict("lab_memory", target)

    target = (
        f"tracing + metrics <= {targets['overhead_percent']:g} % of server CPU per request "
        "(loadtests/overhead.py, a run of its own)"
    )
    if overhead and overhead.get("overhead_percent") is not None:
        pairs = overhead.get("pairs_overhead_percent") or []
        verdict(
            "overhead",
            target,
            f"{overhead['overhead_percent']:+g} % on {overhead.get('date') or '?'}"
            + (f" (rounds {_range(pairs)} %)" if pairs else ""),
            overhead["overhead_percent"] <= targets["overhead_percent"],
        )
    else:
        verdict("overhead", target, "no result of loadtests/overhead.py by CPU per request yet")
    return verdicts


def spread(result: dict) -> str | None:
    """How noisy the run was: the load average's range, and who used the cores besides the lab."""
    machine = result["machine"]
    cores = machine.get("cpus") or 1
    parts = []
    whole = machine.get("load_average_range")
    if whole:
        steps = [
            f"{row['step']}: {_range(row['load_average_range'])}"
            for row in result["rows"]
            if row.get("load_average_range")
        ]
        parts.append(
            f"the 1-minute load average ranged {_range(whole)} on {cores} cores during the run"
            + (f" (by step, {'; '.join(steps)})" if steps else "")
        )
    shares = machine.get("cpu_shares")
    if shares:
        parts.append(
            f"of all the cores' time, the lab used {shares['lab_share']:.0%}, MySQL and Redis "
            f"{shares['databases_share']:.0%}, the bench (load generators, baseline servers) "
            f"{shares['bench_share']:.0%}, "
            f"other processes {shares['others_share']:.0%}"
            + (f", the hypervisor (steal) {shares['steal_share']:.0%}" if shares.get("steal_share") else "")
        )
    if not parts:
        return None
    return "Spread: " + "; ".join(parts) + "."


# The row of each verdict, and the profiles (--profile) that say where its time went.
VERDICT_ROWS = {
    "checkout_cost": ((4, None), ["4"]),
    "checkout": ((4, None), ["4"]),
    "async_checkout": ((5, None), []),
    "chassis_vs_drf": ((3, None), ["3"]),
    "breaker_open": ((6, "breaker on"), ["6-on"]),
}


def explain(result: dict) -> list[str]:
    """Why each missed target is missed: the CPU each request costs (a hard bound on this machine's cores)
    and, with --profile, where the threads serving requests spend their time; and how noisy the run was."""
    rows, verdicts, profiles = result["rows"], result["targets"], result.get("profiles", {})
    cores = result["machine"]["cpus"] or 1
    notes = []
    load_average = (result["machine"].get("load_average_at_start") or [0])[0]
    if load_average >= cores:
        notes.append(
            f"The machine was busy when the bench started (1-minute load average {load_average:.1f} on "
            f"{cores} cores, from work other than the bench): latencies are inflated by it."
        )
    profiled_steps: set[str] = set()
    for name, verdict in verdicts.items():
        if verdict["met"] is not False:
            continue
        if name == "lab_memory":
            memory = result["lab_memory"]
            notes.append(
                f"lab_memory: {memory['peak_rss_mb']} MB is the sum of the RSS of {memory['processes']} "
                f"processes (every gunicorn master and worker, the dashboard, the Celery worker, beat, "
                f"supervisord); processes share some pages, and the proportional sum (PSS) is "
                f"{memory['peak_pss_mb']} MB."
            )
            continue
        if name == "overhead":
            overhead = result.get("overhead") or {}
            notes.append(
                f"overhead: target missed ({verdict['value']}), measured by loadtests/overhead.py "
                f"({overhead.get('file', '?')}): the same inventory list with tracing and metrics on and off, "
                "rounds interleaved, server CPU per request compared round by round."
            )
            continue
        (step, what), profile_steps = VERDICT_ROWS.get(name, ((None, None), []))
        row = _row(rows, step, what) if step else None
        text = f"{name}: target missed ({verdict['value']})."
        if _has(row, "server_cpu_ms", "mysql_cpu_ms", "cpu_bound_per_s"):
            text += (
                f" Each request costs the lab's servers {row['server_cpu_ms']:.1f} ms of CPU and MySQL "
                f"{row['mysql_cpu_ms']:.1f} ms: on {cores} cores no more than {row['cpu_bound_per_s']:g}/s "
                "can be served, whatever the concurrency; beyond that requests queue, which is the latency seen."
            )
        if name == "chassis_vs_drf" and _has(_row(rows, 2), "server_cpu_ms"):
            text += f" The bare DRF list costs {_row(rows, 2)['server_cpu_ms']:.1f} ms."
        if name == "async_checkout" and row:
            sync = _row(rows, 4)
            if _has(sync, "server_cpu_ms", "mysql_cpu_ms", "cpu_bound_per_s"):
                text += (
                    f" The worker finishes each order with the saga of step 4, {_cpu(sync):.1f} ms of servers' "
                    f"and MySQL's CPU there: at most {sync['cpu_bound_per_s']:g}/s on {cores} cores, shared "
                    "with the acceptance of new orders."
                )
            if row.get("backlog_growth") is not None:
                text += f" The backlog grew by {row['backlog_growth']} orders while orders came in"
                left = row.get("left_pending")
                text += (
                    f" and drained in {row.get('drained_after_s')} s."
                    if left == 0
                    else f"; {left} were still pending {row.get('drained_after_s')} s after the step."
                )
        if name == "breaker_open" and _has(row, "rps", "p99_ms") and row["rps"] > 0:
            # A closed loop: each user sends its next request as soon as it has an answer, so the mean time
            # in the system is users / throughput (Little's law) however cheap one answer is on its own.
            wanted = PAYMENT_DOWN_USERS / (TARGETS["breaker_open_p99_ms"] / 1000)
            text += (
                f" The step is a closed loop of {PAYMENT_DOWN_USERS} users with no think time: by Little's law "
                f"their mean wait is {PAYMENT_DOWN_USERS} / {row['rps']:g} per s = "
                f"{1000 * PAYMENT_DOWN_USERS / row['rps']:.0f} ms; a p99 of {TARGETS['breaker_open_p99_ms']:g} ms "
                f"needs more than {wanted:.0f} refusals/s, about {1000 * cores / wanted:.1f} ms of all the "
                f"machine's CPU per refusal (servers, MySQL and the load generator together)."
            )
        if row and row.get("load_average_range"):
            text += f" Load average during the step: {_range(row['load_average_range'])}."
        notes.append(text)
        for profile_step in profile_steps:
            if profile_step in profiled_steps:
                continue
            profiled_steps.add(profile_step)
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
        if profile_steps and not result.get("profiled"):
            notes.append(f"{name}: make bench BENCH_ARGS=--profile adds py-spy evidence of where the time goes.")
    noise = spread(result)
    if noise:
        notes.append(noise)
    if cores <= 2:
        notes.append(
            f"This machine has {cores} cores for the lab's gunicorn workers, MySQL, Redis and the load "
            "generator together; every throughput figure here is bounded by that."
        )
    return notes


def _ms(value) -> str:
    return "-" if value is None else (f"{value:.1f}" if value < 100 else f"{value:.0f}")


def _throughput(row: dict) -> str:
    unit = row.get("unit", "req/s")
    text = f"{row['rps']:g} {unit}" if row.get("rps") is not None else "-"
    if row.get("completed_per_s") is not None:
        text += f"; finished {row['completed_per_s']:g}/s"
        if row.get("window_s"):
            accepted = row.get("accepted_per_s_by_order")
            text += (
                f" (order's count over {row['window_s']:g} s"
                + (f", which saw {accepted:g} accepted/s" if accepted is not None else "")
                + ")"
            )
        if row.get("left_pending") == 0 and row.get("drained_after_s") is not None:
            text += f", backlog drained {row['drained_after_s']:g} s after"
        elif row.get("left_pending"):
            text += f", {row['left_pending']} still pending {row.get('drained_after_s')} s after"
        if row.get("completion_p50_ms") is not None:
            text += f" (p50 {_ms(row['completion_p50_ms'])} ms)"
    return text


MET = {True: "yes", False: "no", None: "not measured"}


def markdown(result: dict) -> str:
    machine = result["machine"]
    processes = result.get("lab_processes")
    servers = describe_processes(processes) if processes else f"every server runs gunicorn `{result['gunicorn']}`"
    baseline = concurrency_of(result["gunicorn"].split())
    if processes and f"`{baseline}`" not in servers.split(";")[0]:
        servers += f"; the baselines of steps 1-2 gunicorn `{baseline}`"
    lines = [
        f"Measured {result['date'][:10]} on {machine['cpus']} cores, {machine['memory_mb'] / 1024:.1f} GB RAM, "
        f"Python {machine['python']}, 1-minute load average {machine['load_average_at_start'][0]} at the start "
        f"and {(machine.get('load_average_at_end') or ['?'])[0]} at the end (other work shares the machine), "
        f"lab database {result['lab_database']}; {servers}. Load generator and lab share the machine. "
        "Command: `make bench"
        + (
            " BENCH_ARGS=--profile` (py-spy --gil sampled one worker of each service under test"
            " during steps 3, 4 and 6)."
            if result["profiled"]
            else "`."
        ),
        "",
        "| # | measurement | throughput | p50 ms | p95 ms | p99 ms | errors "
        "| CPU ms per request: servers + MySQL (bound on this machine) | load average | load generator |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        if row.get("unavailable"):
            lines.append(f"| {row['step']} | {row['what']} | {row['unavailable']} | | | | | | | |")
            continue
        cpu = (
            f"{row['server_cpu_ms']:.1f} + {row['mysql_cpu_ms']:.1f} (≤ {row['cpu_bound_per_s']:g}/s)"
            if row.get("server_cpu_ms") is not None and row.get("cpu_bound_per_s")
            else "-"
        )
        load_range = _range(row["load_average_range"]) if row.get("load_average_range") else "-"
        lines.append(
            f"| {row['step']} | {row['what']} | {_throughput(row)} | {_ms(row.get('p50_ms'))} | "
            f"{_ms(row.get('p95_ms'))} | {_ms(row.get('p99_ms'))} | {row.get('errors', '-')} | {cpu} | "
            f"{load_range} | {row.get('generator', '')} |"
        )
    memory = result["lab_memory"]
    lines.append(
        f"| - | Whole lab, peak memory ({memory['processes']} processes) | "
        f"{memory['peak_rss_mb']} MB RSS ({memory['peak_pss_mb']} MB PSS) | | | | | | "
        f"{_range(machine['load_average_range']) if machine.get('load_average_range') else '-'} | "
        "sampled every 0.5 s |"
    )
    lines += ["", "| target | value | met |", "|---|---|---|"]
    for verdict in result["targets"].values():
        lines.append(f"| {verdict['target']} | {verdict['value']} | {MET[verdict['met']]} |")
    overhead = result.get("overhead")
    if overhead:
        lines += [
            "",
            f"Tracing and metrics: {overhead['overhead_percent']:+g} % server CPU per request "
            f"(`loadtests/overhead.py`, {overhead.get('date') or '?'}, {overhead.get('file', '')}; "
            "run on its own, not by make bench).",
        ]
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
