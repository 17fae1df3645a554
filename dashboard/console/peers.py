"""Every call the dashboard makes to the lab's services, and none of them can hang or break a page.

:func:`call` goes through the chassis client (service token signed with the
``dashboard`` key, request id forwarded) with the dashboard's own policy:
short timeouts, one attempt, no breaker, no bulkhead. The lab's resilience
switches are for the services; the dashboard is the instrument that watches
them and must report what it sees, now — not fail fast on a breaker of its own
nor retry a dead service into a hung page.

:func:`probe` reads ``/health/`` and ``/metrics`` as plain HTTP: the health
body matters most when it comes with a 503 (it says which check failed), and
``/metrics`` is Prometheus text, not JSON — the chassis client keeps neither.

Whatever happens, the answer is a :class:`Call` saying ``ok``, ``error``
(the service answered 4xx/5xx), ``down`` (nothing listening) or ``timeout``.
"""

from __future__ import annotations

import contextvars
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field

import requests
from django.conf import settings

from chassis import parts
from chassis.client import PeerUnavailable, ServiceClient
from chassis.requestid import HEADER as REQUEST_ID_HEADER
from chassis.requestid import get_request_id, new_request_id

from . import tracing

SERVICES = parts.SERVICE_NAMES
LABELS = {s.name: s.label for s in parts.SERVICES}


@dataclass
class Call:
    """The outcome of one call, whatever it was."""

    service: str
    method: str
    path: str
    state: str  # ok | error | down | timeout
    status: int | None = None
    data: object = None
    text: str = ""
    error: str = ""
    latency_ms: float = 0.0
    headers: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.state == "ok"

    @property
    def message(self) -> str:
        """One line for a person: the service's own message when it sent one."""
        if isinstance(self.data, dict) and self.data.get("message"):
            return str(self.data["message"])
        return self.error or (f"HTTP {self.status}" if self.status else self.state)

    @property
    def fields(self) -> dict:
        return self.data.get("fields", {}) if isinstance(self.data, dict) else {}

    def as_hop(self) -> dict:
        return {
            "service": self.service,
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "state": self.state,
            "latency_ms": round(self.latency_ms, 1),
            "message": "" if self.ok else self.message,
        }


def DashboardClient(peer: str, *, read_timeout: float, connect_timeout: float) -> ServiceClient:
    """The chassis client with a fixed policy instead of the lab's run-time switches."""
    return ServiceClient(
        peer,
        policy={
            "timeouts": {"enabled": True, "connect": connect_timeout, "read": read_timeout},
            "retries": {"enabled": False, "attempts": 1, "backoff": 0.0},
            "breaker": {"enabled": False},
            "bulkhead": {"enabled": False},
            "fallback": {"enabled": False},
        },
    )


def base_url(service: str) -> str:
    return settings.CHASSIS["PEERS"][service]


def call(
    service: str,
    method: str,
    path: str,
    *,
    json=None,
    params: dict | None = None,
    bearer: str | None = None,
    idempotency_key: str | None = None,
    timeout: float | None = None,
    headers: dict[str, str] | None = None,
) -> Call:
    """One call to ``service`` through the chassis client; never raises."""
    read = timeout or settings.DASHBOARD_READ_TIMEOUT
    connect = min(settings.DASHBOARD_CONNECT_TIMEOUT, read)
    client = DashboardClient(service, read_timeout=read, connect_timeout=connect)
    started = time.perf_counter()
    try:
        with tracing.quiet():
            response = client.request(
                method,
                path,
                json=json,
                params=params,
                bearer=bearer,
                idempotency_key=idempotency_key,
                headers=headers,
            )
    except PeerUnavailable as exc:
        elapsed = (time.perf_counter() - started) * 1000
        timed_out = "timed out" in exc.reason or "Timeout" in exc.reason
        state = "timeout" if timed_out else ("error" if exc.status else "down")
        answer = exc.response  # the peer's own 5xx answer: its headers (a Retry-After) are kept
        return Call(
            service,
            method,
            path,
            state,
            status=exc.status,
            error=exc.reason,
            latency_ms=elapsed,
            headers=dict(answer.headers) if answer is not None else {},
        )
    except Exception as exc:  # noqa: BLE001 — a page must render whatever the client does
        elapsed = (time.perf_counter() - started) * 1000
        return Call(service, method, path, "down", error=f"{type(exc).__name__}: {str(exc)[:160]}", latency_ms=elapsed)
    elapsed = (time.perf_counter() - started) * 1000
    state = "ok" if response.status < 400 else "error"
    return Call(
        service,
        method,
        path,
        state,
        status=response.status,
        data=response.data,
        latency_ms=elapsed,
        headers=dict(response.headers),
    )


def probe(service: str, path: str, *, timeout: float | None = None) -> Call:
    """GET ``path`` (``/health/``, ``/metrics``) as plain HTTP, keeping the body whatever the status."""
    read = timeout or settings.DASHBOARD_READ_TIMEOUT
    request_id = get_request_id()
    headers = {REQUEST_ID_HEADER: request_id if request_id != "-" else new_request_id()}
    started = time.perf_counter()
    try:
        with tracing.untraced():
            response = requests.get(
                f"{base_url(service)}{path}",
                headers=headers,
                timeout=(min(settings.DASHBOARD_CONNECT_TIMEOUT, read), read),
            )
    except requests.Timeout as exc:
        return Call(
            service,
            "GET",
            path,
            "timeout",
            error=f"no answer within {read:g} s ({type(exc).__name__})",
            latency_ms=(time.perf_counter() - started) * 1000,
        )
    except requests.RequestException as exc:
        return Call(
            service,
            "GET",
            path,
            "down",
            error=f"unreachable ({type(exc).__name__})",
            latency_ms=(time.perf_counter() - started) * 1000,
        )
    elapsed = (time.perf_counter() - started) * 1000
    data = None
    if "json" in response.headers.get("Content-Type", ""):
        try:
            data = response.json()
        except ValueError:
            data = None
    return Call(
        service,
        "GET",
        path,
        "ok" if response.status_code < 400 else "error",
        status=response.status_code,
        data=data,
        text=response.text if data is None else "",
        latency_ms=elapsed,
    )


def fetch_metrics_text(service: str) -> str:
    """The Prometheus text of ``service``; raises with a short reason when there is none."""
    result = probe(service, "/metrics", timeout=settings.METRICS_SCRAPE_TIMEOUT)
    if not result.ok:
        raise RuntimeError(result.message if result.state != "error" else f"/metrics answered HTTP {result.status}")
    return result.text


# --- doing several at once -------------------------------------------------------

_pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="peers")


def gather(tasks: dict, *, timeout: float | None = None) -> dict:
    """Run ``{key: (fn, args...)}`` in parallel, untraced; a task that fails or overruns gives None.

    Each task runs in a copy of the caller's context, so the request id is
    forwarded on every call it makes.
    """
    limit = timeout or settings.DASHBOARD_READ_TIMEOUT + 1.0

    def run(fn, args):
        with tracing.untraced():
            return fn(*args)

    futures = {key: _pool.submit(contextvars.copy_context().run, run, spec[0], spec[1:]) for key, spec in tasks.items()}
    deadline = time.monotonic() + limit
    out = {}
    for key, future in futures.items():
        try:
            out[key] = future.result(timeout=max(0.0, deadline - time.monotonic()))
        except FutureTimeout:
            out[key] = None
        except Exception:  # noqa: BLE001
            out[key] = None
    return out
