"""The OTLP/HTTP receiver: protobuf and JSON in, spans stored, bad payloads refused with a reason."""

from __future__ import annotations

import gzip
import json
import time

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from collector.models import Span as StoredSpan

pytestmark = pytest.mark.django_db

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
ROOT = "00f067aa0ba902b7"
CHILD = "00f067aa0ba902b8"
# Recent times: spans older than the retention window are pruned as they arrive.
BASE = (time.time_ns() // 1_000_000_000 - 10) * 1_000_000_000


def kv(key, value) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=str(value)))


def export(service: str, spans: list[Span]) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    resource = ResourceSpans()
    resource.resource.attributes.append(kv("service.name", service))
    scope = ScopeSpans()
    scope.spans.extend(spans)
    resource.scope_spans.append(scope)
    request.resource_spans.append(resource)
    return request


def span(
    span_id: str,
    *,
    parent: str = "",
    name: str = "GET /api/orders/",
    start_ms: int = 0,
    duration_ms: int = 10,
    error: bool = False,
    trace_id: str = TRACE,
    **attributes,
) -> Span:
    base = BASE
    out = Span(
        trace_id=bytes.fromhex(trace_id),
        span_id=bytes.fromhex(span_id),
        parent_span_id=bytes.fromhex(parent) if parent else b"",
        name=name,
        kind=Span.SPAN_KIND_SERVER,
        start_time_unix_nano=base + start_ms * 1_000_000,
        end_time_unix_nano=base + (start_ms + duration_ms) * 1_000_000,
    )
    out.status.CopyFrom(
        Status(code=Status.STATUS_CODE_ERROR if error else Status.STATUS_CODE_OK, message="boom" if error else "")
    )
    out.attributes.extend(kv(k.replace("__", "."), v) for k, v in attributes.items())
    return out


def post(client, body: bytes, content_type: str, **headers):
    return client.generic("POST", "/v1/traces", body, content_type=content_type, **headers)


def test_protobuf_export_is_stored(client):
    """Ensure a protobuf export is stored span by span and answered with an empty protobuf response."""
    root = span(ROOT, name="POST /api/orders/", duration_ms=40, lab__request_id="rid-1", url__path="/api/orders/17/")
    root.events.add(
        name="lab.fault", time_unix_nano=root.start_time_unix_nano + 5_000_000, attributes=[kv("kind", "latency")]
    )
    child = span(CHILD, parent=ROOT, name="saga.reserve", start_ms=5, duration_ms=20, error=True)
    response = post(client, export("order", [root, child]).SerializeToString(), "application/x-protobuf")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/x-protobuf"
    ExportTraceServiceResponse().ParseFromString(response.content)  # a valid (empty) answer
    stored = {s.span_id: s for s in StoredSpan.objects.all()}
    assert set(stored) == {ROOT, CHILD}
    assert stored[ROOT].service == "order"
    assert stored[ROOT].trace_id == TRACE
    assert stored[ROOT].kind == "server"
    assert stored[ROOT].duration_ms == 40
    assert stored[ROOT].request_id == "rid-1"
    assert stored[ROOT].order_id == "17"
    assert stored[ROOT].events[0]["name"] == "lab.fault"
    assert stored[ROOT].events[0]["attributes"] == {"kind": "latency"}
    assert stored[CHILD].parent_span_id == ROOT
    assert stored[CHILD].status == "error"
    assert stored[CHILD].status_message == "boom"


def test_json_export_with_hex_ids_is_stored(client):
    """Ensure OTLP JSON (ids in hex, lowerCamelCase, int64 as strings) is understood."""
    body = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "payment"}}]},
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": TRACE,
                                "spanId": ROOT,
                                "parentSpanId": "",
                                "name": "POST /internal/charges/",
                                "kind": 2,
                                "startTimeUnixNano": str(BASE),
                                "endTimeUnixNano": str(BASE + 25_000_000),
                                "attributes": [
                                    {"key": "http.status_code", "value": {"intValue": "402"}},
                                    {"key": "retry", "value": {"boolValue": True}},
                                ],
                                "status": {"code": 2},
                                "events": [
                                    {"name": "lab.retry", "timeUnixNano": str(BASE + 10_000_000), "attributes": []}
                                ],
                            }
                        ]
                    }
                ],
            }
        ]
    }
    response = post(client, json.dumps(body).encode(), "application/json")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json() == {}
    stored = StoredSpan.objects.get()
    assert (stored.trace_id, stored.span_id, stored.service) == (TRACE, ROOT, "payment")
    assert stored.duration_ms == 25
    assert stored.status == "error"
    assert stored.attributes == {"http.status_code": 402, "retry": True}
    assert stored.events[0]["name"] == "lab.retry"


def test_gzip_body_is_accepted(client):
    """Ensure an exporter configured with gzip compression is understood."""
    body = gzip.compress(export("user", [span(ROOT)]).SerializeToString())
    response = post(client, body, "application/x-protobuf", HTTP_CONTENT_ENCODING="gzip")
    assert response.status_code == 200
    assert StoredSpan.objects.count() == 1


