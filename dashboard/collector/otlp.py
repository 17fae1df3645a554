"""OTLP/HTTP trace payloads → plain span rows.

Two encodings reach ``/v1/traces``: binary protobuf (what the OpenTelemetry
SDK's OTLP exporter sends) and OTLP JSON. OTLP JSON is the protobuf JSON
mapping with one twist: trace and span ids are hex strings, not base64, so
they are converted before the standard parser sees them.

:func:`decode` raises :class:`MalformedPayload` with a message a person can act
on; it never lets a parser exception escape.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import math
import re
import zlib

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

PROTOBUF = "application/x-protobuf"
JSON = "application/json"

KINDS = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
STATUSES = {0: "unset", 1: "ok", 2: "error"}
ORDER_ID_KEYS = ("lab.order_id", "order.id", "order_id")
URL_KEYS = ("url.path", "http.target", "url.full", "http.url")
ORDER_IN_PATH = re.compile(r"/orders/(\d{1,20})(?:/|$|\?)")
_ID_FIELDS = ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id")


class MalformedPayload(ValueError):
    """The body is not an OTLP trace export; the message says what is wrong."""


class PayloadTooLarge(ValueError):
    pass


def media_type(content_type: str) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def decompress(body: bytes, encoding: str, *, limit: int) -> bytes:
    """Undo ``Content-Encoding: gzip|deflate``, refusing to inflate past ``limit`` bytes."""
    encoding = (encoding or "").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "deflate"):
        raise MalformedPayload(f"Content-Encoding {encoding!r} is not supported (use gzip, deflate or none).")
    inflater = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    try:
        out = inflater.decompress(body, limit + 1)
    except (zlib.error, gzip.BadGzipFile) as exc:
        raise MalformedPayload(f"The body is not valid {encoding} data: {exc}.") from exc
    if len(out) > limit or inflater.unconsumed_tail:
        raise PayloadTooLarge(f"The decompressed body is larger than {limit} bytes.")
    return out


def decode(body: bytes, content_type: str) -> ExportTraceServiceRequest:
    """Parse an export request in either encoding."""
    kind = media_type(content_type)
    request = ExportTraceServiceRequest()
    if kind == PROTOBUF:
        try:
            request.ParseFromString(body)
        except (DecodeError, RuntimeWarning, ValueError, RecursionError) as exc:
            raise MalformedPayload(f"The body is not a valid protobuf ExportTraceServiceRequest: {exc}.") from exc
        return request
    if kind == JSON:
        try:
            data = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise MalformedPayload(f"The body is not valid JSON: {exc}.") from exc
        except RecursionError as exc:
            raise MalformedPayload("The JSON is nested too deeply to be an OTLP export.") from exc
        if not isinstance(data, dict):
            raise MalformedPayload("An OTLP JSON export is an object with a 'resourceSpans' list.")
        try:
            _hex_ids_to_base64(data)
            json_format.ParseDict(data, request, ignore_unknown_fields=True)
        except (json_format.ParseError, MalformedPayload, TypeError, ValueError, AttributeError, RecursionError) as exc:
            raise MalformedPayload(f"The JSON is not an OTLP trace export: {exc}.") from exc
        return request
    raise MalformedPayload(f"Content-Type must be {PROTOBUF} or {JSON}, not {kind or 'missing'!r}.")


def encode_response(kind: str, *, rejected: int = 0, message: str = "") -> bytes:
    response = ExportTraceServiceResponse()
    if rejected:
        response.partial_success.rejected_spans = rejected
        response.partial_success.error_message = message
    if media_type(kind) == JSON:
        return json.dumps(json_format.MessageToDict(response)).encode()
    return response.SerializeToString()


def _hex_ids_to_base64(data: dict) -> None:
    """OTLP JSON carries ids as hex; protobuf's JSON mapping expects base64."""
    resource_spans = data.get("resourceSpans", data.get("resource_spans", []))
    if not isinstance(resource_spans, list):
        raise MalformedPayload("'resourceSpans' must be a list.")
    for resource in resource_spans:
        for scope in _list(resource, "scopeSpans", "scope_spans"):
            for span in _list(scope, "spans"):
                _convert_ids(span)
                for link in _list(span, "links"):
                    _convert_ids(link)


def _list(obj, *keys) -> list:
    if not isinstance(obj, dict):
        raise MalformedPayload("Expected an object inside 'resourceSpans'.")
    for key in keys:
        if key in obj:
            value = obj[key]
            if not isinstance(value, list):
                raise MalformedPayload(f"'{key}' must be a list.")
            return value
    return []


def _convert_ids(obj) -> None:
    if not isinstance(obj, dict):
        raise MalformedPayload("A span must be an object.")
    for key in _ID_FIELDS:
        value = obj.get(key)
        if isinstance(value, str) and value:
            try:
                obj[key] = base64.b64encode(bytes.fromhex(value)).decode()
            except ValueError as exc:
                raise MalformedPayload(f"{key} {value[:40]!r} is not hex.") from exc


