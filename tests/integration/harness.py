"""Starts the four services as real gunicorn processes, talking HTTP, on throwaway databases.

Each service gets its own database (``test_<schema>_it`` with its own MySQL
user when the lab runs on MySQL, else a SQLite file), its own Redis database,
free loopback ports and the peers' URLs, exactly as ``labctl up`` wires them.
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

    return MySQLdb.connect(host=parsed.hostname or "127.0.0.1", port=parsed.port or 3306,
                           user=parsed.username or "root", passwd=parsed.password or "")


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

    def stop(self) -> None:
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

    def log_tail(self, service: str, lines: int = 40) -> str:
        return "\n".join(self.logs[service].read_text(errors="replace").splitlines()[-lines:])


def start_lab(workdir: Path, *, workers: int = 2, threads: int = 4) -> Lab:
    workdir.mkdir(parents=True, exist_ok=True)
    ports = {name: free_port() for name in SERVICES}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    common = {
        "LAB_ROOT": str(ROOT),
        "DEBUG": "false",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        **{f"{name.upper()}_SERVICE_URL": url for name, url in urls.items()},
        # The whole suite logs in far more often than a person would.
        "LOGIN_RATE_PER_IP": "100000/min",
        "LOGIN_RATE_PER_ACCOUNT": "100000/min",
        # Keys of this run only, so parallel runs sharing Redis do not see each other's faults.
        "LAB_REDIS_PREFIX": f"it{os.getpid()}-{int(time.time())}",
    }
    lab = Lab(urls=urls, database_urls={})
    try:
        for name, (directory, _schema, redis_db) in SERVICES.items():
            file_env = read_env_file(ROOT / "var" / "env" / f"{name}.env")
            if os.environ.get("CI") == "true" and not file_env.get("DATABASE_URL", "").startswith("mysql"):
                raise RuntimeError(f"CI needs MySQL but var/env/{name}.env has no MySQL DATABASE_URL: run `labctl setup`.")
            database_url = recreate_database(
                file_env.get("DATABASE_URL", "sqlite:///unused"), workdir, name
            )
            redis_url = ""
            if file_env.get("REDIS_URL"):
                redis_url = urlparse(file_env["REDIS_URL"])._replace(path=f"/{redis_db}").geturl()
            metrics_dir = workdir / "prometheus" / name
            shutil.rmtree(metrics_dir, ignore_errors=True)
            metrics_dir.mkdir(parents=True)
            parent_env = {k: v for k, v in os.environ.items() if k != "PYTEST_VERSION"}  # the services are not under test here
            env = {**parent_env, **file_env, **common, "DATABASE_URL": database_url, "REDIS_URL": redis_url,
                   "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
            if "OTEL_EXPORTER_OTLP_ENDPOINT" not in os.environ:
                env["OTEL_SDK_DISABLED"] = "true"  # no collector to send spans to
            lab.database_urls[name] = database_url
            cwd = ROOT / directory
            for command in (["migrate", "--noinput"], ["collectstatic", "--noinput"], ["seed_lab"]):
                subprocess.run([sys.executable, "manage.py", *command], cwd=cwd, env=env, check=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=300)
            log = workdir / f"{name}.log"
            lab.logs[name] = log
            lab.processes[name] = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "config.wsgi:application", "--bind", f"127.0.0.1:{ports[name]}",
                 "--config", "python:chassis.gunicorn_conf",
                 "--workers", str(workers), "--threads", str(threads), "--worker-class", "gthread",
                 "--timeout", "60", "--graceful-timeout", "5"],
                cwd=cwd, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
            )
        wait_healthy(lab)
    except BaseException:
        lab.stop()
        raise
    return lab


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
