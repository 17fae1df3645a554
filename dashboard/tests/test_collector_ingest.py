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

from chassis.testing import service_token
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


def exporter_auth(service: str) -> dict:
    """The header a service's exporter sends: a service token it signs for the collector."""
    return {"HTTP_AUTHORIZATION": f"Bearer {service_token(caller=service, audience='dashboard')}"}


def post(client, body: bytes, content_type: str, *, exporter: str | None = "user", **headers):
    """POST an export as ``exporter`` would (None: with no credential at all)."""
    auth = exporter_auth(exporter) if exporter else {}
    return client.generic("POST", "/v1/traces", body, content_type=content_type, **{**auth, **headers})


def test_protobuf_export_is_stored(client):
    """Ensure a protobuf export is stored span by span and answered with an empty protobuf response."""
    root = span(ROOT, name="POST /api/orders/", duration_ms=40, lab__request_id="rid-1", url__path="/api/orders/17/")
    root.events.add(
        name="lab.fault", time_unix_nano=root.start_time_unix_nano + 5_000_000, attributes=[kv("kind", "latency")]
    )
    child = span(CHILD, parent=ROOT, name="saga.reserve", start_ms=5, duration_ms=20, error=True)
    response = post(
        client, export("order", [root, child]).SerializeToString(), "application/x-protobuf", exporter="order"
    )

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
    response = post(client, json.dumps(body).encode(), "application/json", exporter="payment")

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
    response = post(client, export("order", [one]).SerializeToString(), "application/x-protobuf", exporter="order")
    assert response.status_code == 200
    value = StoredSpan.objects.get(span_id=ROOT).attributes["deep"]
    for _ in range(otlp.MAX_VALUE_DEPTH):
        assert isinstance(value, list)
        value = value[0]
    assert value.startswith("[nested deeper than")


def test_an_export_without_a_credential_is_401_and_stores_nothing(client):
    """Ensure anyone who cannot show a service token cannot add spans to the traces."""
    response = post(client, export("user", [span(ROOT)]).SerializeToString(), "application/x-protobuf", exporter=None)
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert StoredSpan.objects.count() == 0


def test_a_token_for_another_audience_is_401(client):
    """Ensure a service token meant for a service (not the collector) is refused here."""
    token = service_token(caller="user", audience="order")
    response = post(
        client,
        export("user", [span(ROOT)]).SerializeToString(),
        "application/x-protobuf",
        exporter=None,
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert response.status_code == 401 and response.json()["code"] == "invalid_token"
    assert StoredSpan.objects.count() == 0


def test_spans_in_another_services_name_are_refused_with_403(client):
    """Ensure the order service cannot export spans as the payment service: 403, none of the export stored."""
    request = export("order", [span(ROOT)])
    request.resource_spans.extend(export("payment", [span(CHILD, name="POST /api/payments/charge/")]).resource_spans)
    response = post(client, request.SerializeToString(), "application/x-protobuf", exporter="order")
    assert response.status_code == 403
    assert response.json()["code"] == "forbidden_service" and "'payment'" in response.json()["message"]
    assert StoredSpan.objects.count() == 0


def test_an_export_without_a_service_name_is_refused(client):
    """Ensure spans naming no service are not stored under a made-up one."""
    request = export("user", [span(ROOT)])
    del request.resource_spans[0].resource.attributes[:]
    response = post(client, request.SerializeToString(), "application/x-protobuf", exporter="user")
    assert response.status_code == 403
    assert StoredSpan.objects.count() == 0


def test_the_order_services_worker_exports_under_its_own_name(client):
    """Ensure the Celery worker, which signs with the order service's key, may export as "worker"."""
    response = post(
        client, export("worker", [span(ROOT)]).SerializeToString(), "application/x-protobuf", exporter="order"
    )
    assert response.status_code == 200
    assert StoredSpan.objects.get().service == "worker"


def test_a_megabyte_attribute_is_cut_to_the_cap(client):
    """Ensure a 1 MB attribute value is stored cut to MAX_VALUE_CHARS, saying so, not whole."""
    from collector import otlp

    big = span(ROOT, **{"http__user_agent": "A" * 1_000_000})
    response = post(client, export("user", [big]).SerializeToString(), "application/x-protobuf")
    assert response.status_code == 200
    stored = StoredSpan.objects.get()
    value = stored.attributes["http.user_agent"]
    assert len(value) == otlp.MAX_VALUE_CHARS
    assert value.startswith("AAAA") and value.endswith("more characters cut by the collector]")
    assert stored.size_bytes < 2 * otlp.MAX_VALUE_CHARS


def test_attributes_events_and_spans_per_export_are_capped(client, monkeypatch):
    """Ensure one span keeps at most MAX_ATTRIBUTES attributes and MAX_EVENTS events, and an export its span cap."""
    from collector import otlp

    monkeypatch.setattr(otlp, "MAX_SPANS_PER_EXPORT", 3)
    crowded = span(ROOT, **{f"a{i}": i for i in range(otlp.MAX_ATTRIBUTES + 50)})
    for i in range(otlp.MAX_EVENTS + 20):
        crowded.events.add(name=f"e{i}", time_unix_nano=BASE)
    spans = [crowded] + [span(f"{i + 2:016x}", parent=ROOT) for i in range(4)]
    response = post(client, export("user", spans).SerializeToString(), "application/x-protobuf")
    assert response.status_code == 200
    answer = ExportTraceServiceResponse()
    answer.ParseFromString(response.content)
    assert answer.partial_success.rejected_spans == 2
    assert "at most 3 spans" in answer.partial_success.error_message
    assert StoredSpan.objects.count() == 3
    stored = StoredSpan.objects.get(span_id=ROOT)
    assert len(stored.attributes) == otlp.MAX_ATTRIBUTES
    assert len(stored.events) == otlp.MAX_EVENTS


def test_stored_spans_are_pruned_by_total_size(client, settings):
    """Ensure the oldest spans go once the stored ones add up to more than TRACES_KEEP_BYTES; the newest stay."""
    settings.TRACES_KEEP_BYTES = 20_000
    for i in range(10):  # ten exports of one ~4 KB span each: 40 KB in all
        body = export("user", [span(f"{i + 1:016x}", start_ms=i, payload="p" * 3800)]).SerializeToString()
        assert post(client, body, "application/x-protobuf").status_code == 200
    sizes = list(StoredSpan.objects.order_by("id").values_list("span_id", "size_bytes"))
    assert sum(size for _, size in sizes) <= 20_000
    assert 0 < len(sizes) < 10
    assert sizes[-1][0] == f"{10:016x}"  # the newest is kept
