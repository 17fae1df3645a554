"""What the pages show, read from the running lab in parallel, each part allowed to be missing."""

from __future__ import annotations

import functools
import re
from datetime import UTC, datetime

from django.conf import settings

from chassis import parts
from collector import metrics

from . import lab, peers
from . import load as load_runs

SERVICES = peers.SERVICES
ISO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")
BAD_STATES = ("down", "timeout", "outage", "degraded", "error")


def health_state(result: peers.Call | None) -> dict:
    """A service card's state from its ``/health/`` answer.

    ``up`` · ``outage`` (an injected outage answers 503 to everything) ·
    ``degraded`` (it answers, a dependency check fails) · ``error`` ·
    ``down`` (nothing listening) · ``timeout``.
    """
    if result is None:
        return {"state": "timeout", "detail": "no answer in time", "checks": {}, "faults": None}
    data = result.data if isinstance(result.data, dict) else {}
    checks = data.get("checks") if isinstance(data.get("checks"), dict) else {}
    faults = data.get("faults") if isinstance(data.get("faults"), list) else None
    if result.state in ("down", "timeout"):
        return {"state": result.state, "detail": result.error, "checks": {}, "faults": None}
    if result.status == 200:
        return {"state": "up", "detail": f"{result.latency_ms:.0f} ms", "checks": checks, "faults": faults}
    if data.get("code") == "service_outage":
        return {"state": "outage", "detail": "injected outage: 503 to everything", "checks": {}, "faults": faults}
    failing = [name for name, check in checks.items() if isinstance(check, dict) and check.get("status") != "ok"]
    if failing:
        return {
            "state": "degraded",
            "detail": f"{', '.join(failing)} check failing",
            "checks": checks,
            "faults": faults,
        }
    return {"state": "error", "detail": result.message, "checks": checks, "faults": faults}


def _faults_of(service: str, faults_call: peers.Call | None, health: dict) -> tuple[list | None, str]:
    if faults_call is not None and faults_call.ok and isinstance(faults_call.data, dict):
        return faults_call.data.get("faults", []), ""
    if health["faults"] is not None:
        return health["faults"], ""
    reason = faults_call.message if faults_call is not None else "no answer"
    return None, reason


def _dependency_node(states: list[dict], check: str, label: str) -> dict:
    """MySQL / Redis as the services see them through their health checks."""
    seen = [s["checks"].get(check) for s in states if isinstance(s["checks"].get(check), dict)]
    if not seen:
        return {"state": "unknown", "detail": "no service could tell", "label": label}
    engines = sorted({str(c.get("engine") or c.get("backend") or "") for c in seen} - {""})
    bad = [c for c in seen if c.get("status") != "ok"]
    if check == "cache" and engines and all("Redis" not in e for e in engines):
        return {"state": "absent", "detail": "not used (local memory cache)", "label": label}
    if check == "database" and engines and all(e != "mysql" for e in engines):
        label = "SQLite (embedded)" if engines == ["sqlite"] else ", ".join(engines)
    state = "up" if not bad else ("down" if len(bad) == len(seen) else "degraded")
    detail = f"reached by {len(seen) - len(bad)}/{len(seen)}"
    return {"state": state, "detail": detail, "label": label}


