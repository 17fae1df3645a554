"""Starts the four services as real gunicorn processes, talking HTTP, on throwaway databases.

Each service gets its own database (``test_<schema>_it`` with its own MySQL
user when the lab runs on MySQL, else a SQLite file), its own Redis database,
free loopback ports and the peers' URLs, exactly as ``labctl up`` wires them.

The order service's Celery worker and beat are not started with the lab; a
test that needs them calls :meth:`Lab.start_worker` / :meth:`Lab.start_beat`
(and :meth:`Lab.kill_worker` to SIGKILL the worker). Their broker is a Redis
database of its own (the run's key prefix inside it), or without Redis the
embedded filesystem broker in a folder of this run.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import requests

ROOT = Path(__file__).resolve().parents[2]
SERVICES = {
    "user": ("user_service", "lab_users", 11),
    "order": ("order_service", "lab_orders", 12),
    "inventory": ("inventory_service", "lab_inventory", 13),
    "payment": ("payment_service", "lab_payments", 14),
}
BROKER_REDIS_DB = 15  # the order worker's broker, apart from the services' caches


def read_env_file(path: Path) -> dict[str, str]:
    values = {}
    if path.exists():
        for line in path.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                key, value = line.split("=", 1)
                values[key.strip()] = value.strip().strip('"').strip("'")
    return values


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _mysql_admin(parsed):
    import MySQLdb

    return MySQLdb.connect(
        host=parsed.hostname or "127.0.0.1",
        port=parsed.port or 3306,
        user=parsed.username or "root",
        passwd=parsed.password or "",
    )


def drop_database(url: str) -> None:
    parsed = urlparse(url)
    if parsed.scheme.startswith("mysql"):
        conn = _mysql_admin(parsed)
        try:
            conn.cursor().execute(f"DROP DATABASE IF EXISTS `{parsed.path.lstrip('/')}`")
        finally:
            conn.close()


def recreate_database(url: str, workdir: Path, service: str) -> str:
    """Return the DATABASE_URL of a fresh, empty integration database for ``service``."""
    parsed = urlparse(url)
    if parsed.scheme.startswith("mysql"):
        # Unique per run: two test runs on one machine must not drop each other's databases.
        name = f"test_{parsed.path.lstrip('/')}_it{os.getpid()}"
        conn = _mysql_admin(parsed)
        try:
            cursor = conn.cursor()
            cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
            cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        finally:
            conn.close()
        return parsed._replace(path=f"/{name}").geturl()
    path = workdir / f"{service}.sqlite3"
    path.unlink(missing_ok=True)
    return f"sqlite:///{path}"


@dataclass
class Lab:
    """The running services: base URLs by short name and how they were started."""

    urls: dict[str, str]
    database_urls: dict[str, str]
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)
    envs: dict[str, dict[str, str]] = field(default_factory=dict)  # each service's environment
    workdir: Path | None = None

    def stop(self) -> None:
        self.stop_celery()  # first, so that a task running now still finds its peers up
        for name, proc in self.processes.items():
            if proc.poll() is None:
                self.thaw(name)
                proc.send_signal(signal.SIGTERM)
        for proc in self.processes.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for url in self.database_urls.values():
            drop_database(url)

    def freeze(self, service: str) -> None:
        """Stop every process of ``service`` (master and workers) without killing them."""
        os.killpg(self.processes[service].pid, signal.SIGSTOP)

    def thaw(self, service: str) -> None:
        os.killpg(self.processes[service].pid, signal.SIGCONT)

    def service_workers(self, service: str) -> list[int]:
        """The pids of the gunicorn workers of ``service``: the children of its master."""
        return children_of(self.processes[service].pid)

    def kill_service_worker(self, service: str, *, timeout: float = 30) -> int:
        """SIGKILL one gunicorn worker of ``service`` (mid-request if busy) and wait for the master to replace it.

        Returns the killed pid. Raises RuntimeError when the service has no worker
        or the master does not bring the number of workers back within ``timeout``.
        """
        before = self.service_workers(service)
        if not before:
            raise RuntimeError(f"{service} has no gunicorn worker to kill")
        victim = before[0]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            now = self.service_workers(service)
            if victim not in now and len(now) >= len(before):
                return victim
            time.sleep(0.1)
        raise RuntimeError(
            f"{service}: worker {victim} not replaced in {timeout:.0f} s ({self.service_workers(service)})"
        )

    def log_tail(self, service: str, lines: int = 40) -> str:
        return "\n".join(self.logs[service].read_text(errors="replace").splitlines()[-lines:])

    # --- the order service's Celery worker and beat --------------------------------------

    def start_worker(self, *, env: dict[str, str] | None = None, concurrency: int = 4, timeout: float = 60) -> None:
        """Start the Celery worker (as ``labctl`` runs it) on the order service's environment, plus ``env``.

        Returns once the worker says it is ready. Its log (``worker.log``) keeps
        every run, so a restart after :meth:`kill_worker` appends to it.
        """
        if self.running("worker"):
            raise RuntimeError("the worker is already running")
        self._start_celery(
            "worker",
            [
                "worker",
                "--loglevel",
                "INFO",
                "--pool",
                "threads",
                "--concurrency",
                str(concurrency),
                "--hostname",
                f"worker-it{os.getpid()}@%h",
                "--queues",
                "saga,beat",
            ],
            env,
        )
        self._wait_for_log("worker", " ready.", timeout)

    def start_beat(self, *, env: dict[str, str] | None = None, timeout: float = 30) -> None:
        """Start Celery beat (the periodic jobs) on the order service's environment, plus ``env``."""
        if self.running("beat"):
            raise RuntimeError("beat is already running")
        schedule = self.workdir / f"celerybeat-schedule-{os.getpid()}"
        for stale in self.workdir.glob(f"{schedule.name}*"):
            stale.unlink()
        self._start_celery("beat", ["beat", "--loglevel", "INFO", "--schedule", str(schedule)], env)
        self._wait_for_log("beat", "beat: Starting", timeout)

    def kill_worker(self) -> None:
        """SIGKILL the worker and its pool processes at once, mid-task if they are busy: nothing runs its clean-up."""
        proc = self.processes["worker"]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=15)

    def stop_celery(self) -> None:
        """Stop beat and the worker (warm shutdown: running tasks finish first), then empty this run's broker."""
        started = False
        for name in ("beat", "worker"):
            proc = self.processes.get(name)
            started = started or proc is not None
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGCONT)
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        if started:
            self._drop_broker()

    def _drop_broker(self) -> None:
        """Remove what this run left in its broker (a killed worker's unacknowledged tasks included)."""
        env = self.envs.get("order", {})
        url = env.get("CELERY_BROKER_URL", "")
        if url.startswith("redis"):
            import redis

            connection = redis.Redis.from_url(url)
            keys = list(connection.scan_iter(match=f"{env.get('LAB_REDIS_PREFIX', 'lab')}:celery:*", count=500))
            if keys:
                connection.delete(*keys)
        elif env.get("CELERY_BROKER_FOLDER"):
            shutil.rmtree(env["CELERY_BROKER_FOLDER"], ignore_errors=True)

    def running(self, name: str) -> bool:
        proc = self.processes.get(name)
        return proc is not None and proc.poll() is None

    def _start_celery(self, name: str, args: list[str], env: dict[str, str] | None) -> None:
        log = self.workdir / f"{name}.log"
        self.logs[name] = log
        with log.open("ab") as out:
            out.write(f"\n----- {name} started by the test harness at {time.strftime('%H:%M:%S')} -----\n".encode())
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "config", *args],
                cwd=ROOT / SERVICES["order"][0],
                env={**self.envs["order"], **(env or {})},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _wait_for_log(self, name: str, marker: str, timeout: float) -> None:
        start = self.logs[name].stat().st_size if self.logs[name].exists() else 0
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.processes[name].poll() is not None:
                raise RuntimeError(f"{name} exited early:\n{self.log_tail(name)}")
            with self.logs[name].open("rb") as log:
                log.seek(max(0, start - 200))
                if marker.encode() in log.read():
                    return
            time.sleep(0.2)
        raise RuntimeError(f"{name} not ready in {timeout:.0f} s:\n{self.log_tail(name)}")


