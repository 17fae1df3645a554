"""``make up`` on a machine without the MariaDB client headers, from a copy of the checkout.

The copy gets a virtualenv of its own, built by ``make up`` itself, with
``pkg-config`` unable to find the MariaDB client library and system packages
forbidden, so the MySQL driver cannot be built: the lab must still come up, on
SQLite, and say why and what would give it MySQL. A second ``make up`` must
then find the lab running and restart nothing. The copy has its own lab name
and ports, so it runs beside the lab of this checkout without touching it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NAME, OFFSET = "bare", 300


def _copy_checkout(target: Path) -> None:
    """The files git knows of (tracked, or new and not ignored): what a fresh clone has, plus work in progress."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    for raw in filter(None, listed):
        source = ROOT / raw.decode()
        if source.is_file():
            destination = target / raw.decode()
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination)


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LAB_", "DJANGO_", "PYTEST"))}
    env.pop("CI", None)  # CI=true makes a missing driver fatal, on purpose; this is a student's laptop
    env.pop("VIRTUAL_ENV", None)
    env.update(
        # pkg-config looks only in an empty directory: the MariaDB client library "is not installed".
        PKG_CONFIG_LIBDIR=str(tmp_path / "no-pkgconfig"),
        PKG_CONFIG_PATH="",
        LAB_SYSTEM_PACKAGES="no",
        LAB_NAME=NAME,
        LAB_PORT_OFFSET=str(OFFSET),
    )
    (tmp_path / "no-pkgconfig").mkdir()
    return env


def _make(lab: Path, env: dict, target: str, timeout: int) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    proc = subprocess.run(
        ["make", target], cwd=lab, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    return proc, time.monotonic() - started


def _pids(lab: Path, env: dict) -> dict[str, int]:
    """The process id of every program the copy's supervisord runs."""
    script = (
        "import json; from labctl import config, supervisor; "
        "print(json.dumps({n: p['pid'] for n, p in supervisor.process_info(config.Paths(config.find_root())).items()}))"
    )
    out = subprocess.run(
        [str(lab / ".venv/bin/python"), "-c", script],
        cwd=lab,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(out.stdout)


@pytest.fixture
def bare_lab(tmp_path):
    lab = tmp_path / "lab"
    _copy_checkout(lab)
    env = _env(tmp_path)
    yield lab, env
    subprocess.run(["make", "down"], cwd=lab, env=env, capture_output=True, timeout=120, check=False)


def test_make_up_without_the_client_headers_runs_on_sqlite_and_a_second_up_restarts_nothing(bare_lab, record_property):
    """Ensure make up ends with a running lab on SQLite, saying why; a second make up restarts nothing."""
    lab, env = bare_lab
    first, first_seconds = _make(lab, env, "up", timeout=900)
    output = first.stdout + first.stderr
    assert first.returncode == 0, output[-6000:]
    # Why, and the one command that gives MySQL.
    assert "MySQL driver: not installed (the MariaDB client headers are missing" in output, output[-6000:]
    assert "sudo apt-get install libmariadb-dev pkg-config && make up" in output
    assert "SQLite files under var/db/" in output
    assert (lab / "var" / "mysql-driver.txt").exists()
    for port in range(8000 + OFFSET, 8005 + OFFSET):
        assert f"http://127.0.0.1:{port}/" in output
    assert output.count("healthy") >= 5, output[-3000:]
    assert f"lab name  {NAME}: ports {8000 + OFFSET}-{8004 + OFFSET}" in output
    before = _pids(lab, env)
    assert len(before) == 7 and all(before.values()), before  # five apps, the worker and beat

    second, second_seconds = _make(lab, env, "up", timeout=300)
    again = second.stdout + second.stderr
    assert second.returncode == 0, again[-6000:]
    assert again.count("unchanged since its last setup") == 5, again
    assert "supervisord already running; config unchanged" in again
    assert "pip install" not in again  # nothing to install, the driver's absence is remembered
    assert _pids(lab, env) == before
    record_property("first_make_up_seconds", round(first_seconds, 1))
    record_property("second_make_up_seconds", round(second_seconds, 1))
    print(f"first make up {first_seconds:.1f} s, second {second_seconds:.1f} s")