def lab_overview() -> dict:
    """Everything the overview draws, gathered in parallel within the dashboard's time budget."""
    tasks = {f"health:{s}": (peers.probe, s, "/health/") for s in SERVICES}
    tasks.update({f"faults:{s}": (lab.faults_list, s) for s in SERVICES})
    tasks["resilience:order"] = (lab.resilience_get, "order")
    tasks["metrics"] = (metrics.summary, peers.fetch_metrics_text)
    tasks["programs"] = (lab.supervisor_programs,)
    tasks["load"] = (load_runs.running,)
    results = peers.gather(tasks, timeout=settings.DASHBOARD_READ_TIMEOUT + settings.METRICS_SCRAPE_TIMEOUT + 0.5)

    summary = results.get("metrics") or {"services": {}}
    cards, active_faults = [], []
    for service in SERVICES:
        health = health_state(results.get(f"health:{service}"))
        faults, faults_error = _faults_of(service, results.get(f"faults:{service}"), health)
        for fault in faults or []:
            active_faults.append({"service": service, **fault})
        m = summary["services"].get(service, {})
        cards.append(
            {
                "name": service,
                "label": peers.LABELS[service],
                "url": peers.base_url(service),
                **health,
                "bad": health["state"] in BAD_STATES,
                "faults": faults or [],
                "faults_error": faults_error,
                "metrics": m,
                "sparkline": sparkline_points(m.get("sparkline") or []),
            }
        )

    resilience = results.get("resilience:order")
    breakers, breakers_error = {}, ""
    if resilience is not None and resilience.ok and isinstance(resilience.data, dict):
        breakers = resilience.data.get("breakers", {})
    else:
        breakers_error = resilience.message if resilience is not None else "no answer"
    edges = [
        {"source": "order", "target": peer, **_breaker(breakers.get(peer), breakers_error)}
        for peer in ("inventory", "payment")
    ]
    programs = results.get("programs")
    nodes = {c["name"]: {"state": c["state"], "detail": c["detail"], "label": c["label"]} for c in cards}
    nodes["worker"] = {**lab.program_state(programs, settings.DASHBOARD_WORKER_PROGRAM), "label": "Celery worker"}
    queued = summary["services"].get("order", {}).get("queue_depth")
    if queued is not None:  # tasks waiting in the broker for a worker (order's gauge; Redis broker only)
        nodes["worker"]["detail"] = f"{nodes['worker']['detail']} · {int(queued)} queued"
        nodes["worker"]["queued"] = int(queued)
    nodes["load"] = {**_load_node(results.get("load"), programs), "label": "Load generator"}
    nodes["mysql"] = _dependency_node(cards, "database", "MySQL")
    nodes["redis"] = _dependency_node(cards, "cache", "Redis")
    return {
        "cards": cards,
        "nodes": nodes,
        "edges": edges,
        "faults": active_faults,
        "metrics_window": summary.get("window_seconds"),
        "all_up": all(not c["bad"] for c in cards),
    }


def _load_node(run: dict | None, programs: dict | None) -> dict:
    """Running when a Locust run (labctl load) or a load program under supervisord is up; idle otherwise."""
    if run:
        users = (run.get("parameters") or {}).get("users")
        return {"state": "up", "detail": f"{run.get('scenario')}, {users} users"}
    managed = [lab.program_state(programs, name) for name in settings.DASHBOARD_LOAD_PROGRAMS]
    present = [p for p in managed if p["state"] not in ("absent", "unknown")]
    if present:
        return present[0]
    return {"state": "idle", "detail": "no run"}


def _breaker(breaker: dict | None, error: str) -> dict:
    if not breaker:
        return {"state": "unknown", "detail": error or "no breaker yet"}
    detail = f"{breaker.get('fail_counter', 0)}/{breaker.get('fail_max', '?')} failures"
    return {"state": breaker.get("state", "unknown"), "detail": detail}


def sparkline_points(series: list[float], *, width: int = 160, height: int = 36) -> str:
    """SVG polyline points for a small rate chart (the max of the series touches the top)."""
    if len(series) < 2:
        return ""
    top = max(max(series), 0.001)
    step = width / (len(series) - 1)
    return " ".join(f"{i * step:.1f},{height - 2 - (v / top) * (height - 4):.1f}" for i, v in enumerate(series))


