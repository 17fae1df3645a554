"""Fixtures of the guided labs' tests: one running lab (services, dashboard, worker, beat) and the lab engine.

The labs are run exactly as a student's would be: the four services as real
gunicorn processes on throwaway MySQL databases, the dashboard collecting
their traces, the order service's Celery worker and beat resuming paused
sagas. No supervisord runs here: the engine's context kills the worker with
the harness and starts it again itself, and scales a service by restarting its
gunicorn with another ``--workers`` (what ``labctl scale`` has supervisord do).
Each test gets an engine with a fresh, in-memory progress.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests

from browser.lab import ROOT, start_lab_with_dashboard
from labctl.config import Paths
from labctl.labapi import LabApi
from labctl.labs.context import LabContext
from labctl.labs.engine import Engine
from labctl.labs.store import MemoryStore

ADMIN = ("admin@lab.local", os.environ.get("LAB_ADMIN_PASSWORD", "admin-lab-2024"))


@pytest.fixture(scope="session")
def lab():
    running = start_lab_with_dashboard(ROOT / "var" / f"labs-{os.getpid()}")
    try:
        running.start_worker()
        running.start_beat()
    except BaseException:
        running.stop()
        raise
    yield running
    running.stop()
    for name in running.logs:
        errors = [line for line in running.log_tail(name, 5000).splitlines() if "Traceback" in line]
        assert not errors, f"{name} logged a traceback during the labs; see {running.logs[name]}"


def staff_token(lab) -> str:
    response = requests.post(
        f"{lab.urls['user']}/api/auth/login/", json={"email": ADMIN[0], "password": ADMIN[1]}, timeout=10
    )
    assert response.status_code == 200, response.text
    return response.json()["access"]


def kill_worker(lab) -> str:
    """SIGKILL the worker, then start it again: what supervisord's autorestart does under make up."""
    lab.kill_worker()
    lab.start_worker()
    return "SIGKILL to the worker's process group; started again (as supervisord would)"


def start_worker(lab) -> str:
    if lab.running("worker"):
        return "the worker runs"
    lab.start_worker()
    return "worker started"


# Each service's worker count as the harness started it: what "the default" scales back to.
_STARTED_WITH: dict[str, int] = {}


def _command(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]


def service_workers(lab, service: str) -> int | None:
    """The gunicorn workers of ``service`` that run now: its master's live children."""
    return len(lab.service_workers(service)) if lab.running(service) else None


def scale_service(lab, service: str, workers: int | None) -> str:
    """Restart ``service``'s gunicorn with ``workers`` workers (None: as the harness started it), same command
    otherwise; back once it answers /health/ with that many workers, as ``labctl scale`` waits for supervisord."""
    old = lab.processes[service]
    command = _command(old.pid)
    at = command.index("--workers") + 1
    _STARTED_WITH.setdefault(service, int(command[at]))
    wanted = workers or _STARTED_WITH[service]
    if int(command[at]) == wanted:
        return f"{service} already runs {wanted} worker(s)"
    command[at] = str(wanted)
    cwd = os.readlink(f"/proc/{old.pid}/cwd")
    old.send_signal(signal.SIGTERM)
    old.wait(timeout=30)
    with lab.logs[service].open("ab") as log:
        log.write(f"\n----- restarted by the labs' tests with {wanted} worker(s) -----\n".encode())
        lab.processes[service] = subprocess.Popen(
            command,
            cwd=cwd,
            env=lab.envs[service],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if lab.processes[service].poll() is not None:
            raise RuntimeError(f"{service} exited after its restart:\n{lab.log_tail(service)}")
        try:
            healthy = requests.get(f"{lab.urls[service]}/health/", timeout=2).status_code == 200
        except requests.RequestException:
            healthy = False
        if healthy and service_workers(lab, service) == wanted:
            return f"{service} restarted with {wanted} worker(s)"
        time.sleep(0.2)
    raise RuntimeError(f"{service} not healthy with {wanted} workers in 60 s:\n{lab.log_tail(service)}")


def make_engine(lab, student: str = "ci-student") -> Engine:
    api = LabApi(Paths(ROOT), urls=lab.urls, timeout=10)
    api.session.headers["Connection"] = "close"  # no race with gunicorn's 2 s keepalive
    ctx = LabContext(
        api=api,
        urls=dict(lab.urls),
        staff_token=lambda: staff_token(lab),
        kill_worker=lambda: kill_worker(lab),
        start_worker=lambda: start_worker(lab),
        scale=lambda service, workers: scale_service(lab, service, workers),
        service_workers=lambda service: service_workers(lab, service),
    )
    return Engine(root=ROOT / "labs", ctx=ctx, store=MemoryStore(), student=student)


@pytest.fixture
def engine(lab):
    """An engine on the running lab with a progress of its own; the lab is put back to its defaults afterwards."""
    made = make_engine(lab)
    yield made
    made.ctx.restore_defaults()
    for service in list(_STARTED_WITH):  # a test that stopped half way leaves no service scaled
        scale_service(lab, service, None)
