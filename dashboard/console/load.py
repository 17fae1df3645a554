"""The Load page's data and actions: Locust runs through labctl, against the services this dashboard watches.

Runs are processes of their own (``labctl.facade.load_start``) that outlive
any request; their figures are files under ``var/loadtests/`` which
``load_status`` reads. Every function here answers something a page can
draw, whether a run died or its files are half written.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field

from django.conf import settings

from labctl import facade

from . import links, tracing


def scenarios() -> tuple[str, ...]:
    return facade.load_scenarios()


def scenario_descriptions() -> list[dict]:
    """Each scenario with what it does, from its locustfile's docstring (so the page says what the code does).

    ``summary`` is the docstring's first line, ``detail`` its first plain paragraph after it
    (not a table, a list's heading or the ``Usage:`` lines); both "" when the file cannot be read.
    """
    directory = links.loadtests_dir()
    out = []
    for name in scenarios():
        summary = detail = ""
        try:
            doc = ast.get_docstring(ast.parse((directory / f"{name}.py").read_text(encoding="utf-8"))) or ""
        except (OSError, SyntaxError, TypeError, ValueError):
            doc = ""
        # The docstrings are reStructuredText: ``NAME`` reads as NAME on the page.
        paragraphs = [re.sub(r"``(.+?)``", r"\1", " ".join(p.split())) for p in re.split(r"\n\s*\n", doc) if p.strip()]
        if paragraphs:
            summary = paragraphs[0]
            detail = next(
                (
                    p
                    for p in paragraphs[1:]
                    if not p.endswith(":") and "====" not in p and not p.startswith(("Usage:", "Environment:"))
                ),
                "",
            )
        out.append({"name": name, "summary": summary, "detail": detail})
    return out


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
    env: dict[str, str] = field(default_factory=dict)


# What one run may ask for at most (labctl.load refuses more); the form's fields say so.
LIMITS = {"users": facade.LOAD_MAX_USERS, "workers": facade.LOAD_MAX_WORKERS}
# The step load's own settings (loadtests/step_load.py reads them from its environment); blank: its defaults.
STEP_USERS = ("browse", "mixed", "checkout")
MAX_STEPS = 20
THINK_TIME = re.compile(r"\d{1,3}(\.\d{1,2})?(-\d{1,3}(\.\d{1,2})?)?")


def _step_env(data, scenario: str) -> tuple[dict[str, str], str]:
    """The environment the form's step fields ask for, or ({}, why not). Think time applies to every scenario."""
    env: dict[str, str] = {}
    think = (data.get("think_time") or "").strip()
    if think:
        if not THINK_TIME.fullmatch(think):
            return {}, f"Think time {think!r}: seconds, like 1 or 0.5-2."
        env["THINK_TIME"] = think
    if scenario != "step_load":
        return env, ""
    for field_name, name, top in (("steps", "STEPS", MAX_STEPS), ("step_seconds", "STEP_SECONDS", 600)):
        raw = (data.get(field_name) or "").strip()
        if raw:
            if not raw.isdigit() or not 1 <= int(raw) <= top:
                return {}, f"{field_name.replace('_', ' ').capitalize()} {raw!r}: a whole number from 1 to {top}."
            env[name] = raw
    user = (data.get("step_user") or "").strip()
    if user:
        if user not in STEP_USERS:
            return {}, f"Step users {user!r}: one of {', '.join(STEP_USERS)}."
        env["STEP_USER"] = user
    return env, ""


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
    request.env, error = _step_env(data, request.scenario)
    if error:
        return None, error
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
                env=request.env,
            ), ""
    except facade.LoadError as exc:
        return None, str(exc)
    except Exception as exc:  # noqa: BLE001
        return None, f"the run could not start: {type(exc).__name__}: {exc}"


def scale_rows() -> list[dict] | None:
    """Each service's gunicorn workers under supervisord (None when it does not run the lab)."""
    try:
        return facade.scale_rows(settings.LAB_ROOT)
    except Exception:  # noqa: BLE001 — a broken var/scale.json or a socket error: the panel says so
        return None


def scale(data) -> tuple[bool, str]:
    """``labctl scale SERVICE=WORKERS`` from the Load page's form: (done, what happened or why not)."""
    service = (data.get("service") or "").strip()
    raw = (data.get("workers") or "").strip().lower()
    if raw in ("", "default"):
        workers = None
    elif raw.isdigit():
        workers = int(raw)
    else:
        return False, f"Workers {raw!r}: a whole number from 1 to {facade.SCALE_MAX_WORKERS}, or default."
    try:
        with tracing.untraced():
            said = facade.scale_service(settings.LAB_ROOT, service, workers, urls=settings.CHASSIS["PEERS"])
    except facade.ScaleError as exc:
        return False, str(exc)
    except Exception as exc:  # noqa: BLE001 — supervisord gone mid-call...
        return False, f"could not scale {service}: {type(exc).__name__}: {exc}"
    return True, next((line for line in said if line.startswith("restarting")), said[0] if said else "Done.")


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


# A rate from Locust's first second is one request over a sliding window that has barely started
# (46 req/s from one request): none is shown before this much of the run is in.
RATE_AFTER_SECONDS = 5
RATE_AFTER_REQUESTS = 10


def measured(history: list[dict]) -> list[dict]:
    """The points of ``history`` from which on its rates mean something (see ``RATE_AFTER_*``)."""
    first = next((p.get("t") for p in history if isinstance(p.get("t"), int)), None)
    return [
        p
        for p in history
        if first is not None
        and isinstance(p.get("t"), int)
        and p["t"] - first >= RATE_AFTER_SECONDS
        and (p.get("requests") or 0) >= RATE_AFTER_REQUESTS
    ]


def endpoint_table(status: dict) -> dict:
    """The endpoint rows (flows last) and their total, which is Locust's own "Aggregated" row.

    A finished run's rows are its final figures (written once every request is in);
    a running one's are Locust's CSV, rewritten every second.
    """
    summary = status.get("summary") or {}
    if summary.get("endpoints") is not None:
        rows = list(summary["endpoints"]) + list(summary.get("flows") or [])
        total = summary.get("aggregated")
    else:
        rows = list(status.get("endpoints") or [])
        total = status.get("aggregated")
    rows.sort(key=lambda r: (r.get("method") == "FLOW", -(r.get("requests") or 0)))
    if total:
        total = {"p50_ms": None, "p95_ms": None, "p99_ms": None, "rps": None, **total}
    return {"rows": rows, "total": total}
