"""What the dashboard uses of labctl, and nothing else: its one door into labctl.

The dashboard declares labctl as a dependency (``dashboard/requirements.txt``,
its image installs ``/app/labctl``) and imports it only through this module,
so the boundary between the two is the list below:

- **processes**: supervisord's programs (:func:`supervisor_programs`) and a
  process fault on one of them (:func:`program_kill`);
- **load**: Locust runs of ``loadtests/`` (:func:`load_scenarios`,
  :func:`load_runs`, :func:`load_status`, :func:`load_start`, :func:`load_stop`);
- **scale**: each service's gunicorn workers (:func:`scale_rows`) and ``labctl
  scale`` on one of them (:func:`scale_service`);
- **audit**: :func:`run_audit` with a :class:`LabApi` (the lab admin's client);
- **guided labs**: the engine and its model, re-exported as they are.

Every function takes the lab's root (``LAB_ROOT``: where ``var/``,
``loadtests/`` and ``labs/`` are) rather than labctl's own path objects.
Failures are labctl's exceptions, named here: :class:`ProcessFaultError`,
:class:`LoadError`, :class:`LabApiError`, :class:`ScaleError`.
"""

from __future__ import annotations

from pathlib import Path

from . import config, load, process, scale, supervisor
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
from .scale import MAX_WORKERS as SCALE_MAX_WORKERS
from .scale import ScaleError

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
    "SCALE_MAX_WORKERS",
    "ScaleError",
    "lab_paths",
    "load_lab",
    "load_runs",
    "load_scenarios",
    "load_start",
    "load_status",
    "load_stop",
    "program_kill",
    "run_audit",
    "scale_rows",
    "scale_service",
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


# --- scale ----------------------------------------------------------------------------


def scale_rows(root: Path | str) -> list[dict] | None:
    """Each service's gunicorn workers: ``service``, ``workers`` (configured), ``default`` (bool), ``running``
    (worker processes counted from /proc) and ``threads``; None when supervisord does not run the lab."""
    paths = lab_paths(root)
    if not supervisor.is_running(paths):
        return None
    counts, running = scale.read_scale(paths), scale.running_workers(paths)
    return [
        {
            "service": s.short,
            "workers": counts.get(s.short, supervisor.DEFAULT_WORKERS),
            "default": s.short not in counts,
            "running": running.get(s.short),
            "threads": scale.THREADS_PER_WORKER,
        }
        for s in config.SERVICES
        if paths.service_present(s)
    ]


def scale_service(root: Path | str, service: str, workers: int | None, *, urls: dict[str, str]) -> list[str]:
    """``labctl scale service=workers`` (None: its default): supervisord restarts only that service, and this
    returns once it is healthy, with what labctl said. ``urls`` are the services the caller watches: they must be
    the ones supervisord runs. Raises :class:`ScaleError` in plain words otherwise, or when it is not healthy."""
    paths = lab_paths(root)
    if service not in config.SERVICE_BY_NAME:
        raise ScaleError(f"no service {service!r}: one of {', '.join(config.SERVICE_BY_NAME)}")
    if workers is not None and not scale.MIN_WORKERS <= workers <= scale.MAX_WORKERS:
        raise ScaleError(f"workers {workers}: from {scale.MIN_WORKERS} to {scale.MAX_WORKERS}")
    ours = config.SERVICE_BY_NAME[service].url
    if (urls.get(service) or "").rstrip("/") != ours or not supervisor.is_running(paths):
        raise ScaleError(
            f"supervisord does not run the {service} this dashboard watches ({urls.get(service)}, not {ours}): "
            "scale it the way it was started"
        )
    said: list[str] = []
    if scale.apply_scale(paths, {service: workers}, echo=said.append) != 0:
        raise ScaleError(f"{service} did not come back healthy: " + " ".join(said)[-300:])
    return said


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
