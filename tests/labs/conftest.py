"""Fixtures of the guided labs' tests: one running lab (services, dashboard, worker, beat) and the lab engine.

The labs are run exactly as a student's would be: the four services as real
gunicorn processes on throwaway MySQL databases, the dashboard collecting
their traces, the order service's Celery worker and beat resuming paused
sagas. No supervisord runs here: the engine's context kills the worker with
the harness and starts it again itself. Each test gets an engine with a
fresh, in-memory progress.
"""

from __future__ import annotations

import os

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


def make_engine(lab, student: str = "ci-student") -> Engine:
    api = LabApi(Paths(ROOT), urls=lab.urls, timeout=10)
    api.session.headers["Connection"] = "close"  # no race with gunicorn's 2 s keepalive
    ctx = LabContext(
        api=api,
        urls=dict(lab.urls),
        staff_token=lambda: staff_token(lab),
        kill_worker=lambda: kill_worker(lab),
        start_worker=lambda: start_worker(lab),
    )
    return Engine(root=ROOT / "labs", ctx=ctx, store=MemoryStore(), student=student)


@pytest.fixture
def engine(lab):
    """An engine on the running lab with a progress of its own; the lab is put back to its defaults afterwards."""
    made = make_engine(lab)
    yield made
    made.ctx.restore_defaults()