@pytest.mark.parametrize(
    "body, content_type, words",
    [
        (b"\xff\xff\xff\xff not protobuf", "application/x-protobuf", "protobuf"),
        (b"{not json", "application/json", "JSON"),
        (b'{"resourceSpans": {"a": 1}}', "application/json", "list"),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}', "application/json", "hex"),
        (b"[1, 2]", "application/json", "resourceSpans"),
        (b"spans", "text/plain", "Content-Type"),
    ],
)
def test_malformed_payload_is_400_and_the_collector_keeps_serving(client, body, content_type, words):
    """Ensure garbage gets a 400 that says what is wrong, and the next good export is stored."""
    response = post(client, body, content_type)
    assert response.status_code == 400
    assert response.json()["code"] == "malformed_otlp"
    assert words in response.json()["message"]

    response = post(client, export("user", [span(ROOT)]).SerializeToString(), "application/x-protobuf")
    assert response.status_code == 200
    assert StoredSpan.objects.count() == 1


def test_body_too_large_is_413(client, settings):
    """Ensure the collector refuses an export bigger than TRACES_MAX_BODY_BYTES."""
    settings.TRACES_MAX_BODY_BYTES = 300
    big = export("user", [span(f"{i + 1:016x}", name="x" * 60) for i in range(10)]).SerializeToString()
    assert len(big) > 300
    response = post(client, big, "application/x-protobuf")
    assert response.status_code == 413
    assert StoredSpan.objects.count() == 0


def test_gzip_bomb_is_413(client, settings):
    """Ensure a small compressed body cannot inflate past the limit."""
    settings.TRACES_MAX_BODY_BYTES = 10_000
    response = post(client, gzip.compress(b"\0" * 1_000_000), "application/x-protobuf", HTTP_CONTENT_ENCODING="gzip")
    assert response.status_code == 413


def test_a_span_sent_twice_is_kept_once(client):
    """Ensure an exporter's retry does not duplicate spans."""
    body = export("user", [span(ROOT)]).SerializeToString()
    assert post(client, body, "application/x-protobuf").status_code == 200
    assert post(client, body, "application/x-protobuf").status_code == 200
    assert StoredSpan.objects.count() == 1


def test_spans_with_bad_ids_are_rejected_and_counted(client):
    """Ensure a span without valid ids is left out and reported in partial_success."""
    bad = span(ROOT)
    bad.trace_id = b"\x01\x02"
    response = post(client, export("user", [bad, span(CHILD)]).SerializeToString(), "application/x-protobuf")
    assert response.status_code == 200
    answer = ExportTraceServiceResponse()
    answer.ParseFromString(response.content)
    assert answer.partial_success.rejected_spans == 1
    assert StoredSpan.objects.get().span_id == CHILD


def test_only_post_is_accepted(client):
    """Ensure GET on the receiver is a 405, not a crash."""
    assert client.get("/v1/traces").status_code == 405


def test_receiver_needs_no_csrf_token(client):
    """Ensure the services can post without a browser session (CSRF-exempt)."""
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    response = post(strict, export("user", [span(ROOT)]).SerializeToString(), "application/x-protobuf")
    assert response.status_code == 200


def test_spans_older_than_the_retention_window_are_dropped_on_arrival(client):
    """Ensure a span from before the retention window does not linger (the first export of a process prunes)."""
    old = span(ROOT, start_ms=-2 * 3600 * 1000)
    assert (
        post(client, export("user", [old, span(CHILD)]).SerializeToString(), "application/x-protobuf").status_code
        == 200
    )
    assert list(StoredSpan.objects.values_list("span_id", flat=True)) == [CHILD]


def test_deeply_nested_json_export_is_a_400(client):
    """Ensure JSON nested thousands deep is refused as malformed, not a 500."""
    body = ("[" * 100_000 + "]" * 100_000).encode()
    response = post(client, b'{"resourceSpans": ' + body + b"}", "application/json")
    assert response.status_code == 400 and response.json()["code"] == "malformed_otlp"


def test_deeply_nested_attribute_values_are_cut_at_a_bounded_depth(client):
    """Ensure an attribute nested deeper than MAX_VALUE_DEPTH is stored with a marker, not walked to the bottom."""
    from collector import otlp
    from collector.models import Span as StoredSpan

    nested = AnyValue(string_value="bottom")
    for _ in range(40):
        outer = AnyValue()
        outer.array_value.values.append(nested)
        nested = outer
    one = span(ROOT)
    one.attributes.append(KeyValue(key="deep", value=nested))
    response = post(client, export("order", [one]).SerializeToString(), "application/x-protobuf")
    assert response.status_code == 200
    value = StoredSpan.objects.get(span_id=ROOT).attributes["deep"]
    for _ in range(otlp.MAX_VALUE_DEPTH):
        assert isinstance(value, list)
        value = value[0]
    assert value.startswith("[nested deeper than")
