"""The dashboard's own spans: a flow it runs is the root of one trace, and nothing else is traced.

:func:`install` (from ``config/wsgi.py``) sets up the chassis' tracing for the
``dashboard`` service with two differences from a service: Django requests
are not traced (the overview polls every 2 s; a trace per poll would bury the
flows) and spans are written straight into the collector's table instead of
being posted to ourselves over HTTP.

Calls made outside a flow run under :func:`untraced`: they carry a
``traceparent`` marked *not sampled*, so the services, whose sampler follows
their parent's decision, do not record the dashboard's health polls either.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

log = logging.getLogger("console.tracing")
FLOW_PREFIX = "flow."
_installed = threading.Event()


def install() -> bool:
    """Trace this process as ``dashboard`` (requests client spans + flow roots). False when disabled."""
    from chassis import telemetry

    if telemetry.setup("dashboard", exporter=DatabaseSpanExporter(), instrument_django=False):
        _installed.set()
        return True
    return False


def installed() -> bool:
    return _installed.is_set()


@contextlib.contextmanager
def untraced():
    """Calls inside carry a not-sampled trace context: nobody records spans for them."""
    parent = NonRecordingSpan(
        SpanContext(
            trace_id=secrets.randbits(128) or 1,
            span_id=secrets.randbits(64) or 1,
            is_remote=False,
            trace_flags=TraceFlags(TraceFlags.DEFAULT),
        )
    )
    token = otel_context.attach(trace.set_span_in_context(parent))
    try:
        yield
    finally:
        otel_context.detach(token)


def in_flow() -> bool:
    return trace.get_current_span().is_recording()


def quiet():
    """:func:`untraced` unless a flow is being recorded."""
    return contextlib.nullcontext() if in_flow() else untraced()


@contextlib.contextmanager
def flow_span(name: str, **attributes):
    """A new trace rooted at ``flow.<name>``; yields its trace id in hex ("" when tracing is off)."""
    tracer = trace.get_tracer("lab.dashboard")
    with tracer.start_as_current_span(
        f"{FLOW_PREFIX}{name}",
        context=otel_context.Context(),
        kind=trace.SpanKind.INTERNAL,
        attributes={k: v for k, v in attributes.items() if v is not None},
    ) as span:
        ctx = span.get_span_context()
        yield format(ctx.trace_id, "032x") if span.is_recording() else ""


class DatabaseSpanExporter(SpanExporter):
    """Writes the dashboard's finished spans into the collector's table, in-process."""

    def export(self, spans) -> SpanExportResult:
        from django.db import close_old_connections

        from collector.services import spans_ingest

        rows = [row for row in (span_row(s) for s in spans) if row]
        try:
            spans_ingest(rows=rows)
        except Exception:
            log.warning("could not store %d dashboard span(s)", len(rows), exc_info=True)
            return SpanExportResult.FAILURE
        finally:
            if threading.current_thread() is not threading.main_thread():
                close_old_connections()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


_KINDS = {
    trace.SpanKind.INTERNAL: "internal",
    trace.SpanKind.SERVER: "server",
    trace.SpanKind.CLIENT: "client",
    trace.SpanKind.PRODUCER: "producer",
    trace.SpanKind.CONSUMER: "consumer",
}
_STATUSES = {"UNSET": "unset", "OK": "ok", "ERROR": "error"}


def _plain(value):
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def span_row(span) -> dict | None:
    """A finished SDK span as a collector row; a root that is not a flow is dropped."""
    ctx = span.context
    if span.parent is None and not span.name.startswith(FLOW_PREFIX):
        return None
    attrs = {k: _plain(v) for k, v in (span.attributes or {}).items()}
    start, end = int(span.start_time or 0), int(span.end_time or span.start_time or 0)
    from collector.otlp import order_id_from

    return {
        "trace_id": format(ctx.trace_id, "032x"),
        "span_id": format(ctx.span_id, "016x"),
        "parent_span_id": format(span.parent.span_id, "016x") if span.parent else "",
        "service": "dashboard",
        "name": span.name[:255],
        "kind": _KINDS.get(span.kind, "internal"),
        "start_ns": start,
        "end_ns": max(end, start),
        "duration_ms": round((max(end, start) - start) / 1e6, 3),
        "status": _STATUSES.get(span.status.status_code.name, "unset"),
        "status_message": (span.status.description or "")[:255],
        "request_id": str(attrs.get("lab.request_id") or "")[:64],
        "order_id": order_id_from(attrs),
        "attributes": attrs,
        "events": [
            {
                "name": e.name,
                "time_ns": int(e.timestamp),
                "attributes": {k: _plain(v) for k, v in (e.attributes or {}).items()},
            }
            for e in span.events
        ],
    }
