"""Run the Locust scenarios of ``loadtests/`` against the lab and keep their results.

``labctl load --scenario checkout --users 50 --spawn-rate 10 --duration 60s [--workers 2]``
runs one scenario headless, in one process or as one master and N local
worker processes (all bound to 127.0.0.1), and writes under
``var/loadtests/<timestamp>-<scenario>/``:

* ``locust_stats.csv``, ``locust_stats_history.csv``, ``locust_failures.csv``,
  ``locust_exceptions.csv`` (Locust's ``--csv``) and ``report.html`` (``--html``);
* ``locust.log`` (and ``worker-<n>.log``): the processes' output;
* ``run.json``: the parameters, the processes and the state of the run;
* ``summary.json``: totals, requests/s, failure ratio, p50/p95/p99 per
  endpoint, the expected outcomes counted apart (declined cards, failures an
  injected fault explains), one entry per user level (step load), the machine
  and what its cores did during the run (``cpu``);
* ``cpu.csv``: the machine's CPU counters sampled every second (all cores, the
  load generator's processes, the database server's), from ``/proc``.

For the dashboard's Load page: :func:`start_run` (a background run),
:func:`stop_run`, :func:`run_status` (live figures from the stats history
Locust rewrites every second) and :func:`list_runs`.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from . import config
from .config import Paths
from .text import table

SCENARIOS = ("browse", "checkout", "mixed", "step_load", "chaos_timeline", "bulkhead")
FLOW = "FLOW"  # request_type of loadtests' end-to-end entries (not HTTP requests)
# Bounds of one run: far beyond what a laptop (or a workshop's shared lab) can drive, and
# never so large that one click ties the machine up for hours. One run at a time (start_run).
MAX_SECONDS = 3600
MAX_USERS = 1000
MAX_WORKERS = 8
# After the run time: Locust's own shutdown, the chaos scenario's settling and audit.
GRACE_SECONDS = 240
EXPECTED_TAGS = {"declined": "[declined card, expected]", "explained": "[explained: "}


class LoadError(Exception):
    """A run cannot start (bad parameters, lab down); the message says why."""


def parse_duration(text: str | int | float) -> int:
    """Seconds from ``90``, ``"90s"``, ``"2m"``, ``"1h30m"``; between 1 s and 4 h."""
    if isinstance(text, (int, float)):
        seconds = int(text)
    else:
        raw = str(text).strip().lower()
        if raw.isdigit():
            seconds = int(raw)
        else:
            parts = re.fullmatch(r"(?:(\d+)h)?\s*(?:(\d+)m)?\s*(?:(\d+)s)?", raw)
            if not raw or not parts or not any(parts.groups()):
                raise LoadError(f"duration {text!r}: use seconds or a form like 90s, 2m, 1h30m")
            hours, minutes, secs = (int(g or 0) for g in parts.groups())
            seconds = hours * 3600 + minutes * 60 + secs
    if not 1 <= seconds <= MAX_SECONDS:
        raise LoadError(f"duration {text!r}: between 1 s and {MAX_SECONDS // 3600} h")
    return seconds


@dataclass
class RunSpec:
    """What to run: a scenario, its load, and extra environment for the locustfile."""

    scenario: str
    users: int = 10
    spawn_rate: float = 5.0
    duration: str = "60s"
    workers: int = 0
    env: dict[str, str] = field(default_factory=dict)
    urls: dict[str, str] | None = None  # service base URLs; default: the lab's (or *_SERVICE_URL)

    def validate(self) -> None:
        if self.scenario not in SCENARIOS:
            raise LoadError(f"unknown scenario {self.scenario!r}: one of {', '.join(SCENARIOS)}")
        if not 1 <= self.users <= MAX_USERS:
            raise LoadError(f"--users {self.users}: between 1 and {MAX_USERS}")
        if not 0 < self.spawn_rate <= 1000:
            raise LoadError(f"--spawn-rate {self.spawn_rate}: above 0, at most 1000 per second")
        if not 0 <= self.workers <= MAX_WORKERS:
            raise LoadError(f"--workers {self.workers}: between 0 (one process) and {MAX_WORKERS}")
        parse_duration(self.duration)
        for key in self.env:
            if not re.fullmatch(r"[A-Z][A-Z0-9_]{0,63}", key):
                raise LoadError(f"environment name {key!r}: upper-case letters, digits and _")

    def target_urls(self) -> dict[str, str]:
        if self.urls:
            return dict(self.urls)
        return {s.short: os.environ.get(s.env_var, s.url).rstrip("/") for s in config.SERVICES}


# ------------------------------------------------------------------- places


def runs_dir(paths: Paths) -> Path:
    return paths.var / "loadtests"


def loadtests_dir(paths: Paths) -> Path:
    return paths.root / "loadtests"


def new_run_dir(paths: Paths, scenario: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = runs_dir(paths)
    base.mkdir(parents=True, exist_ok=True)
    for n in range(100):
        candidate = base / (f"{stamp}-{scenario}" + (f"-{n}" if n else ""))
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise LoadError(f"cannot make a run directory under {base}")


def _run_dir(paths: Paths, run_id: str) -> Path:
    if not re.fullmatch(r"[0-9]{8}-[0-9]{6}-[a-z_]+(-[0-9]+)?", run_id or ""):
        raise LoadError(f"not a run id: {run_id!r}")
    path = runs_dir(paths) / run_id
    if not path.is_dir():
        raise LoadError(f"no run {run_id} under {runs_dir(paths)}")
    return path


def _write_json(path: Path, data) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    tmp.replace(path)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


# ------------------------------------------------------------------ machine


def machine() -> dict:
    """Cores and memory of this machine, and the versions that matter for the figures."""
    memory_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_kb = int(line.split()[1])
    except OSError:
        pass
    try:
        from importlib.metadata import PackageNotFoundError, version

        locust_version = version("locust")
    except PackageNotFoundError:
        locust_version = None
    return {
        "cpus": os.cpu_count(),
        "memory_mb": memory_kb // 1024,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "python": sys.version.split()[0],
        "locust": locust_version,
    }


def lab_healthy(urls: dict[str, str], timeout: float = 3.0) -> dict[str, str]:
    """``{service: problem}`` for each service whose ``/health/`` does not answer 200; empty when all do."""
    import requests

    problems = {}
    for name, url in urls.items():
        try:
            response = requests.get(f"{url}/health/", timeout=timeout)
            if response.status_code != 200:
                problems[name] = f"HTTP {response.status_code}"
        except requests.RequestException as exc:
            problems[name] = f"no answer ({type(exc).__name__})"
    return problems


# ------------------------------------------------------------------ CPU

CPU_FILE = "cpu.csv"
CPU_COLUMNS = ("t", "total", "idle", "load_generator", "database")
DATABASE_PROGRAMS = ("mariadbd", "mysqld")


def _machine_jiffies() -> tuple[int, int] | None:
    """(all, idle) jiffies of every core since boot, from /proc/stat (None off Linux)."""
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    values = [int(v) for v in first[1:9]]  # user nice system idle iowait irq softirq steal
    return sum(values), values[3] + values[4]


def _process_jiffies(pid: int) -> int | None:
    """utime + stime of ``pid`` (None once it has gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[11]) + int(fields[12])


