"""Run the services under supervisord, the lab's process manager.

``write_config`` renders ``var/supervisord.conf`` (one program per service,
gunicorn on its port, logs in ``var/log/<short>.log``); ``ensure_running``
starts supervisord or, when it already runs, applies a changed config the way
``supervisorctl reread`` + ``update`` do. Process state is read over
supervisord's XML-RPC interface on its unix socket.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import socket
import subprocess
import time
import xmlrpc.client
from pathlib import Path

from .config import Paths, Service, Worker
from .provision import child_env

# One process per service, eight threads in it: the lab's whole default fits in 1 GB (each gunicorn worker is a
# Django process of about 90 MB), with as many request slots as two workers of four threads gave.
# ``labctl scale`` adds processes when someone wants to see what more of them buys on this machine.
DEFAULT_WORKERS = 1
THREADS_PER_WORKER = 8
GUNICORN_ARGS = (
    f"--workers {DEFAULT_WORKERS} --threads {THREADS_PER_WORKER} --worker-class gthread --timeout 30 --access-logfile -"
)


def gunicorn_workers(paths: Paths, service: Service) -> int:
    """How many gunicorn workers ``service`` runs: ``labctl scale`` overrides in var/scale.json, else 1."""
    from .scale import read_scale

    return read_scale(paths).get(service.short, DEFAULT_WORKERS)


def program_command(paths: Paths, service: Service) -> str:
    # gunicorn 27 opens a control socket, by default one path shared by every
    # gunicorn of the user: give each service its own (or none if too long).
    control = paths.run / f"gunicorn-{service.short}.ctl"
    control_arg = f"--control-socket {control}" if len(str(control)) < 100 else "--no-control-socket"
    args = GUNICORN_ARGS.replace(f"--workers {DEFAULT_WORKERS}", f"--workers {gunicorn_workers(paths, service)}", 1)
    return f"{paths.venv_bin / 'gunicorn'} config.wsgi:application --bind 127.0.0.1:{service.port} {args} {control_arg}"


def render_config(paths: Paths, services: list[Service], workers: list[Worker] | None = None) -> str:
    """The supervisord.conf text for ``services`` and ``workers``.

    ``workers`` defaults to the background workers whose project is present.
    """
    if workers is None:
        workers = [w for w in paths.present_workers() if w.app in services]
    sections = [
        f"""; Written by `labctl up`; rewritten on every run.
[unix_http_server]
file={paths.supervisor_socket}
chmod=0700

[supervisord]
logfile={paths.log / "supervisord.log"}
pidfile={paths.supervisord_pidfile}
childlogdir={paths.log}
directory={paths.root}
logfile_maxbytes=10MB
logfile_backups=2

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{paths.supervisor_socket}
"""
    ]
    for service in services:
        metrics_dir = paths.run / "prometheus" / service.short
        # The chassis' gunicorn hooks; the metrics dir is emptied at every
        # start, including supervisor's own restarts after a crash.
        gunicorn = f"{program_command(paths, service)} --config python:chassis.gunicorn_conf"
        command = f"/bin/sh -c 'rm -rf {metrics_dir} && mkdir -p {metrics_dir} && exec {gunicorn}'"
        sections.append(
            f"""[program:{service.short}]
command={command}
directory={paths.service_dir(service)}
environment={_environment(paths, service, metrics_dir)}
autostart=true
autorestart=true
startsecs=3
startretries=3
stopasgroup=true
killasgroup=true
stopwaitsecs=15
redirect_stderr=true
stdout_logfile={paths.log_file(service)}
stdout_logfile_maxbytes=10MB
stdout_logfile_backups=2
"""
        )
    for worker in workers:
        # The worker counts saga outcomes into its service's metrics dir, so the
        # service's /metrics shows them (the dir is never emptied from here).
        metrics_dir = paths.run / "prometheus" / worker.app.short
        command = worker.command.format(bin=paths.venv_bin, run=paths.run)
        command = "/bin/sh -c " + shlex.quote(f"mkdir -p {metrics_dir} && exec {command}")
        sections.append(
            f"""[program:{worker.short}]
command={command.replace("%", "%%")}
directory={paths.service_dir(worker.app)}
environment={_environment(paths, worker.app, metrics_dir)}
autostart=true
autorestart=true
startsecs=5
startretries=3
stopasgroup=true
killasgroup=true
; Celery finishes its current tasks on TERM; its tasks are acknowledged late,
; so one killed after this wait is redelivered, not lost.
stopwaitsecs=20
redirect_stderr=true
stdout_logfile={paths.log_file(worker)}
stdout_logfile_maxbytes=10MB
stdout_logfile_backups=2
"""
        )
    return "\n".join(sections)


def _environment(paths: Paths, service: Service, metrics_dir: Path) -> str:
    """The ``environment=`` value of a program that runs ``service``'s code."""
    variables = {
        "LAB_ROOT": paths.root,
        "PYTHONUNBUFFERED": "1",
        "LAB_ENV_DIGEST": _env_digest(paths, service),
        "PROMETHEUS_MULTIPROC_DIR": metrics_dir,
    }
    return ",".join(f'{name}="{value}"' for name, value in variables.items())


