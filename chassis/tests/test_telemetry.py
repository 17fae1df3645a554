"""Traces: spans carry the request id, faults and retries, and the trace context crosses HTTP."""

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from chassis import telemetry
from chassis.client import ServiceClient
from chassis.requestid import bind_request_id
from chassis.testing import bearer, service_token

EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module", autouse=True)
def tracing():
    telemetry.setup("inventory", exporter=EXPORTER)
    yield


@pytest.fixture(autouse=True)
def clear_spans():
    EXPORTER.clear()


def test_server_span_has_request_id_and_route(client):
    """Ensure a request gives a server span stamped with its request id."""
    client.post(
        "/echo/", {"name": "a", "quantity": 1}, content_type="application/json", HTTP_X_REQUEST_ID="req-trace-1"
    )
    spans = EXPORTER.get_finished_spans()
    server = [s for s in spans if s.kind.name == "SERVER"]
    assert server and server[0].attributes["lab.request_id"] == "req-trace-1"
    assert server[0].resource.attributes["service.name"] == "inventory"


def test_trace_context_crosses_http_and_retries_show(peer):
    """Ensure a call to a peer carries traceparent of the current trace, one client span per attempt."""
    bind_request_id("req-trace-2")
    peer.script = [(503, None), (200, {})]
    with telemetry.span("saga.reserve") as parent:
        ServiceClient("payment", base_url=peer.url).get("/x/")
    trace_id = format(parent.get_span_context().trace_id, "032x")
    assert all(r["headers"]["traceparent"].split("-")[1] == trace_id for r in peer.received)
    spans = EXPORTER.get_finished_spans()
    clients = [s for s in spans if s.kind.name == "CLIENT"]
    assert len(clients) == 2
    assert all(s.parent.span_id == parent.get_span_context().span_id for s in clients)
    saga = next(s for s in spans if s.name == "saga.reserve")
    assert [e.name for e in saga.events] == ["lab.retry"]
    assert saga.attributes["lab.request_id"] == "req-trace-2"


def test_injected_fault_is_a_span_event(api):
    """Ensure a fault that bites leaves a lab.fault event on the server span."""
    admin = bearer(service_token(caller="dashboard", audience="inventory"))
    api.put("/_lab/faults/", {"kind": "error", "status": 502, "path_prefix": "/echo/"}, format="json", **admin)
    api.post("/echo/", {"name": "a", "quantity": 1}, format="json")
    events = [e for s in EXPORTER.get_finished_spans() for e in s.events if e.name == "lab.fault"]
    assert events and events[0].attributes["kind"] == "error"


def _export_one_span(exporter) -> None:
    """Finish one span on a provider of its own whose only processor hands it to ``exporter`` at once."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("test").start_as_current_span("exported"):
        pass
    provider.shutdown()


def test_otlp_exports_carry_a_service_token_for_the_collector(peer):
    """Ensure every export is signed as this service for the collector (audience "dashboard"), fresh each time."""
    from chassis import auth

    _export_one_span(telemetry.otlp_exporter(endpoint=f"{peer.url}/v1/traces"))
    exports = [r for r in peer.received if r["path"] == "/v1/traces"]
    assert len(exports) == 1
    scheme, token = exports[0]["headers"]["Authorization"].split(" ")
    claims = auth.verify(token)
    assert scheme == "Bearer"
    assert (claims["iss"], claims["typ"], claims["aud"]) == ("inventory", "service", "dashboard")
    auth.check_service_token_lifetime(claims)


def test_an_export_without_a_usable_key_goes_out_unsigned_and_does_not_raise(peer, settings, caplog):
    """Ensure a service that cannot sign still runs: the export is sent without a credential and a warning says so."""
    from chassis import auth

    settings.CHASSIS = {**settings.CHASSIS, "KEYS_DIR": "/dev/null/no-keys"}
    auth._service_tokens.clear()
    _export_one_span(telemetry.otlp_exporter(endpoint=f"{peer.url}/v1/traces"))
    auth._service_tokens.clear()
    exports = [r for r in peer.received if r["path"] == "/v1/traces"]
    assert len(exports) == 1 and "Authorization" not in exports[0]["headers"]
    assert "without a credential" in caplog.text