def database_pids() -> list[int]:
    """The pids of the MySQL/MariaDB servers on this machine (by command name)."""
    found = []
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() in DATABASE_PROGRAMS:
                found.append(int(comm.parent.name))
        except OSError:
            continue
    return found


class CpuSampler:
    """Every second, the machine's CPU counters into ``cpu.csv``: all cores, the load generator, the database.

    Counters are cumulative (jiffies); :func:`cpu_between` turns two rows into cores busy. A process
    that has ended keeps its last count, so the load generator's total does not drop at its end.
    """

    def __init__(self, path: Path, *, interval: float = 1.0):
        import threading

        self.path = path
        self.interval = interval
        self.load_pids: list[int] = []
        self.database = database_pids()
        self._last: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="cpu-sampler", daemon=True)

    def start(self) -> CpuSampler:
        with self.path.open("w", encoding="utf-8") as out:
            out.write(",".join(CPU_COLUMNS) + "\n")
        self.sample()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sample()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def _sum(self, pids: list[int]) -> int:
        total = 0
        for pid in pids:
            now = _process_jiffies(pid)
            if now is not None:
                self._last[pid] = max(now, self._last.get(pid, 0))
            total += self._last.get(pid, 0)
        return total

    def sample(self) -> None:
        machine = _machine_jiffies()
        if machine is None:
            return
        row = (f"{time.time():.3f}", *machine, self._sum(self.load_pids), self._sum(self.database))
        try:
            with self.path.open("a", encoding="utf-8") as out:
                out.write(",".join(str(v) for v in row) + "\n")
        except OSError:
            pass


def read_cpu(run_dir: Path) -> list[dict]:
    """The rows of a run's ``cpu.csv`` as numbers."""
    rows = []
    for row in _read_csv(run_dir / CPU_FILE):
        values = {key: _number(row.get(key)) for key in CPU_COLUMNS}
        if all(v is not None for v in values.values()):
            rows.append(values)
    return rows


