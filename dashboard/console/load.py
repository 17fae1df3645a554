"""The Load page's data and actions: Locust runs through labctl, against the services this dashboard watches.

Runs are processes of their own (``labctl.facade.load_start``) that outlive
any request; their figures are files under ``var/loadtests/`` which
``load_status`` reads. Every function here answers something a page can
draw, whether a run died or its files are half written.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from labctl import facade

from . import tracing


def scenarios() -> tuple[str, ...]:
    return facade.load_scenarios()


def runs(*, limit: int = 20) -> list[dict]:
    try:
        return facade.load_runs(settings.LAB_ROOT, limit=limit)
    except Exception:  # noqa: BLE001 — a half-written run directory must not break the page
        return []


def running() -> dict | None:
    """The newest run still running, if any (the overview's load generator node)."""
    for run in runs(limit=5):
        if run.get("state") in ("starting", "running"):
            return run
    return None


def status(run_id: str) -> tuple[dict | None, str]:
    """(the run's status, "") or (None, why not)."""
    try:
        return facade.load_status(settings.LAB_ROOT, run_id, history_points=240), ""
    except facade.LoadError as exc:
        return None, str(exc)
    except Exception as exc:  # noqa: BLE001
        return None, f"could not read the run: {type(exc).__name__}: {exc}"


@dataclass
class StartRequest:
    scenario: str
    users: int
    spawn_rate: float
    duration: str
    workers: int


# What one run may ask for at most (labctl.load refuses more); the form's fields say so.
LIMITS = {"users": facade.LOAD_MAX_USERS, "workers": facade.LOAD_MAX_WORKERS}


def start_request_from_form(data) -> tuple[StartRequest | None, str]:
    try:
        request = StartRequest(
            scenario=(data.get("scenario") or "").strip(),
            users=int(data.get("users") or 10),
            spawn_rate=float(data.get("spawn_rate") or 5),
            duration=(data.get("duration") or "60s").strip(),
            workers=int(data.get("workers") or 0),
        )
    except ValueError:
        return None, "Users, spawn rate and workers are numbers."
    return request, ""


def start(request: StartRequest) -> tuple[str | None, str]:
    """(run id, "") or (None, why it did not start). The run targets the services this dashboard watches."""
    try:
        with tracing.untraced():  # its health check before starting is the dashboard's, not traffic
            return facade.load_start(
                settings.LAB_ROOT,
                scenario=request.scenario,
                users=request.users,
                spawn_rate=request.spawn_rate,
                duration=request.duration,
                workers=request.workers,
                urls=settings.CHASSIS["PEERS"],
            ), ""
    except facade.LoadError as exc:
        return None, str(exc)
    except Exception as exc:  # noqa: BLE001
        return None, f"the run could not start: {type(exc).__name__}: {exc}"


def stop(run_id: str) -> tuple[bool, str]:
    try:
        return (
            (True, "Asked the run to stop; Locust writes its report first.")
            if facade.load_stop(settings.LAB_ROOT, run_id)
            else (False, "The run is not running.")
        )
    except facade.LoadError as exc:
        return False, str(exc)


def chart_points(history: list[dict], key: str, *, width: int = 600, height: int = 120) -> dict:
    """An SVG polyline of ``key`` over the run, and its maximum (for the axis label)."""
    values = [p.get(key) for p in history if isinstance(p.get(key), (int, float))]
    if len(values) < 2:
        return {"points": "", "max": values[0] if values else None}
    top = max(max(values), 0.001)
    step = width / (len(values) - 1)
    points = " ".join(f"{i * step:.1f},{height - 4 - (v / top) * (height - 8):.1f}" for i, v in enumerate(values))
    return {"points": points, "max": top}
