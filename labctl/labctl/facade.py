"""What the dashboard uses of labctl, and nothing else: its one door into labctl.

The dashboard declares labctl as a dependency (``dashboard/requirements.txt``,
its image installs ``/app/labctl``) and imports it only through this module,
so the boundary between the two is the list below:

- **processes**: supervisord's programs (:func:`supervisor_programs`) and a
  process fault on one of them (:func:`program_kill`);
- **load**: Locust runs of ``loadtests/`` (:func:`load_scenarios`,
  :func:`load_runs`, :func:`load_status`, :func:`load_start`, :func:`load_stop`);
- **audit**: :func:`run_audit` with a :class:`LabApi` (the lab admin's client);
- **guided labs**: the engine and its model, re-exported as they are.

Every function takes the lab's root (``LAB_ROOT``: where ``var/``,
``loadtests/`` and ``labs/`` are) rather than labctl's own path objects.
Failures are labctl's exceptions, named here: :class:`ProcessFaultError`,
:class:`LoadError`, :class:`LabApiError`.
"""

from __future__ import annotations

from pathlib import Path

from . import load, process, supervisor
from .audit import run_audit
from .config import BROWSE_PATHS, Paths
from .labapi import LabApi, LabApiError
from .labs.context import LabContext
from .labs.engine import CHECK_MARKER, QUESTIONS_MARKER, Engine, LabNotFound, load_lab
from .labs.model import CheckError, LabDef
from .load import MAX_USERS as LOAD_MAX_USERS
from .load import MAX_WORKERS as LOAD_MAX_WORKERS
from .load import LoadError
from .process import ProcessFaultError

__all__ = [
    "BROWSE_PATHS",
    "CHECK_MARKER",
    "QUESTIONS_MARKER",
    "CheckError",
    "Engine",
    "LabApi",
    "LabApiError",
    "LabContext",
    "LabDef",
    "LabNotFound",
    "LoadError",
    "LOAD_MAX_USERS",
    "LOAD_MAX_WORKERS",
    "Paths",
    "ProcessFaultError",
    "lab_paths",
    "load_lab",
    "load_runs",
    "load_scenarios",
    "load_start",
    "load_status",
    "load_stop",
    "program_kill",
    "run_audit",
    "supervisor_programs",
]


def lab_paths(root: Path | str) -> Paths:
    """labctl's run-time locations under ``root`` (``var/keys``, ``var/run``...)."""
    return Paths(Path(root))


# --- processes ------------------------------------------------------------------------


def supervisor_programs(root: Path | str) -> dict[str, dict] | None:
    """supervisord's programs by name (``statename``, ``group``, ``pid``...), or None when it is not running.

    Raises what the XML-RPC socket raises if supervisord goes away mid-call.
    """
    paths = lab_paths(root)
    if not supervisor.is_running(paths):
        return None
    return supervisor.process_info(paths)


def program_kill(root: Path | str, program: str) -> list[str]:
    """SIGKILL every process of ``program`` (supervisord's autorestart brings it back); one line per process.

    Raises :class:`ProcessFaultError` in plain words (no supervisord, no such program...).
    """
    return process.process_fault(lab_paths(root), program=program, action="kill")


# --- load -----------------------------------------------------------------------------


def load_scenarios() -> tuple[str, ...]:
    """The scenarios a run can start: the locustfiles of ``loadtests/``."""
    return tuple(load.SCENARIOS)


def load_runs(root: Path | str, *, limit: int = 20) -> list[dict]:
    """The newest runs first, each a dict with at least ``id``, ``scenario`` and ``state``."""
    return load.list_runs(lab_paths(root), limit=limit)


def load_status(root: Path | str, run_id: str, *, history_points: int = 240) -> dict:
    """One run's state, figures and history (at most ``history_points``); raises :class:`LoadError`."""
    return load.run_status(run_id, lab_paths(root), history_points=history_points)


def load_start(
    root: Path | str,
    *,
    scenario: str,
    users: int,
    spawn_rate: float,
    duration: str,
    workers: int,
    urls: dict[str, str],
    env: dict[str, str] | None = None,
) -> str:
    """Start a Locust run against the services at ``urls``, in a process of its own; returns its id.

    ``env`` is extra environment for the locustfile (the step load's ``STEPS``, ``THINK_TIME``...).
    Raises :class:`LoadError` when the run is refused (unknown scenario, the lab not healthy...).
    """
    spec = load.RunSpec(
        scenario=scenario,
        users=users,
        spawn_rate=spawn_rate,
        duration=duration,
        workers=workers,
        urls=dict(urls),
        env=dict(env or {}),
    )
    return load.start_run(spec, lab_paths(root))


def load_stop(root: Path | str, run_id: str) -> bool:
    """Ask a run to stop (Locust writes its report first); False when it is not running."""
    return load.stop_run(run_id, lab_paths(root))