def cpu_between(samples: list[dict], start: float, end: float) -> dict | None:
    """Cores busy between ``start`` and ``end`` (Unix times): the machine's, the load generator's, the database's.

    From the samples nearest the two ends; None when fewer than two fall in the window.
    """
    inside = [s for s in samples if start - 0.5 <= s["t"] <= end + 0.5]
    if len(inside) < 2:
        return None
    first, last = inside[0], inside[-1]
    total = last["total"] - first["total"]
    seconds = last["t"] - first["t"]
    if total <= 0 or seconds <= 0:
        return None
    cores = os.cpu_count() or 1

    def busy(column: str) -> float:
        return round(cores * (last[column] - first[column]) / total, 2)

    return {
        "cores": cores,
        "busy_cores": round(cores * (1 - (last["idle"] - first["idle"]) / total), 2),
        "load_generator_cores": busy("load_generator"),
        "database_cores": busy("database"),
        "seconds": round(seconds, 1),
    }


# -------------------------------------------------------------------- a run


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def locust_commands(paths: Paths, spec: RunSpec, run_dir: Path) -> tuple[list[str], list[list[str]]]:
    """The master's (or single process') command line, and the workers'."""
    locustfile = str(loadtests_dir(paths) / f"{spec.scenario}.py")
    base = [sys.executable, "-m", "locust", "-f", locustfile]
    main = base + [
        "--headless",
        "--users",
        str(spec.users),
        "--spawn-rate",
        f"{spec.spawn_rate:g}",
        "--run-time",
        f"{parse_duration(spec.duration)}s",
        "--csv",
        str(run_dir / "locust"),
        "--html",
        str(run_dir / "report.html"),
        "--stop-timeout",
        "0",
        "--loglevel",
        "INFO",
    ]
    workers: list[list[str]] = []
    if spec.workers:
        port = _free_port()
        main += [
            "--master",
            "--master-bind-host",
            "127.0.0.1",
            "--master-bind-port",
            str(port),
            "--expect-workers",
            str(spec.workers),
            "--expect-workers-max-wait",
            "60",
        ]
        workers = [
            base + ["--worker", "--master-host", "127.0.0.1", "--master-port", str(port), "--loglevel", "INFO"]
            for _ in range(spec.workers)
        ]
    return main, workers


def run_environment(paths: Paths, spec: RunSpec) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_VERSION",)}
    env.update({f"{name.upper()}_SERVICE_URL": url for name, url in spec.target_urls().items()})
    env.update(spec.env)
    env["LAB_ROOT"] = str(paths.root)
    env["PYTHONUNBUFFERED"] = "1"
    env["LOAD_WORKERS"] = str(spec.workers or 1)  # the scenarios share prepared accounts out across workers
    return env