def worker_process() -> dict:
    """The Celery worker as supervisord runs it: ``state`` (up, starting, down, absent, unknown) and ``detail``.

    "Kill the worker" is an action; this is what shows it coming back (supervisord's
    state and, once running again, its pid and uptime).
    """
    name = settings.DASHBOARD_WORKER_PROGRAM
    programs = lab.supervisor_programs()
    if programs is None:
        return {
            "state": "unknown",
            "detail": "no supervisord is running here (the lab was not started with make up): "
            "nothing would start a killed worker again",
        }
    members = [p for p in programs.values() if p.get("name") == name or p.get("group") == name]
    if not members:
        return {"state": "absent", "detail": f"supervisord has no '{name}' program"}
    names = sorted({str(p.get("statename", "?")) for p in members})
    detail = "; ".join(
        f"{p.get('statename', '?')}" + (f", {p['description']}" if p.get("description") else "") for p in members
    )
    if names == ["RUNNING"]:
        state = "up"
    elif set(names) & {"STARTING", "BACKOFF"}:
        state = "starting"
    else:
        state = "down"
    return {"state": state, "detail": detail}


def faults_page() -> dict:
    """Each service's active faults (or why they could not be read), and the worker process."""
    results = peers.gather({s: (lab.faults_list, s) for s in SERVICES})
    out = []
    for service in SERVICES:
        result = results.get(service)
        ok = result is not None and result.ok and isinstance(result.data, dict)
        out.append(
            {
                "name": service,
                "label": peers.LABELS[service],
                "faults": result.data.get("faults", []) if ok else [],
                "error": "" if ok else (result.message if result is not None else "no answer in time"),
                "state": result.state if result is not None else "timeout",
            }
        )
    return {"services": out, "worker": worker_process(), "metrics_window": settings.METRICS_WINDOW_SECONDS}


def resilience_page() -> dict:
    tasks = {s: (lab.resilience_get, s) for s in SERVICES}
    tasks["saga"] = (lab.saga_get,)
    results = peers.gather(tasks)
    out = []
    now = datetime.now(UTC)
    for service in SERVICES:
        result = results.get(service)
        ok = result is not None and result.ok and isinstance(result.data, dict)
        breakers = result.data.get("breakers", {}) if ok else {}
        breakers = {peer: _breaker_row(b, now) for peer, b in breakers.items() if isinstance(b, dict)}
        out.append(
            {
                "name": service,
                "label": peers.LABELS[service],
                "switches": result.data.get("switches", {}) if ok else {},
                # A service has one breaker per peer it calls (its chassis DEPENDS_ON), so no
                # breaker means no peer: its switches govern no call at all.
                "breakers": breakers,
                "calls_peers": bool(breakers),
                # What its fallback switch governs of its own, calling no peer (chassis.parts.OWN_FALLBACKS).
                "own_fallback": "" if breakers else parts.OWN_FALLBACKS.get(service, ""),
                "error": "" if ok else (result.message if result is not None else "no answer in time"),
            }
        )
    saga = results.get("saga")
    return {
        "services": out,
        "callers": [s for s in out if s["calls_peers"] or s["error"] or s["own_fallback"]],
        "no_peers": [s for s in out if not s["calls_peers"] and not s["error"] and not s["own_fallback"]],
        "saga": saga.data if saga is not None and lab.saga_available(saga) else None,
        "saga_error": "" if saga is not None and saga.state != "timeout" else "no answer in time",
    }


def _breaker_row(breaker: dict, now: datetime) -> dict:
    """A breaker as the page shows it: when it opened only while it is open or half-open, in words."""
    row = {**breaker, "open_since": ""}
    if breaker.get("state") in ("open", "half-open") and breaker.get("opened_at"):
        try:
            opened = datetime.fromisoformat(str(breaker["opened_at"]))
        except ValueError:
            return row
        if opened.tzinfo is None:
            opened = opened.replace(tzinfo=UTC)
        ago = max(int((now - opened).total_seconds()), 0)
        row["open_since"] = f"{opened.astimezone(UTC):%H:%M:%S} UTC ({_ago(ago)})"
    return row


def _ago(seconds: int) -> str:
    if seconds < 90:
        return f"{seconds} s ago"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min ago"
    return f"{round(seconds / 3600)} h ago"