def children_of(pid: int) -> list[int]:
    """The pids of the live (not zombie) processes whose parent is ``pid``, read from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return sorted(found)


def start_django(lab: Lab, name: str, *, cwd: Path, env: dict, port: int, log: Path, setup, workers: int, threads: int):
    """Run ``manage.py`` for each command of ``setup``, then serve the project with gunicorn on ``port``."""
    for command in setup:
        subprocess.run(
            [sys.executable, "manage.py", *command],
            cwd=cwd,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=300,
        )
    lab.logs[name] = log
    lab.processes[name] = subprocess.Popen(
        [
            *(sys.executable, "-m", "gunicorn", "config.wsgi:application", "--bind", f"127.0.0.1:{port}"),
            *("--config", "python:chassis.gunicorn_conf", "--workers", str(workers), "--threads", str(threads)),
            *("--worker-class", "gthread", "--timeout", "60", "--graceful-timeout", "5"),
        ],
        cwd=cwd,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def start_lab(workdir: Path, *, workers: int = 2, threads: int = 4) -> Lab:
    workdir.mkdir(parents=True, exist_ok=True)
    ports = {name: free_port() for name in SERVICES}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    common = {
        "LAB_ROOT": str(ROOT),
        "DEBUG": "false",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        **{f"{name.upper()}_SERVICE_URL": url for name, url in urls.items()},
        # The whole suite logs in (and registers) far more often than a person would.
        "LOGIN_RATE_PER_IP": "100000/min",
        "LOGIN_RATE_PER_ACCOUNT": "100000/min",
        "LOGIN_RATE_PER_EMAIL": "100000/min",
        "REGISTER_RATE_PER_IP": "100000/min",
        # Keys of this run only, so parallel runs sharing Redis do not see each other's faults.
        "LAB_REDIS_PREFIX": f"it{os.getpid()}-{int(time.time())}",
    }
    user_redis = read_env_file(ROOT / "var" / "env" / "user.env").get("REDIS_URL", "")
    if user_redis:
        # Every service reads the revoked access tokens where this lab's user_service writes them.
        common["TOKEN_REVOCATION_REDIS_URL"] = urlparse(user_redis)._replace(path=f"/{SERVICES['user'][2]}").geturl()
    lab = Lab(urls=urls, database_urls={}, workdir=workdir)
    try:
        for name, (directory, _schema, redis_db) in SERVICES.items():
            file_env = read_env_file(ROOT / "var" / "env" / f"{name}.env")
            if os.environ.get("CI") == "true" and not file_env.get("DATABASE_URL", "").startswith("mysql"):
                raise RuntimeError(
                    f"CI needs MySQL but var/env/{name}.env has no MySQL DATABASE_URL: run `labctl setup`."
                )
            database_url = recreate_database(file_env.get("DATABASE_URL", "sqlite:///unused"), workdir, name)
            redis_url = ""
            if file_env.get("REDIS_URL"):
                redis_url = urlparse(file_env["REDIS_URL"])._replace(path=f"/{redis_db}").geturl()
            metrics_dir = workdir / "prometheus" / name
            shutil.rmtree(metrics_dir, ignore_errors=True)
            metrics_dir.mkdir(parents=True)
            parent_env = {
                k: v for k, v in os.environ.items() if k != "PYTEST_VERSION"
            }  # the services are not under test here
            env = {
                **parent_env,
                **file_env,
                **common,
                "DATABASE_URL": database_url,
                "REDIS_URL": redis_url,
                "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
            }
            if "OTEL_EXPORTER_OTLP_ENDPOINT" not in os.environ:
                env["OTEL_SDK_DISABLED"] = "true"  # no collector to send spans to
            if name == "order":
                env.update(_broker_env(redis_url, workdir))
            lab.database_urls[name] = database_url
            lab.envs[name] = env
            start_django(
                lab,
                name,
                cwd=ROOT / directory,
                env=env,
                port=ports[name],
                log=workdir / f"{name}.log",
                setup=(["migrate", "--noinput"], ["collectstatic", "--noinput"], ["seed_lab"]),
                workers=workers,
                threads=threads,
            )
        wait_healthy(lab)
    except BaseException:
        lab.stop()
        raise
    return lab


def _broker_env(redis_url: str, workdir: Path) -> dict[str, str]:
    """Where the order service and its worker exchange tasks in this run."""
    if redis_url:
        return {"CELERY_BROKER_URL": urlparse(redis_url)._replace(path=f"/{BROKER_REDIS_DB}").geturl()}
    folder = workdir / f"celery-{os.getpid()}"
    shutil.rmtree(folder, ignore_errors=True)
    return {"CELERY_BROKER_URL": "filesystem://localhost//", "CELERY_BROKER_FOLDER": str(folder)}


def wait_healthy(lab: Lab, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    pending = set(lab.urls)
    while pending and time.monotonic() < deadline:
        for name in sorted(pending):
            if lab.processes[name].poll() is not None:
                raise RuntimeError(f"{name} exited early:\n{lab.log_tail(name)}")
            try:
                if requests.get(f"{lab.urls[name]}/health/", timeout=2).status_code == 200:
                    pending.discard(name)
            except requests.RequestException:
                pass
        time.sleep(0.2)
    if pending:
        raise RuntimeError("not healthy in time: " + ", ".join(f"{n}:\n{lab.log_tail(n)}" for n in pending))
