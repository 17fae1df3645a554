"""Tracing with OpenTelemetry: one trace per flow, across every hop.

:func:`setup` is called once per process (``chassis.wsgi``, the Celery worker)
before Django loads its middleware. It instruments Django (server spans),
``requests`` (client spans, and the W3C ``traceparent`` header on every call
to a peer) and exports spans in batches over OTLP/HTTP, off the request path.

Standard OpenTelemetry variables apply unchanged: ``OTEL_SDK_DISABLED``,
``OTEL_TRACES_SAMPLER`` (the lab default keeps every trace),
``OTEL_EXPORTER_OTLP_ENDPOINT`` (default: the dashboard's collector,
``http://127.0.0.1:8000``; point it at Jaeger's ``:4318`` instead if you like),
``OTEL_BSP_SCHEDULE_DELAY`` (the lab default is 1000 ms).

Every export is authenticated: the exporter sends ``Authorization: Bearer`` with
a service token this service signs with its own private key for the audience
``dashboard`` (:class:`ServiceTokenAuth`), and the collector stores a span only
under a service name that token's issuer owns. Without a usable key the export
goes out unauthenticated, a warning is logged once, and the collector answers
401 (the spans are lost; the service itself is unaffected).

Every span carries the request id as ``lab.request_id``. :func:`span` and
:func:`event` are what services use for saga steps, retries, breaker
rejections and injected faults; without :func:`setup` they cost nothing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading

import requests
from opentelemetry import trace
from opentelemetry.sdk.trace import SpanProcessor
from requests.auth import AuthBase

from .requestid import get_request_id

DEFAULT_ENDPOINT = "http://127.0.0.1:8000"
COLLECTOR_AUDIENCE = "dashboard"
log = logging.getLogger("chassis.telemetry")
tracer = trace.get_tracer("lab.chassis")
_setup_lock = threading.Lock()
_provider = None


def enabled() -> bool:
    return os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() != "true"


def setup(service: str, *, exporter=None, instrument_django: bool = True) -> bool:
    """Install the tracer provider for ``service``; returns False when tracing is disabled.

    ``exporter`` replaces the OTLP exporter (tests pass an in-memory one).
    Safe to call more than once.
    """
    global _provider
    if not enabled():
        return False
    with _setup_lock:
        if _provider is not None:
            return True
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

        os.environ.setdefault("OTEL_EXPORTER_OTLP_ENDPOINT", DEFAULT_ENDPOINT)
        os.environ.setdefault("OTEL_BSP_SCHEDULE_DELAY", "1000")
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        provider.add_span_processor(RequestIdSpanProcessor())
        if exporter is None:
            provider.add_span_processor(BatchSpanProcessor(otlp_exporter()))
        else:
            provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        _provider = provider

        from opentelemetry.instrumentation.requests import RequestsInstrumentor

        RequestsInstrumentor().instrument(tracer_provider=provider)
        if instrument_django:
            from opentelemetry.instrumentation.django import DjangoInstrumentor

            DjangoInstrumentor().instrument(tracer_provider=provider, excluded_urls="/metrics,/health/,/static/")
        return True


class ServiceTokenAuth(AuthBase):
    """``Authorization: Bearer <service token>`` on each export, for the collector to verify.

    Why a service token and not a static secret in ``OTEL_EXPORTER_OTLP_HEADERS``:
    each service already holds its own private key and the dashboard every public
    key, so no new secret has to be made, mounted or rotated, and what the token
    proves (who signed it) is exactly what the collector binds to the spans'
    ``service.name``. Service tokens live at most two minutes, so a header read
    once at start-up would go stale: this auth hook runs on every request the
    exporter makes and takes the current token (:func:`chassis.auth.service_token`
    reuses one until near its expiry, so that is one signature a minute or so).
    """

    def __init__(self, audience: str = COLLECTOR_AUDIENCE):
        self.audience = audience
        self._warned = False

    def __call__(self, request):
        from . import auth  # Django settings are read at export time, never at import

        try:
            token = auth.service_token(self.audience)
        except Exception as exc:  # noqa: BLE001 — tracing must never break the service
            if not self._warned:
                self._warned = True
                log.warning("spans are exported without a credential (the collector refuses them): %s", exc)
            return request
        request.headers["Authorization"] = f"Bearer {token}"
        return request


def otlp_exporter(**kwargs):
    """The OTLP/HTTP span exporter, signing every export as this service (:class:`ServiceTokenAuth`)."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    session = requests.Session()
    session.auth = ServiceTokenAuth()
    return OTLPSpanExporter(timeout=2, session=session, **kwargs)


def force_flush(timeout_ms: int = 5000) -> None:
    if _provider is not None:
        _provider.force_flush(timeout_ms)


class RequestIdSpanProcessor(SpanProcessor):
    """Stamps every span with the request id current when it starts."""

    def on_start(self, span, parent_context=None):
        request_id = get_request_id()
        if request_id != "-":
            span.set_attribute("lab.request_id", request_id)


@contextlib.contextmanager
def span(name: str, **attributes):
    """A child span of the current one (``saga.reserve``, ...); records an exception as an error."""
    with tracer.start_as_current_span(
        name, attributes={k: v for k, v in attributes.items() if v is not None}
    ) as current:
        yield current


def event(name: str, **attributes) -> None:
    """An event on the current span (``lab.fault``, ``lab.retry``, ``lab.breaker_rejected``)."""
    current = trace.get_current_span()
    if current.is_recording():
        current.add_event(name, {k: str(v) for k, v in attributes.items() if v is not None})


def tag(**attributes) -> None:
    """Attributes on the current span."""
    current = trace.get_current_span()
    if current.is_recording():
        for key, value in attributes.items():
            if value is not None:
                current.set_attribute(key, value)
