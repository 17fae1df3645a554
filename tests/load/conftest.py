"""Fixtures of the load tests: one lab of their own per session, and a way to run a scenario on it."""

from __future__ import annotations

import os

import pytest

from labctl import load
from labctl.config import Paths

from . import lab as load_lab_module

ROOT = load_lab_module.ROOT


@pytest.fixture(scope="session")
def load_lab():
    running = load_lab_module.start(ROOT / "var" / f"it-load-{os.getpid()}")
    yield running
    running.stop()
    for name in running.urls:
        errors = [line for line in running.log_tail(name, 5000).splitlines() if "Traceback" in line]
        assert not errors, f"{name} logged a traceback during the load tests; see {running.logs[name]}"


@pytest.fixture
def run_scenario(load_lab, tmp_path):
    """Run a scenario headless against the session's lab; returns (exit code, summary, run directory)."""

    def run(scenario: str, *, users: int = 4, seconds: int = 5, workers: int = 0, **env):
        spec = load.RunSpec(
            scenario=scenario,
            users=users,
            spawn_rate=users,
            duration=f"{seconds}s",
            workers=workers,
            env={k: str(v) for k, v in env.items()},
            urls=load_lab.urls,
        )
        run_dir = tmp_path / f"{scenario}-run"
        run_dir.mkdir()
        code, summary = load.run(spec, Paths(ROOT), run_dir=run_dir, stream=False)
        print((run_dir / "locust.log").read_text()[-3000:])
        print(load.render_summary(summary))
        return code, summary, run_dir

    return run


def rows(summary: dict) -> dict[str, dict]:
    """The summary's endpoints by name (FLOW entries included)."""
    return {e["name"]: e for e in summary["endpoints"] + summary["flows"]}