def _env_digest(paths: Paths, service: Service) -> str:
    """A digest of the service's env file. It is part of the program's config,
    so when the env file changes (say SQLite -> MySQL), ``update`` restarts the
    program instead of leaving it on the old settings."""
    env_file = paths.env_file(service)
    content = env_file.read_bytes() if env_file.exists() else b""
    return hashlib.sha256(content).hexdigest()[:16]


def write_config(paths: Paths, services: list[Service]) -> bool:
    """Write the config; return True if its content changed."""
    text = render_config(paths, services)
    conf = paths.supervisord_conf
    if conf.exists() and conf.read_text() == text:
        return False
    paths.run.mkdir(parents=True, exist_ok=True)
    paths.log.mkdir(parents=True, exist_ok=True)
    conf.write_text(text)
    return True


def rpc(paths: Paths):
    """An XML-RPC proxy to supervisord over its unix socket."""
    from supervisor.xmlrpc import SupervisorTransport

    transport = SupervisorTransport(None, None, f"unix://{paths.supervisor_socket}")
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)


def is_running(paths: Paths) -> bool:
    """True when supervisord answers on the lab's socket."""
    if not paths.supervisor_socket.exists():
        return False
    try:
        return rpc(paths).supervisor.getState()["statename"] == "RUNNING"
    except (OSError, xmlrpc.client.Error):
        return False


def ctl(paths: Paths, *args: str, check: bool = True, capture: bool = False):
    """Run ``supervisorctl -c var/supervisord.conf <args>``."""
    cmd = [str(paths.venv_bin / "supervisorctl"), "-c", str(paths.supervisord_conf), *args]
    return subprocess.run(
        cmd,
        check=check,
        text=True,
        stdout=subprocess.PIPE if capture else None,
        stderr=subprocess.STDOUT if capture else None,
    )


class PortInUse(RuntimeError):
    """A service's port is held by a process this lab did not start."""


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing listens on ``host:port`` (we could bind it)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def check_ports(paths: Paths, services: list[Service]) -> None:
    """Refuse to start when another program holds a service's port.

    Otherwise gunicorn would retry and fail in the background while the
    health check happily talks to the stranger on that port.
    """
    ours = {name for name, info in process_info(paths).items() if info["statename"] in ("RUNNING", "STARTING")}
    taken = [s for s in services if s.short not in ours and not port_free(s.port)]
    if taken:
        lines = [f"  port {s.port} ({s.directory})" for s in taken]
        raise PortInUse(
            "another program already listens on:\n" + "\n".join(lines) + "\n"
            "Stop it first (see who it is: ss -ltnp 'sport = :PORT'), then run make up again."
        )


def ensure_running(paths: Paths, services: list[Service], echo=print) -> None:
    """Start supervisord with the current config, or bring a running one up to date."""
    check_ports(paths, services)
    changed = write_config(paths, services)
    if not is_running(paths):
        echo("starting supervisord ...")
        subprocess.run(
            [str(paths.venv_bin / "supervisord"), "-c", str(paths.supervisord_conf)],
            check=True,
            cwd=paths.root,
            env=child_env(paths),
        )
        deadline = time.monotonic() + 15
        while not is_running(paths):
            if time.monotonic() > deadline:
                raise RuntimeError(f"supervisord did not start; see {paths.log / 'supervisord.log'}")
            time.sleep(0.2)
        return
    # reread + update even when the file looks unchanged: a run interrupted
    # between writing it and updating would otherwise never be applied.
    ctl(paths, "reread", capture=True)
    applied = ctl(paths, "update", capture=True).stdout.strip()
    if changed or applied:
        echo("supervisord already running; applied the changed config:")
        for line in applied.splitlines():
            echo(f"  {line}")
    else:
        echo("supervisord already running; config unchanged (labctl restart all makes the services load changed code)")
    # Anything stopped or given up on (FATAL) is started again; running ones are left alone.
    for info in process_info(paths).values():
        if info["statename"] in ("STOPPED", "EXITED", "FATAL", "BACKOFF"):
            echo(f"starting {info['name']} (was {info['statename']})")
            ctl(paths, "start", info["name"], check=False)


def process_info(paths: Paths) -> dict[str, dict]:
    """Supervisor's view of each program, by name; empty when supervisord is down."""
    if not is_running(paths):
        return {}
    return {p["name"]: p for p in rpc(paths).supervisor.getAllProcessInfo()}


def wait_running(paths: Paths, names: list[str], timeout: float = 30) -> dict[str, str]:
    """Wait until each program is RUNNING (past its startsecs) or has given up.

    Returns each program's last state by name; for a process without a port
    this is what "healthy" can mean.
    """
    deadline = time.monotonic() + timeout
    while True:
        states = {n: process_info(paths).get(n, {}).get("statename", "ABSENT") for n in names}
        settled = all(state in ("RUNNING", "FATAL", "ABSENT") for state in states.values())
        if settled or time.monotonic() > deadline:
            return states
        time.sleep(0.5)


def shutdown(paths: Paths, timeout: float = 30) -> bool:
    """Stop every program and supervisord itself; return False if it was not running."""
    if not is_running(paths):
        return False
    ctl(paths, "shutdown", check=False, capture=True)
    pid = _read_pid(paths.supervisord_pidfile)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_running(paths) and (pid is None or not _pid_alive(pid)):
            return True
        time.sleep(0.2)
    raise RuntimeError(f"supervisord (pid {pid}) still running after {timeout:.0f}s")


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