def run(
    spec: RunSpec,
    paths: Paths | None = None,
    *,
    run_dir: Path | None = None,
    echo=print,
    stream: bool = True,
    check_health: bool = True,
) -> tuple[int, dict]:
    """Run one scenario to its end (bounded: run time + GRACE_SECONDS); return (exit code, summary).

    ``stream`` copies Locust's output to ``echo`` as it comes (the terminal);
    it always goes to ``locust.log`` in the run directory.
    """
    paths = paths or Paths(config.find_root())
    spec.validate()
    urls = spec.target_urls()
    if check_health:
        problems = lab_healthy(urls)
        if problems:
            raise LoadError(
                "the lab is not healthy: "
                + ", ".join(f"{n} {p}" for n, p in problems.items())
                + ". Start it with make up (make status tells more)."
            )
    run_dir = run_dir or new_run_dir(paths, spec.scenario)
    main_cmd, worker_cmds = locust_commands(paths, spec, run_dir)
    env = run_environment(paths, spec)
    env["CHAOS_AUDIT_FILE"] = str(run_dir / "audit.json")
    env["LOAD_STATS_FILE"] = str(run_dir / "final_stats.json")
    state = {
        "run_id": run_dir.name,
        "scenario": spec.scenario,
        "state": "running",
        "started_at": datetime.now(UTC).isoformat(),
        "spec": asdict(spec),
        "urls": urls,
        "command": main_cmd,
        "pid": None,
        "worker_pids": [],
        "runner_pid": os.getpid(),
    }
    _write_json(run_dir / "run.json", state)
    workers: list[subprocess.Popen] = []
    log = (run_dir / "locust.log").open("w", encoding="utf-8")
    started = time.monotonic()
    code = 1
    sampler = CpuSampler(run_dir / CPU_FILE).start()
    try:
        for n, cmd in enumerate(worker_cmds, 1):
            workers.append(
                subprocess.Popen(
                    cmd,
                    cwd=paths.root,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=(run_dir / f"worker-{n}.log").open("w"),
                    stderr=subprocess.STDOUT,
                )
            )
        master = subprocess.Popen(
            main_cmd,
            cwd=paths.root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        state.update(pid=master.pid, worker_pids=[w.pid for w in workers])
        sampler.load_pids = [master.pid, *state["worker_pids"]]
        _write_json(run_dir / "run.json", state)
        deadline = started + parse_duration(spec.duration) + GRACE_SECONDS + (60 if workers else 0)
        code = _pump(master, log, echo if stream else None, deadline)
    finally:
        log.close()
        for worker in workers:  # the master tells them to quit; these are the stragglers
            _end_process(worker, timeout=15)
        sampler.stop()
    elapsed = time.monotonic() - started
    summary = summarize(run_dir, spec=spec, exit_code=code, elapsed=elapsed)
    state.update(state="finished" if code == 0 else "failed", exit_code=code, finished_at=datetime.now(UTC).isoformat())
    if _read_json(run_dir / "run.json").get("stop_requested"):
        state.update(state="stopped", stop_requested=True)
    _write_json(run_dir / "run.json", state)
    return code, summary


def _pump(process: subprocess.Popen, log, echo, deadline: float) -> int:
    """Copy the process' output to the log (and echo) until it ends; stop it at the deadline."""
    import selectors

    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    interrupted = False
    while True:
        if time.monotonic() > deadline and not interrupted:
            log.write("labctl: the run went past its time limit; interrupting Locust\n")
            process.send_signal(signal.SIGINT)
            interrupted = True
            deadline = time.monotonic() + 30
        elif interrupted and time.monotonic() > deadline:
            process.kill()
        if selector.select(timeout=1.0):
            line = process.stdout.readline()
            if not line:
                break
            log.write(line)
            log.flush()
            if echo:
                try:
                    echo(line.rstrip("\n"))
                except OSError:  # the terminal went away (a closed pipe): the run goes on, logged
                    echo = None
        elif process.poll() is not None:
            break
    for line in process.stdout:  # whatever is left after the end
        log.write(line)
        if echo:
            try:
                echo(line.rstrip("\n"))
            except OSError:
                echo = None
    selector.close()
    return process.wait()


def _end_process(process: subprocess.Popen, timeout: float) -> None:
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# ------------------------------------------------------------------ summary


def _number(value, cast=float):
    try:
        return cast(value)
    except (TypeError, ValueError):
        return None


def _read_csv(path: Path) -> list[dict]:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))
    except OSError:
        return []


def _aggregated_row(run_dir: Path) -> dict | None:
    """Locust's "Aggregated" row of ``locust_stats.csv`` (as of its last rewrite), if there is one."""
    for row in _read_csv(run_dir / "locust_stats.csv"):
        if row.get("Name") == "Aggregated":
            return _endpoint(row)
    return None


def _endpoint(row: dict) -> dict:
    requests = _number(row.get("Request Count"), int) or 0
    failures = _number(row.get("Failure Count"), int) or 0
    return {
        "method": row.get("Type"),
        "name": row.get("Name"),
        "requests": requests,
        "failures": failures,
        "failure_ratio": round(failures / requests, 4) if requests else 0.0,
        "rps": round(_number(row.get("Requests/s")) or 0.0, 2),
        "avg_ms": round(_number(row.get("Average Response Time")) or 0.0, 1),
        "p50_ms": _number(row.get("50%")),
        "p95_ms": _number(row.get("95%")),
        "p99_ms": _number(row.get("99%")),
        "max_ms": _number(row.get("Max Response Time")),
    }