def data_page(token: str) -> dict:
    """Recent rows of each service's main tables, read through its API as the logged-in admin."""
    reads = {
        "user": [("Users", "/api/users/", ("id", "email", "name", "is_staff", "date_joined"))],
        "inventory": [
            ("Products", "/api/products/", ("sku", "name", "price_cents", "currency", "available", "active"))
        ],
        "order": [
            ("Orders", "/api/orders/", ("id", "customer_id", "status", "status_reason", "total_cents", "created_at"))
        ],
        "payment": [
            (
                "Payments",
                "/api/payments/",
                ("order_id", "status", "amount_cents", "refunded_cents", "card_last4", "created_at"),
            ),
            ("Ledger", "/api/ledger/", ("kind", "order_id", "amount_cents", "currency", "created_at")),
        ],
    }
    tasks = {f"health:{s}": (peers.probe, s, "/health/") for s in SERVICES}
    for service, tables in reads.items():
        for title, path, _ in tables:
            tasks[f"{service}:{title}"] = (
                functools.partial(peers.call, service, "GET", path, params={"page_size": 8}, bearer=token),
            )
    results = peers.gather(tasks, timeout=settings.DASHBOARD_READ_TIMEOUT + 1.0)
    out = []
    for service in SERVICES:
        health = results.get(f"health:{service}")
        database = {}
        if health is not None and isinstance(health.data, dict):
            database = (health.data.get("checks") or {}).get("database") or {}
        tables = []
        for title, path, columns in reads[service]:
            result = results.get(f"{service}:{title}")
            rows, error, count, raw = [], "", None, []
            if result is not None and result.ok and isinstance(result.data, dict):
                raw = [r for r in result.data.get("results", []) if isinstance(r, dict)]
                count = result.data.get("count")
                if raw:
                    columns = [c for c in columns if any(c in r for r in raw)] or list(raw[0].keys())[:6]
            else:
                error = result.message if result is not None else "no answer in time"
            currencies = {r.get("currency") for r in raw if r.get("currency")}
            currency = currencies.pop() if len(currencies) == 1 else ""
            if currency and any(c.endswith("_cents") for c in columns):
                columns = [c for c in columns if c != "currency"]  # the money headings say it
            # One currency: the heading says it. Several (or none named): each money cell says its own.
            rows = [
                [_cell(r.get(c), c, currency="" if currency else str(r.get("currency") or "")) for c in columns]
                for r in raw
            ]
            tables.append(
                {
                    "title": title,
                    # The service's own name over its only table says it twice ("Users / Users").
                    "same_as_service": title == peers.LABELS[service],
                    "path": path,
                    "columns": [_column(c, currency) for c in columns],
                    "rows": rows,
                    "error": error,
                    "count": count,
                    "shown": len(rows),
                }
            )
        out.append(
            {
                "name": service,
                "label": peers.LABELS[service],
                "engine": database.get("engine", "?"),
                "schema": database.get("name", "?"),
                "database_ok": database.get("status") == "ok",
                "tables": tables,
            }
        )
    return {"services": out, "worker": worker_process(), "metrics_window": settings.METRICS_WINDOW_SECONDS}


def _column(name: str, currency: str) -> dict:
    """A column's heading: the API's field name, except money, which the cells show in units, not cents.

    ``price_cents`` 17900 is shown as 179.00, so its heading is "price (EUR)" when every row
    is in euros (each cell then says its currency when the rows mix them).
    """
    if name.endswith("_cents"):
        base = name.removesuffix("_cents").replace("_", " ")
        return {
            "name": name,
            "label": f"{base} ({currency})" if currency else base,
            "title": f"{name} in the API, shown divided by 100",
            "money": True,
        }
    return {"name": name, "label": name, "title": "", "money": False}


def _cell(value, column: str = "", *, currency: str = "") -> str:
    """A table cell a person reads at a glance: money in units (with ``currency`` when given), times to the second."""
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if column.endswith("_cents") and isinstance(value, int):
        return f"{value / 100:.2f} {currency}".rstrip()
    if isinstance(value, str) and ISO_TIME.match(value):
        return value[:19].replace("T", " ")
    return str(value)[:60]
