"""Prometheus metrics of a service, correct with several gunicorn workers.

When ``PROMETHEUS_MULTIPROC_DIR`` is set (``labctl`` sets one per service and
empties it before each start) every worker writes its samples there and
``/metrics`` aggregates them, so a scrape sees every worker, not just the one
that answered. Without it, the process's own registry is served.

Live gauges (breaker states, queue depth) are computed at scrape time by the
functions registered with :func:`register_live_gauge`.
"""

from __future__ import annotations

import os
import time

from django.db import connection
from django.http import HttpResponse
from django.urls import Resolver404, resolve
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_safe
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.4, 0.6, 1.0, 2.5, 5.0, 10.0)

HTTP_REQUESTS = Counter(
    "lab_http_requests_total", "Requests served, by route and status.", ["method", "route", "status"]
)
HTTP_DURATION = Histogram(
    "lab_http_request_duration_seconds", "Time to serve a request, by route.", ["route"], buckets=BUCKETS
)
PEER_CALLS = Counter("lab_peer_calls_total", "Calls to peers, by outcome.", ["peer", "outcome"])
RETRIES = Counter("lab_retries_total", "Extra attempts made by the client, by peer.", ["peer"])
FAULTS_INJECTED = Counter("lab_faults_injected_total", "Injected faults that bit, by kind.", ["kind"])
SHED = Counter("lab_requests_shed_total", "Requests refused unstarted, by reason (a passed deadline).", ["reason"])
SAGA_OUTCOMES = Counter("lab_saga_outcomes_total", "Checkout sagas finished, by outcome.", ["outcome"])
DB_QUERIES = Counter("lab_db_queries_total", "SQL statements run while serving requests, by route.", ["route"])

_live_gauges: dict[str, tuple[str, list[str], object]] = {}


def register_live_gauge(name: str, documentation: str, labels: list[str], read) -> None:
    """``read()`` returns ``[(label values, value), ...]`` at each scrape."""
    _live_gauges[name] = (documentation, labels, read)


class _LiveCollector:
    def collect(self):
        for name, (documentation, labels, read) in _live_gauges.items():
            family = GaugeMetricFamily(name, documentation, labels=labels)
            try:
                for label_values, value in read():
                    family.add_metric(list(label_values), value)
            except Exception:  # noqa: BLE001 — a broken reader must not break the scrape
                continue
            yield family


def _breaker_states():
    from django.conf import settings

    from .lab import resilience

    codes = {"closed": 0, "half-open": 1, "open": 2}
    states = resilience.breaker_states(settings.CHASSIS.get("DEPENDS_ON", []))
    return [((peer,), codes.get(s["state"], 0)) for peer, s in states.items()]


register_live_gauge(
    "lab_breaker_state", "Breaker state per peer: 0 closed, 1 half-open, 2 open.", ["peer"], _breaker_states
)


@csrf_exempt
@require_safe
def metrics_view(request):
    """``GET /metrics`` in Prometheus' text format."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        body = generate_latest(registry)
    else:
        from prometheus_client import REGISTRY

        body = generate_latest(REGISTRY)
    live = CollectorRegistry()
    live.register(_LiveCollector())
    return HttpResponse(body + generate_latest(live), content_type=CONTENT_TYPE_LATEST)


class MetricsMiddleware:
    """Counts and times every request by its route pattern (not its raw path)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        started = time.perf_counter()
        queries = _QueryCount()
        with connection.execute_wrapper(queries):
            response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        if match is None:  # answered before routing (an injected fault): still count it under its route
            try:
                match = resolve(request.path_info)
            except Resolver404:
                match = None
        route = ("/" + match.route) if match is not None and match.route else "unmatched"
        if route != "/metrics":
            HTTP_DURATION.labels(route).observe(time.perf_counter() - started)
            HTTP_REQUESTS.labels(request.method, route, str(response.status_code)).inc()
            if queries.count:
                DB_QUERIES.labels(route).inc(queries.count)
        return response


class _QueryCount:
    """Counts the SQL statements of one request (``connection.execute_wrapper``): the cost the bench budgets."""

    __slots__ = ("count",)

    def __init__(self):
        self.count = 0

    def __call__(self, execute, sql, params, many, context):
        self.count += 1
        return execute(sql, params, many, context)
