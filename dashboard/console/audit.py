"""The Audit page's data: ``labctl.audit`` run against the services this dashboard watches."""

from __future__ import annotations

import time

from django.conf import settings
from django.core.cache import cache

from labctl.facade import LabApiError, run_audit

from . import lab, tracing
from .labs import DashboardLabApi, lab_paths


def audit_run() -> dict:
    """``{"result", "error"}``; never raises.

    The audit reads the services' reconciliation endpoints with the dashboard's own
    service identity, at the URLs this dashboard uses.
    """
    api = BoundedLabApi(
        lab_paths(settings.LAB_ROOT),
        urls=dict(settings.CHASSIS["PEERS"]),
        timeout=5.0,
        max_pages=settings.DASHBOARD_AUDIT_MAX_PAGES,
    )
    kwargs = {}
    saga = lab.saga_get()
    if lab.saga_available(saga) and isinstance(saga.data.get("deadline_seconds"), int):
        kwargs["deadline_seconds"] = saga.data["deadline_seconds"]
    try:
        with tracing.untraced():  # the dashboard's own reads: no trace of them in the services
            result = run_audit(api, **kwargs)
        return {"result": result, "error": ""}
    except LabApiError as exc:
        return {"result": None, "error": str(exc)}
    except Exception as exc:  # noqa: BLE001 — the page says what broke instead of answering 500
        return {"result": None, "error": f"the audit failed: {type(exc).__name__}: {exc}"}


# --- anonymous reads: one shared, short-lived audit ---------------------------------------
# Anyone may open the Audit page (DASHBOARD_PUBLIC_READ), and each audit walks every
# reconciliation page of three services with the dashboard's identity: anonymous visitors
# read the last audit from the shared cache while it is younger than AUDIT_FRESH_SECONDS;
# one process at a time computes a new one (a cache lock, so a burst computes once); staff
# may force a fresh one. Each computation walks at most AUDIT_MAX_PAGES pages per endpoint.
AUDIT_CACHE_KEY = "console:audit:last"
AUDIT_LOCK_KEY = "console:audit:computing"
AUDIT_KEEP_SECONDS = 3600  # an older audit is still shown (with its age) while a new one computes
AUDIT_LOCK_SECONDS = 60  # longer than any audit may take: 4 endpoints x AUDIT_MAX_PAGES x the 5 s timeout is bounded
AUDIT_WAIT_STEP = 0.2
clock = time.time  # injectable in tests
sleep = time.sleep


def forget_shared() -> None:
    """Drop the shared audit: after a lab's reset, the next reader audits the lab as it is now, not as it was."""
    cache.delete(AUDIT_CACHE_KEY)


class BoundedLabApi(DashboardLabApi):
    """The dashboard's lab-admin client, walking at most ``max_pages`` pages of one endpoint."""

    def __init__(self, *args, max_pages: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_pages = max_pages

    def all_pages(self, service: str, path: str) -> list[dict]:
        rows, page = [], 1
        while page <= self.max_pages:
            body = self.json("GET", service, path, params={"page": page, "page_size": 1000})
            rows.extend(body["results"])
            if not body.get("next"):
                return rows
            page += 1
        raise LabApiError(
            f"{service}{path}: more than {self.max_pages} pages of 1000 rows; the dashboard's audit stops there "
            "(run `labctl audit` for the whole lab)"
        )


def _with_age(entry: dict) -> dict:
    return {**entry, "age_seconds": max(0, int(clock() - entry["computed_at"]))}


def audit_shared(*, force: bool = False) -> dict:
    """The audit as :func:`audit_run` gives it, plus ``computed_at`` and ``age_seconds``; never raises.

    Without ``force``, an audit younger than ``DASHBOARD_AUDIT_FRESH_SECONDS`` is served
    from the shared cache. A new one is computed by whoever takes the lock; the others
    get the last audit (however old, its age shown) or, when there is none yet, wait
    for the one being computed.
    """
    started = clock()
    cached = cache.get(AUDIT_CACHE_KEY)
    if cached and not force and started - cached["computed_at"] < settings.DASHBOARD_AUDIT_FRESH_SECONDS:
        return _with_age(cached)
    if cache.add(AUDIT_LOCK_KEY, started, timeout=AUDIT_LOCK_SECONDS):
        try:
            entry = {**audit_run(), "computed_at": clock()}
            cache.set(AUDIT_CACHE_KEY, entry, timeout=AUDIT_KEEP_SECONDS)
        finally:
            cache.delete(AUDIT_LOCK_KEY)
        return _with_age(entry)
    if cached and not force:
        return _with_age(cached)
    for _ in range(int(AUDIT_LOCK_SECONDS / AUDIT_WAIT_STEP)):  # another process is computing: wait for it
        sleep(AUDIT_WAIT_STEP)
        latest = cache.get(AUDIT_CACHE_KEY)
        if latest and (latest["computed_at"] >= started or not force):
            return _with_age(latest)
        if cache.get(AUDIT_LOCK_KEY) is None:
            break
    return {
        "result": None,
        "error": "another audit is being computed; try again in a few seconds",
        "computed_at": clock(),
        "age_seconds": 0,
    }


def anonymous_rate_limited(client: str) -> int:
    """Count an anonymous audit read by ``client``; the seconds to wait when over the limit, else 0."""
    window = settings.DASHBOARD_AUDIT_ANONYMOUS_WINDOW_SECONDS
    now = clock()
    key = f"console:audit:rate:{client}:{int(now // window)}"
    cache.add(key, 0, timeout=window + 1)
    try:
        count = cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.add(key, 1, timeout=window + 1)
        count = 1
    if count <= settings.DASHBOARD_AUDIT_ANONYMOUS_PER_WINDOW:
        return 0
    return max(1, int(window - now % window) + 1)
