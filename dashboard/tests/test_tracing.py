"""The dashboard's own spans (a flow is one trace) and the client it calls the services with."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from collector.models import Span
from console import peers, tracing

pytestmark = pytest.mark.django_db


def sampled(traceparent: str) -> bool:
    return bool(int(traceparent.rsplit("-", 1)[1], 16) & 1)


@pytest.fixture
def provider(monkeypatch):
    """A tracer provider writing through the dashboard's exporter, with requests instrumented."""
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)  # the test settings turn the SDK off elsewhere
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(tracing.DatabaseSpanExporter()))
    RequestsInstrumentor().instrument(tracer_provider=provider)
    yield provider
    RequestsInstrumentor().uninstrument()


def test_a_flow_is_one_trace_and_other_roots_are_dropped(provider, lab):
    """Ensure a flow's root and its client spans are stored, a stray root span is not."""
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("flow.browse", attributes={"lab.request_id": "flow-browse-x"}) as root:
        peers.call("inventory", "GET", "/health/")
    with tracer.start_as_current_span("GET"):
        pass
    rows = list(Span.objects.all())
    assert {r.name for r in rows} == {"flow.browse", "GET"}
    assert {r.trace_id for r in rows} == {format(root.get_span_context().trace_id, "032x")}
    client_span = next(r for r in rows if r.name == "GET")
    assert client_span.parent_span_id == format(root.get_span_context().span_id, "016x")
    assert client_span.kind == "client"
    assert client_span.service == "dashboard"
    flow = next(r for r in rows if r.name == "flow.browse")
    assert flow.request_id == "flow-browse-x"
    # the service was asked to join the flow's trace
    traceparent = lab["inventory"].sent("GET", "/health/")[0]["headers"]["traceparent"]
    assert traceparent.split("-")[1] == flow.trace_id
    assert sampled(traceparent)


def test_polls_outside_a_flow_are_not_sampled(provider, lab):
    """Ensure the dashboard's own polling asks the services not to record it, and stores nothing itself."""
    peers.call("order", "GET", "/_lab/faults/")
    peers.probe("order", "/health/")
    for request in lab["order"].requests:
        assert not sampled(request["headers"]["traceparent"])
    assert Span.objects.count() == 0


def test_flow_span_without_tracing_gives_no_trace_id():
    """Ensure flows still run (without a trace id) when tracing is off."""
    with tracing.flow_span("browse") as trace_id:
        assert trace_id == ""
    assert not trace.get_current_span().is_recording()


def test_the_dashboard_client_gives_up_after_its_own_timeout(lab, settings):
    """Ensure the dashboard waits DASHBOARD_READ_TIMEOUT, once, whatever the lab's retry switches say."""
    settings.DASHBOARD_READ_TIMEOUT = 0.3
    lab["order"].delay = 1.0
    result = peers.call("order", "GET", "/_lab/faults/")
    assert result.state == "timeout"
    assert len(lab["order"].requests) == 1  # no retry
    assert result.latency_ms < 1000


def test_a_4xx_is_an_answer_with_the_services_message(lab):
    lab["order"].on("GET", "/_lab/saga/", 404, {"code": "not_found", "message": "No route for /_lab/saga/."})
    result = peers.call("order", "GET", "/_lab/saga/")
    assert (result.state, result.status, result.message) == ("error", 404, "No route for /_lab/saga/.")


def test_a_dead_service_is_down(dead_lab):
    result = peers.call("payment", "GET", "/_lab/faults/")
    assert result.state == "down"
    probe = peers.probe("payment", "/health/")
    assert probe.state == "down"


def test_the_audit_reads_are_not_traced(provider, lab):
    """Ensure the Audit page's reads of the reconciliation endpoints leave no trace in the services."""
    from console.audit import audit_run

    audit_run()
    reads = lab["order"].sent("GET", "/internal/reconciliation/orders/")
    assert reads, "the audit did not ask order_service"
    assert not sampled(reads[0]["headers"]["traceparent"])
    assert Span.objects.count() == 0