# Attribute values nested deeper than this (arrays in arrays...) are kept as a marker, not walked.
MAX_VALUE_DEPTH = 8
# What one span may bring, whatever the exporter sends (the OpenTelemetry SDK's own span limits
# are 128 attributes and 128 events; a value's length it leaves unbounded, so the collector cuts it).
MAX_VALUE_CHARS = 4096  # a string (or hex of bytes) longer than this is cut, with a marker saying so
MAX_KEY_CHARS = 255
MAX_ATTRIBUTES = 128  # per span, per event, per resource; the rest are left out
MAX_ARRAY_ITEMS = 128  # elements of one array or key-value list value
MAX_EVENTS = 128
MAX_SPANS_PER_EXPORT = 2048  # beyond this the spans are rejected (partial_success); the SDK sends 512 at most
# A stored row's size is counted as its JSON columns and strings plus this much for the rest.
ROW_OVERHEAD_BYTES = 200


def cut(text: str, limit: int = MAX_VALUE_CHARS) -> str:
    """``text`` if it fits in ``limit`` characters; else its start and a marker, ``limit`` characters in all."""
    if len(text) <= limit:
        return text
    marker = f"… [{len(text) - limit} more characters cut by the collector]"
    return text[: max(limit - len(marker), 0)] + marker


def any_value(value, depth: int = 0):
    """An OTLP ``AnyValue`` as the Python value it holds (nested at most MAX_VALUE_DEPTH deep, strings cut)."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind in ("array_value", "kvlist_value") and depth >= MAX_VALUE_DEPTH:
        return f"[nested deeper than {MAX_VALUE_DEPTH} levels: left out]"
    if kind == "array_value":
        return [any_value(v, depth + 1) for v in value.array_value.values[:MAX_ARRAY_ITEMS]]
    if kind == "kvlist_value":
        return {
            cut(kv.key, MAX_KEY_CHARS): any_value(kv.value, depth + 1)
            for kv in value.kvlist_value.values[:MAX_ARRAY_ITEMS]
        }
    if kind == "bytes_value":
        return cut(binascii.hexlify(value.bytes_value[: MAX_VALUE_CHARS // 2 + 1]).decode())
    if kind == "string_value":
        return cut(value.string_value)
    if kind == "double_value" and not math.isfinite(value.double_value):
        return str(value.double_value)  # JSON columns refuse NaN and infinities
    return getattr(value, kind)


def attributes(key_values) -> dict:
    return {cut(kv.key, MAX_KEY_CHARS): any_value(kv.value) for kv in key_values[:MAX_ATTRIBUTES]}


def service_of(resource_spans) -> str:
    """The ``service.name`` a resource names ("unknown" when it names none)."""
    for kv in resource_spans.resource.attributes:
        if kv.key == "service.name":
            return str(any_value(kv.value) or "unknown")[:64]
    return "unknown"


def services(request: ExportTraceServiceRequest) -> set[str]:
    """Every service an export's spans are in the name of."""
    return {service_of(r) for r in request.resource_spans if any(s.spans for s in r.scope_spans)}


def stored_size(row: dict) -> int:
    """About how many bytes a span row takes in the table (its JSON, its strings, a fixed overhead)."""
    return (
        len(json.dumps(row["attributes"]))
        + len(json.dumps(row["events"]))
        + len(row["name"])
        + len(row["status_message"])
        + ROW_OVERHEAD_BYTES
    )


def order_id_from(attrs: dict) -> str:
    """The order a span worked on: an order id attribute, else an /orders/<id>/ URL; "" when neither."""
    for key in ORDER_ID_KEYS:
        if attrs.get(key) not in (None, ""):
            return str(attrs[key])[:32]
    for key in URL_KEYS:
        match = ORDER_IN_PATH.search(str(attrs.get(key) or ""))
        if match:
            return match.group(1)
    return ""


def rows(request: ExportTraceServiceRequest) -> tuple[list[dict], int, str]:
    """Span rows of an export, plus how many spans were rejected and why (first reason)."""
    out, rejected, reason, seen = [], 0, "", 0
    for resource_spans in request.resource_spans:
        service = service_of(resource_spans)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                seen += 1
                if seen > MAX_SPANS_PER_EXPORT:
                    rejected += 1
                    reason = reason or f"an export may carry at most {MAX_SPANS_PER_EXPORT} spans; send smaller batches"
                    continue
                trace_id, span_id = span.trace_id.hex(), span.span_id.hex()
                if len(trace_id) != 32 or len(span_id) != 16 or not int(trace_id, 16) or not int(span_id, 16):
                    rejected += 1
                    reason = reason or "a span has a missing or malformed trace_id/span_id"
                    continue
                parent = span.parent_span_id.hex()
                start, end = int(span.start_time_unix_nano), int(span.end_time_unix_nano)
                end = max(end, start)
                attrs = attributes(span.attributes)
                row = {
                    "trace_id": trace_id,
                    "span_id": span_id,
                    "parent_span_id": parent if len(parent) == 16 and int(parent, 16) else "",
                    "service": service,
                    "name": span.name[:255] or "(unnamed)",
                    "kind": KINDS.get(span.kind, "unspecified"),
                    "start_ns": start,
                    "end_ns": end,
                    "duration_ms": round((end - start) / 1e6, 3),
                    "status": STATUSES.get(span.status.code, "unset"),
                    "status_message": span.status.message[:255],
                    "request_id": str(attrs.get("lab.request_id") or "")[:64],
                    "order_id": order_id_from(attrs),
                    "attributes": attrs,
                    "events": [
                        {
                            "name": cut(e.name, MAX_KEY_CHARS),
                            "time_ns": int(e.time_unix_nano),
                            "attributes": attributes(e.attributes),
                        }
                        for e in span.events[:MAX_EVENTS]
                    ],
                }
                row["size_bytes"] = stored_size(row)
                out.append(row)
    return out, rejected, reason