def steps_from_history(rows: list[dict], cpu: list[dict] | None = None) -> list[dict]:
    """One entry per user level held a while: its requests/s and windowed percentiles (medians).

    Requests/s and failures/s come from Locust's running totals (requests done while the level
    held, over the seconds it held), not from its "current" rate: that one is a sliding window
    that reads 0 for the first seconds of a run, so a short first step would show no traffic.
    ``mean_ms`` is the mean response time of the requests done while the level held (from the
    running total average), ``cpu`` what the cores did meanwhile (``cpu.csv``'s samples), with
    ``cpu_ms_per_request``: busy core-milliseconds of the whole machine per request.
    """
    levels: list[dict] = []
    previous: dict | None = None  # the last aggregated row before the current one
    for row in rows:
        if row.get("Name") != "Aggregated":
            continue
        users = _number(row.get("User Count"), int)
        if users:  # not before the first user, nor after the last one stopped
            if not levels or levels[-1]["users"] != users:
                levels.append({"users": users, "samples": [], "start": previous or row})
            levels[-1]["samples"].append(row)
        previous = row

    def median(values):
        values = sorted(v for v in values if v is not None)
        return values[len(values) // 2] if values else None

    def rate(level, column):
        start, end = level["start"], level["samples"][-1]
        seconds = (_number(end.get("Timestamp")) or 0) - (_number(start.get("Timestamp")) or 0)
        done = (_number(end.get(column)) or 0) - (_number(start.get(column)) or 0)
        return round(done / seconds, 2) if seconds > 0 else None

    def mean(level):
        start, end = level["start"], level["samples"][-1]
        count = (_number(end.get("Total Request Count")) or 0) - (_number(start.get("Total Request Count")) or 0)
        avg_end, avg_start = (
            _number(end.get("Total Average Response Time")),
            _number(start.get("Total Average Response Time")),
        )
        if count <= 0 or avg_end is None:
            return None
        spent = avg_end * (_number(end.get("Total Request Count")) or 0) - (avg_start or 0) * (
            _number(start.get("Total Request Count")) or 0
        )
        return round(spent / count, 1)

    def cores(level, rps):
        if not cpu:
            return None
        start, end = _number(level["start"].get("Timestamp")), _number(level["samples"][-1].get("Timestamp"))
        used = cpu_between(cpu, start or 0, end or 0)
        if used and rps:
            used["cpu_ms_per_request"] = round(1000 * used["busy_cores"] / rps, 1)
        return used

    steps = []
    for level in levels:
        # The first seconds of a level still carry the previous level's window: drop a third.
        samples = level["samples"][len(level["samples"]) // 3 :] or level["samples"]
        if len(level["samples"]) < 3:
            continue
        rps = rate(level, "Total Request Count")
        steps.append(
            {
                "users": level["users"],
                "seconds": len(level["samples"]),
                "rps": rps,
                "failures_per_s": rate(level, "Total Failure Count"),
                "mean_ms": mean(level),
                "p50_ms": median(_number(s.get("50%")) for s in samples),
                "p95_ms": median(_number(s.get("95%")) for s in samples),
                "p99_ms": median(_number(s.get("99%")) for s in samples),
                "cpu": cores(level, rps),
            }
        )
    return steps


def _run_cpu(samples: list[dict], requests: int) -> dict | None:
    """What the cores did over the whole run, and busy core-milliseconds per request."""
    if len(samples) < 2:
        return None
    used = cpu_between(samples, samples[0]["t"], samples[-1]["t"])
    if used and requests:
        used["cpu_ms_per_request"] = round(1000 * used["busy_cores"] * used["seconds"] / requests, 1)
    return used


def summarize(run_dir: Path, *, spec: RunSpec, exit_code: int | None, elapsed: float | None) -> dict:
    """Build (and write) ``summary.json`` from Locust's CSV files."""
    final = _read_json(run_dir / "final_stats.json")
    if final.get("entries") is not None:  # written by the locustfile at the very end: complete
        rows = [
            {
                **e,
                "failure_ratio": round(e["failures"] / e["requests"], 4) if e["requests"] else 0.0,
                "rps": round(e["rps"], 2),
            }
            for e in final["entries"]
        ]
        failures_rows = final.get("errors", [])
        aggregated = final.get("aggregated")
    else:  # the CSV Locust rewrites every second (a run that died)
        rows = [_endpoint(r) for r in _read_csv(run_dir / "locust_stats.csv") if r.get("Name") != "Aggregated"]
        aggregated = _aggregated_row(run_dir)
        failures_rows = [
            {
                "method": r.get("Method"),
                "name": r.get("Name"),
                "error": r.get("Error"),
                "occurrences": _number(r.get("Occurrences"), int),
            }
            for r in _read_csv(run_dir / "locust_failures.csv")
        ]
    endpoints = [r for r in rows if r["method"] != FLOW]
    flows = [r for r in rows if r["method"] == FLOW]
    total = sum(e["requests"] for e in endpoints)
    failed = sum(e["failures"] for e in endpoints)
    expected = {
        kind: sum(e["requests"] for e in endpoints if tag in (e["name"] or "")) for kind, tag in EXPECTED_TAGS.items()
    }
    failures = list(failures_rows)
    failures.sort(key=lambda f: -(f["occurrences"] or 0))
    cpu = read_cpu(run_dir)
    summary = {
        "run_id": run_dir.name,
        "scenario": spec.scenario,
        "finished_at": datetime.now(UTC).isoformat(),
        "exit_code": exit_code,
        "elapsed_s": round(elapsed, 1) if elapsed is not None else None,
        "parameters": {**asdict(spec), "duration_s": parse_duration(spec.duration), "urls": spec.target_urls()},
        "machine": machine(),
        "totals": {
            "requests": total,
            "failures": failed,
            "rps": round(sum(e["rps"] for e in endpoints), 2),
            "failure_ratio": round(failed / total, 4) if total else 0.0,
            "expected_outcomes": expected,
            "orders_finished": sum(f["requests"] for f in flows),
            "orders_per_s": round(sum(f["rps"] for f in flows), 2),
        },
        "endpoints": sorted(endpoints, key=lambda e: -e["requests"]),
        "flows": flows,
        # Locust's own "Aggregated" row: the endpoints and the flows together (the totals above leave the flows out).
        "aggregated": aggregated
        or {
            "requests": sum(r["requests"] for r in rows),
            "failures": sum(r["failures"] for r in rows),
            "rps": round(sum(r["rps"] for r in rows), 2),
        },
        "steps": steps_from_history(_read_csv(run_dir / "locust_stats_history.csv"), cpu),
        "cpu": _run_cpu(cpu, total),
        "failures": failures[:50],
        "files": {
            name: str(run_dir / name)
            for name in (
                "locust_stats.csv",
                "locust_stats_history.csv",
                "locust_failures.csv",
                "report.html",
                "locust.log",
            )
            if (run_dir / name).exists()
        },
    }
    audit = run_dir / "audit.json"
    if audit.exists():
        summary["audit"] = _read_json(audit)
    _write_json(run_dir / "summary.json", summary)
    return summary


def _fmt(value, digits=0) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def render_summary(summary: dict) -> str:
    """The summary as a table for the terminal."""
    headers = ["type", "name", "requests", "fails", "req/s", "p50 ms", "p95 ms", "p99 ms"]
    rows = [
        [
            e["method"],
            e["name"],
            e["requests"],
            e["failures"],
            _fmt(e["rps"], 1),
            _fmt(e["p50_ms"]),
            _fmt(e["p95_ms"]),
            _fmt(e["p99_ms"]),
        ]
        for e in summary["endpoints"] + summary["flows"]
    ]
    totals = summary["totals"]
    out = [table(headers, rows)]
    params = summary["parameters"]
    out.append("")
    out.append(
        f"{summary['scenario']}: {params['users']} users, spawn {params['spawn_rate']:g}/s, "
        f"{params['duration_s']} s, {params['workers'] or 'no'} worker process(es); "
        f"machine: {summary['machine']['cpus']} cores, {summary['machine']['memory_mb']} MB"
    )
    out.append(
        f"requests {totals['requests']}, failures {totals['failures']} "
        f"({totals['failure_ratio']:.2%}), {totals['rps']:.1f} req/s; "
        f"orders finished {totals['orders_finished']} ({totals['orders_per_s']:.1f}/s)"
    )
    expected = totals["expected_outcomes"]
    if any(expected.values()):
        out.append(
            f"expected outcomes (not failures): {expected['declined']} declined cards, "
            f"{expected['explained']} failures explained by an injected fault"
        )
    cpu = summary.get("cpu")
    if cpu:
        out.append(
            f"cpu: {cpu['busy_cores']:.2f} of {cpu['cores']} cores busy "
            f"(load generator {cpu['load_generator_cores']:.2f}, database {cpu['database_cores']:.2f}), "
            f"{_fmt(cpu.get('cpu_ms_per_request'), 1)} core-ms per request"
        )
    for step in summary["steps"] if len(summary["steps"]) > 1 else []:
        used = step.get("cpu") or {}
        out.append(
            f"  step {step['users']:>4} users: {_fmt(step['rps'], 1)} req/s, mean {_fmt(step.get('mean_ms'))} ms, "
            f"p95 {_fmt(step['p95_ms'])} ms, {_fmt(step['failures_per_s'], 1)} failures/s"
            + (f", {used['busy_cores']:.2f} cores busy" if used else "")
        )
    for failure in summary["failures"][:10]:
        out.append(f"  failure x{failure['occurrences']}: {failure['method']} {failure['name']}: {failure['error']}")
    audit = summary.get("audit")
    if audit:
        if audit.get("error"):
            out.append(f"audit: could not run ({audit['error']})")
        else:
            broken = [c["title"] for c in audit.get("checks", []) if not c.get("ok")]
            out.append("audit: all invariants hold" if audit.get("ok") else "audit: BROKEN: " + "; ".join(broken))
    return "\n".join(out)


# --------------------------------------------------- the dashboard's side


def start_run(spec: RunSpec, paths: Paths | None = None) -> str:
    """Start a run in the background (its own process group); return its run id."""
    paths = paths or Paths(config.find_root())
    spec.validate()
    live = [r for r in list_runs(paths, limit=20) if r.get("state") in ("starting", "running")]
    if live:
        raise LoadError(
            f"run {live[0]['run_id']} is still {live[0]['state']}: one run at a time, "
            "so that the figures of each are its own (stop it first)"
        )
    problems = lab_healthy(spec.target_urls())
    if problems:
        raise LoadError("the lab is not healthy: " + ", ".join(f"{n} {p}" for n, p in problems.items()))
    run_dir = new_run_dir(paths, spec.scenario)
    _write_json(run_dir / "spec.json", asdict(spec))
    _write_json(
        run_dir / "run.json",
        {
            "run_id": run_dir.name,
            "scenario": spec.scenario,
            "state": "starting",
            "started_at": datetime.now(UTC).isoformat(),
            "spec": asdict(spec),
        },
    )
    runner = subprocess.Popen(
        [sys.executable, "-m", "labctl.load", "_run", str(run_dir)],
        cwd=paths.root,
        env={**os.environ, "LAB_ROOT": str(paths.root)},
        stdin=subprocess.DEVNULL,
        stdout=(run_dir / "runner.log").open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    state = _read_json(run_dir / "run.json")
    state["runner_pid"] = runner.pid
    _write_json(run_dir / "run.json", state)
    return run_dir.name


def _pid_runs(pid: int | None, marker: str) -> bool:
    """True when ``pid`` is alive and its command line mentions ``marker`` (our run, not a reused pid)."""
    if not pid:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return marker in cmdline


def stop_run(run_id: str, paths: Paths | None = None) -> bool:
    """Ask a running run to stop (SIGINT to its Locust master: it writes its reports); False if not running."""
    paths = paths or Paths(config.find_root())
    run_dir = _run_dir(paths, run_id)
    state = _read_json(run_dir / "run.json")
    if not _pid_runs(state.get("pid"), str(run_dir)):
        return False
    state["stop_requested"] = True
    _write_json(run_dir / "run.json", state)
    os.kill(state["pid"], signal.SIGINT)
    return True


def _live_state(run_dir: Path, state: dict) -> str:
    if state.get("state") in ("starting", "running"):
        alive = _pid_runs(state.get("pid"), str(run_dir)) or _pid_runs(state.get("runner_pid"), str(run_dir))
        return state["state"] if alive else "died"
    return state.get("state", "unknown")


def run_status(run_id: str, paths: Paths | None = None, *, history_points: int = 300) -> dict:
    """A run's state, its parameters, its latest figures and recent history; the summary once finished."""
    paths = paths or Paths(config.find_root())
    run_dir = _run_dir(paths, run_id)
    state = _read_json(run_dir / "run.json")
    history = [r for r in _read_csv(run_dir / "locust_stats_history.csv") if r.get("Name") == "Aggregated"]
    points = [
        {
            "t": _number(r.get("Timestamp"), int),
            "users": _number(r.get("User Count"), int),
            "rps": _number(r.get("Requests/s")),
            "failures_per_s": _number(r.get("Failures/s")),
            "p50_ms": _number(r.get("50%")),
            "p95_ms": _number(r.get("95%")),
            "p99_ms": _number(r.get("99%")),
            "requests": _number(r.get("Total Request Count"), int),
            "failures": _number(r.get("Total Failure Count"), int),
        }
        for r in history[-history_points:]
    ]
    status = {
        "run_id": run_id,
        "scenario": state.get("scenario"),
        "state": _live_state(run_dir, state),
        "started_at": state.get("started_at"),
        "finished_at": state.get("finished_at"),
        "exit_code": state.get("exit_code"),
        "parameters": state.get("spec"),
        "current": points[-1] if points else None,
        "history": points,
        "endpoints": [_endpoint(r) for r in _read_csv(run_dir / "locust_stats.csv") if r.get("Name") != "Aggregated"],
        "aggregated": _aggregated_row(run_dir),
        "report": str(run_dir / "report.html") if (run_dir / "report.html").exists() else None,
    }
    if (run_dir / "summary.json").exists():
        status["summary"] = _read_json(run_dir / "summary.json")
    return status


def list_runs(paths: Paths | None = None, *, limit: int = 100) -> list[dict]:
    """The runs under ``var/loadtests/``, newest first, with their totals when finished."""
    paths = paths or Paths(config.find_root())
    base = runs_dir(paths)
    if not base.is_dir():
        return []
    out = []
    for run_dir in sorted((p for p in base.iterdir() if p.is_dir()), reverse=True)[:limit]:
        state = _read_json(run_dir / "run.json")
        if not state:
            continue
        summary = _read_json(run_dir / "summary.json")
        out.append(
            {
                "run_id": run_dir.name,
                "scenario": state.get("scenario"),
                "state": _live_state(run_dir, state),
                "started_at": state.get("started_at"),
                "parameters": state.get("spec"),
                "totals": summary.get("totals"),
            }
        )
    return out


# ---------------------------------------------------------------- the command


def add_arguments(parser) -> None:
    """The options of ``labctl load``."""
    parser.add_argument("--scenario", choices=SCENARIOS, help="the locustfile of loadtests/ to run")
    parser.add_argument("--users", type=int, default=10, help="simulated users (default 10; step_load: the last step)")
    parser.add_argument(
        "--spawn-rate", type=float, default=None, help="users started per second (default: users/5, at least 1)"
    )
    parser.add_argument("--duration", default="60s", help="run time: 90, 90s, 2m, 1h (default 60s)")
    parser.add_argument(
        "--workers", type=int, default=0, help="Locust worker processes under one master (default 0: a single process)"
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="environment for the scenario, e.g. SAGA_MODE=async, DECLINE_SHARE=0.1 (repeatable)",
    )
    parser.add_argument("--list", action="store_true", help="list the recorded runs and exit")
    parser.add_argument("--status", metavar="RUN_ID", help="print one run's state and figures (JSON) and exit")
    parser.add_argument("--stop", metavar="RUN_ID", help="stop a background run and exit")


def cmd_load(paths: Paths, args) -> int:
    """``labctl load``: run a scenario in the foreground, or look at recorded runs."""
    try:
        if args.list:
            runs = list_runs(paths)
            for item in runs:
                totals = item.get("totals") or {}
                figures = (
                    (
                        f"{totals.get('requests', 0)} requests, {totals.get('rps', 0)} req/s, "
                        f"{totals.get('failure_ratio', 0):.2%} failed"
                    )
                    if totals
                    else ""
                )
                print(f"{item['run_id']:<40} {item['state']:<9} {figures}")
            if not runs:
                print(f"No run yet under {runs_dir(paths)}.")
            return 0
        if args.status:
            print(json.dumps(run_status(args.status, paths), indent=2, default=str))
            return 0
        if args.stop:
            stopped = stop_run(args.stop, paths)
            print(f"{args.stop}: " + ("stopping (Locust writes its reports first)" if stopped else "not running"))
            return 0 if stopped else 1
        if not args.scenario:
            print("labctl load: say which --scenario to run (" + ", ".join(SCENARIOS) + ")")
            return 2
        env = {}
        for item in args.env:
            name, sep, value = item.partition("=")
            if not sep:
                raise LoadError(f"--env {item!r}: write NAME=VALUE")
            env[name] = value
        spec = RunSpec(
            scenario=args.scenario,
            users=args.users,
            spawn_rate=args.spawn_rate or max(1.0, args.users / 5),
            duration=args.duration,
            workers=args.workers,
            env=env,
        )
        code, summary = run(spec, paths)
    except LoadError as exc:
        print(f"labctl load: {exc}")
        return 1
    print()
    print(render_summary(summary))
    print()
    print(f"Results in {runs_dir(paths) / summary['run_id']}/ (summary.json, report.html, locust_*.csv)")
    return code


def _background_main(run_dir: Path) -> int:
    """Entry point of a background run started by :func:`start_run`."""
    spec = RunSpec(**_read_json(run_dir / "spec.json"))
    paths = Paths(config.find_root())
    try:
        code, _summary = run(spec, paths, run_dir=run_dir, stream=False, check_health=False)
    except Exception as exc:
        state = _read_json(run_dir / "run.json")
        state.update(state="failed", error=str(exc), finished_at=datetime.now(UTC).isoformat())
        _write_json(run_dir / "run.json", state)
        raise
    return code


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "_run":
        sys.exit(_background_main(Path(sys.argv[2])))
    sys.exit("usage: labctl load ... (python -m labctl.load _run <run dir> is for start_run)")
