"""``labctl lab`` against a real lab: PASS/FAIL lines and exit codes, on the same engine as the dashboard."""

from __future__ import annotations

import os
import shutil
import uuid

import pytest

from browser.lab import ROOT
from labctl import cli
from labctl.config import Paths


@pytest.fixture
def labctl(lab, capsys, monkeypatch):
    """Run ``labctl lab ...`` against the test lab as a student of its own; returns (exit code, output)."""
    student = f"cli-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    monkeypatch.setenv("LAB_STUDENT", student)
    urls = ",".join(f"{name}={url}" for name, url in lab.urls.items() if name != "dashboard")

    def run(*argv):
        action, *rest = argv
        code = cli.main(["lab", action, *rest, "--urls", urls, "--dashboard-url", lab.urls["dashboard"]])
        return code, capsys.readouterr().out

    yield run
    run("reset", "5")
    shutil.rmtree(Paths(ROOT).var / "labs" / "progress" / student, ignore_errors=True)


def test_labctl_lab_check_solve_reset(labctl):
    """Ensure a check fails (exit 1) before its step, solve does it (exit 0), and reset restores the lab."""
    code, out = labctl("reset", "5")
    assert code == 0 and out.startswith("PASS  0. Steady state"), out
    code, out = labctl("check", "5", "--step", "1")
    assert code == 1 and out.startswith("FAIL  1. Take payment down"), out
    assert "no outage fault yet" in out
    code, out = labctl("solve", "5", "--step", "outage")
    assert code == 0 and "PASS  1. Take payment down" in out and "observed: fault_id=" in out, out
    code, out = labctl("check", "5", "--step", "1")
    assert code == 0, out
    code, out = labctl("check", "5", "--step", "0")
    assert code == 1 and "payment is not healthy (503" in out, out
    code, out = labctl("list")
    assert code == 0 and "The circuit breaker" in out and "2/6 steps" in out, out
    code, out = labctl("report", "5")
    assert "### 1. Take payment down — passed" in out and "shown (Show me)" in out, out
    code, out = labctl("reset", "5")
    assert code == 0, out
    code, out = labctl("check", "5", "--step", "steady-state")
    assert code == 0, out


def test_labctl_lab_refuses_what_does_not_exist(labctl):
    """Ensure an unknown lab, step or question is exit 2 with the list of what exists."""
    code, out = labctl("check", "42")
    assert code == 2 and "no lab '42'" in out and "05-circuit-breaker" in out
    code, out = labctl("check", "5", "--step", "9")
    assert code == 2 and "steps 0 (steady state) to 5" in out
    code, out = labctl("answer", "5", "nope", "1")
    assert code == 2 and "no question 'nope'" in out
    code, out = labctl("answer", "5", "half-open", "purple")
    assert code == 1 and "Choose one of" in out
