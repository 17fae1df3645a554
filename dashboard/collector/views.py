"""The collector's HTTP surface: the OTLP receiver, and JSON reads for the pages and for scripts."""

from __future__ import annotations

import logging

from django.conf import settings
from django.http import HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from chassis.errors import error_body
from console import auth, peers

from . import exporters, metrics, otlp, selectors
from .services import spans_ingest

log = logging.getLogger("collector")


def _otlp_error(status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse(error_body(code, message), status=status)


@csrf_exempt  # the services post spans without a browser session; they authenticate with a service token
@require_POST
def otlp_traces(request):
    """``POST /v1/traces``: an OTLP/HTTP export (protobuf or JSON) → 200 with an empty response.

    401 without a valid exporter token, 403 when the export names a service the
    token's issuer does not own (:mod:`collector.exporters`); nothing is stored then.
    """
    try:
        identity = exporters.exporter_identity(request.META.get("HTTP_AUTHORIZATION", ""))
    except exporters.ExporterRefused as exc:
        log.info("refused an OTLP export: %s", exc.message)
        response = _otlp_error(exc.status, exc.code, exc.message)
        response["WWW-Authenticate"] = 'Bearer realm="lab"'
        return response
    limit = settings.TRACES_MAX_BODY_BYTES
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > limit:
        return _otlp_error(413, "payload_too_large", f"An export may be at most {limit} bytes; send smaller batches.")
    # Read the stream ourselves: request.body would apply the form-upload limit.
    body = request.read(limit + 1)
    if len(body) > limit:
        return _otlp_error(413, "payload_too_large", f"An export may be at most {limit} bytes; send smaller batches.")
    content_type = request.META.get("CONTENT_TYPE", "")
    try:
        body = otlp.decompress(body, request.META.get("HTTP_CONTENT_ENCODING", ""), limit=limit)
        export = otlp.decode(body, content_type)
        exporters.check_services(identity, otlp.services(export))
        rows, rejected, reason = otlp.rows(export)
    except otlp.PayloadTooLarge as exc:
        return _otlp_error(413, "payload_too_large", str(exc))
    except otlp.MalformedPayload as exc:
        log.info("refused an OTLP export: %s", exc)
        return _otlp_error(400, "malformed_otlp", str(exc))
    except exporters.ExporterRefused as exc:
        log.warning("refused an OTLP export: %s", exc.message)
        return _otlp_error(exc.status, exc.code, exc.message)
    spans_ingest(rows=rows)
    kind = otlp.JSON if otlp.media_type(content_type) == otlp.JSON else otlp.PROTOBUF
    return HttpResponse(otlp.encode_response(kind, rejected=rejected, message=reason), content_type=kind)


def _can_read(request) -> JsonResponse | None:
    if auth.can_read(request):
        return None
    return JsonResponse(error_body("not_authenticated", "Log in to the dashboard to read the lab."), status=403)


@require_GET
def trace_list_api(request):
    """``GET /api/traces/?service=&status=error&min_duration_ms=&request_id=&order_id=&limit=50``."""
    if (refused := _can_read(request)) is not None:
        return refused
    params = request.GET
    fields = {}
    try:
        if params.get("min_duration_ms"):
            fields["min_duration_ms"] = selectors.duration_filter(params["min_duration_ms"])
        if params.get("limit"):
            fields["limit"] = int(params["limit"])
    except ValueError:
        return JsonResponse(
            error_body(
                "invalid", "min_duration_ms is a finite number of milliseconds (at least 0); limit a whole number."
            ),
            status=400,
        )
    if params.get("status") not in (None, "", "error"):
        return JsonResponse(error_body("invalid", "status is 'error' or absent."), status=400)
    traces = selectors.trace_list(
        service=params.get("service", "")[:64],
        errors_only=params.get("status") == "error",
        request_id=params.get("request_id", "")[:64],
        order_id=params.get("order_id", "")[:32],
        **fields,
    )
    return JsonResponse({"count": len(traces), "results": traces})


@require_GET
def trace_detail_api(request, trace_id: str):
    """``GET /api/traces/<trace_id>/``: the trace as a tree of spans."""
    if (refused := _can_read(request)) is not None:
        return refused
    trace_id = trace_id.lower()
    if not selectors.trace_id_valid(trace_id):
        return JsonResponse(error_body("invalid", "A trace id is 32 hexadecimal characters, not all zero."), status=400)
    tree = selectors.trace_get(trace_id=trace_id)
    if tree is None:
        return JsonResponse(error_body("not_found", f"No span of trace {trace_id} is stored (yet)."), status=404)
    return JsonResponse(tree)


@require_GET
def metrics_summary_api(request):
    """``GET /api/metrics/summary/``: per service req/s, error ratio, p50/p95/p99 over the last minute."""
    if (refused := _can_read(request)) is not None:
        return refused
    return JsonResponse(metrics.summary(peers.fetch_metrics_text))
