"""Reads of the collector: recent traces, and one trace as a tree ready for a waterfall."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from urllib.parse import urlsplit

from django.db.models import Count, F, Max, Min, Q

from .models import Span

TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
MAX_LIST = 200


def trace_id_valid(value: str) -> bool:
    return bool(TRACE_ID.match(value or "")) and int(value, 16) != 0


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).isoformat(timespec="milliseconds")


# The service name of the order service's Celery worker: a trace it starts on its own (no parent span,
# so no request queued it) is one of its periodic jobs (recovering sagas, expiring reservations...).
BACKGROUND_SERVICE = "worker"


def _background_traces():
    return Span.objects.filter(service=BACKGROUND_SERVICE, parent_span_id="").values("trace_id")


def http_status(attributes: dict) -> int | None:
    """The HTTP status a span's request was answered with (either semantic-convention name), if any."""
    for key in ("http.response.status_code", "http.status_code"):
        value = (attributes or {}).get(key)
        if isinstance(value, (int, str)) and str(value).isdigit():
            return int(value)
    return None


def trace_list(
    *,
    service: str = "",
    errors_only: bool = False,
    min_duration_ms: float | None = None,
    request_id: str = "",
    order_id: str = "",
    background: bool = True,
    limit: int = 50,
) -> list[dict]:
    """The most recent traces (newest first) matching every filter given.

    Each: ``trace_id, root {name, service, http_status}, services, span_count,
    duration_ms, error, background, start`` (ISO time) and ``start_ns``.
    ``background=False`` leaves out the worker's periodic jobs (see
    :data:`BACKGROUND_SERVICE`). ``error`` is true when a span failed;
    ``root.http_status`` is what the root's request was answered (a server span
    answering 4xx is not an error to OpenTelemetry, but it is what the caller got).
    """
    limit = max(1, min(int(limit), MAX_LIST))
    spans = Span.objects.all()
    for field, value in (("service", service), ("request_id", request_id), ("order_id", order_id)):
        if value:
            spans = spans.filter(trace_id__in=Span.objects.filter(**{field: value}).values("trace_id"))
    if not background:
        spans = spans.exclude(trace_id__in=_background_traces())
    traces = spans.values("trace_id").annotate(
        start=Min("start_ns"), end=Max("end_ns"), span_count=Count("id"), errors=Count("id", filter=Q(status="error"))
    )
    if errors_only:
        traces = traces.filter(errors__gt=0)
    if min_duration_ms:
        traces = traces.annotate(length=F("end") - F("start")).filter(length__gte=int(min_duration_ms * 1_000_000))
    traces = list(traces.order_by("-start")[:limit])
    if not traces:
        return []
    by_trace: dict[str, list[dict]] = {}
    members = Span.objects.filter(trace_id__in=[t["trace_id"] for t in traces]).values(
        "trace_id", "span_id", "parent_span_id", "service", "name", "start_ns"
    )
    for span in members:
        by_trace.setdefault(span["trace_id"], []).append(span)
    roots_of = {}
    for t in traces:
        spans_of = by_trace.get(t["trace_id"], [])
        ids = {s["span_id"] for s in spans_of}
        roots = sorted((s for s in spans_of if s["parent_span_id"] not in ids), key=lambda s: s["start_ns"])
        roots_of[t["trace_id"]] = roots[0] if roots else None
    root_filter = Q(pk__in=[])
    for trace_id, root in roots_of.items():
        if root:
            root_filter |= Q(trace_id=trace_id, span_id=root["span_id"])
    root_attributes = {
        (r["trace_id"], r["span_id"]): r["attributes"]
        for r in Span.objects.filter(root_filter).values("trace_id", "span_id", "attributes")
    }
    out = []
    for t in traces:
        spans_of = by_trace.get(t["trace_id"], [])
        root = roots_of[t["trace_id"]]
        status = http_status(root_attributes.get((t["trace_id"], root["span_id"]), {})) if root else None
        out.append(
            {
                "trace_id": t["trace_id"],
                "root": {"name": root["name"], "service": root["service"], "http_status": status} if root else None,
                "complete": bool(root) and not root["parent_span_id"],
                "services": sorted({s["service"] for s in spans_of}),
                "span_count": t["span_count"],
                "duration_ms": round((t["end"] - t["start"]) / 1e6, 3),
                "error": t["errors"] > 0,
                "background": bool(root) and root["service"] == BACKGROUND_SERVICE and not root["parent_span_id"],
                "start": _iso(t["start"]),
                "start_ns": t["start"],
            }
        )
    return out


def trace_get(*, trace_id: str) -> dict | None:
    """One trace as a tree, or None when no span of it is stored."""
    return traces_tree(trace_ids=[trace_id])


def trace_ids_for_request(*, request_id: str) -> list[str]:
    """The traces a request id appears in, oldest first (a flow is usually one)."""
    rows = (
        Span.objects.filter(request_id=request_id).values("trace_id").annotate(start=Min("start_ns")).order_by("start")
    )
    return [r["trace_id"] for r in rows[:20]]


def duration_filter(value: str) -> float:
    """A ``min_duration_ms`` filter: a finite number of milliseconds, at least 0; ValueError otherwise."""
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"min_duration_ms must be a finite number of milliseconds, at least 0; got {value[:20]!r}")
    return number


# Real traces nest a dozen spans deep; stored spans can claim any parent chain.
MAX_TREE_DEPTH = 64


def _depths(nodes: dict) -> dict:
    """Each span's depth below its root (0 for a root), found without recursion; None on or into a loop."""
    depths: dict = {}
    for start in nodes:
        chain: list = []
        seen: set = set()
        key = start
        while True:
            if key in depths:
                base = depths[key]
                break
            parent_id = nodes[key]["parent_span_id"]
            parent = (key[0], parent_id) if parent_id else None
            if parent not in nodes:  # a root: no parent, or its parent never arrived
                depths[key] = base = 0
                break
            if key in seen:  # a loop of parents: no span on it (or leading to it) has a root
                base = None
                break
            seen.add(key)
            chain.append(key)
            key = parent
        for offset, chained in enumerate(reversed(chain), start=1):
            depths[chained] = None if base is None else base + offset
    return depths


def traces_tree(*, trace_ids: list[str]) -> dict | None:
    """The spans of one or more traces as one forest, offsets from the earliest span.

    Each node: ``span_id, parent_span_id, service, name, kind, status,
    status_message, offset_ms, duration_ms, attributes, events`` (each with its
    own ``offset_ms``) and ``children``, sorted by start. A span whose parent
    never arrived is shown as a root (``orphan: true``).
    """
    spans = list(Span.objects.filter(trace_id__in=trace_ids).order_by("start_ns", "id"))
    if not spans:
        return None
    start = min(s.start_ns for s in spans)
    end = max(s.end_ns for s in spans)
    nodes = {}
    for s in spans:
        nodes[(s.trace_id, s.span_id)] = {
            "trace_id": s.trace_id,
            "span_id": s.span_id,
            "parent_span_id": s.parent_span_id or None,
            "service": s.service,
            "name": s.name,
            "kind": s.kind,
            "status": s.status,
            "status_message": s.status_message,
            "offset_ms": round((s.start_ns - start) / 1e6, 3),
            "duration_ms": s.duration_ms,
            "attributes": s.attributes,
            "events": [
                {**e, "offset_ms": round((int(e.get("time_ns", s.start_ns)) - start) / 1e6, 3)} for e in s.events
            ],
            "children": [],
        }
    roots = []
    depths = _depths(nodes)
    for key, node in nodes.items():
        parent = nodes.get((key[0], node["parent_span_id"])) if node["parent_span_id"] else None
        depth = depths.get(key)
        if parent is None or depth is None:  # no parent stored, or a loop of parents
            node["orphan"] = bool(node["parent_span_id"])
            roots.append(node)
        elif depth % MAX_TREE_DEPTH == 0:
            # A chain deeper than any real call path: it goes on as a new root, so that the
            # tree (and the JSON and the page drawn from it) stays MAX_TREE_DEPTH deep at most.
            node["deep"] = depth
            roots.append(node)
        else:
            parent["children"].append(node)
    return {
        "trace_id": trace_ids[0] if len(trace_ids) == 1 else None,
        "trace_ids": trace_ids,
        "start": _iso(start),
        "duration_ms": round((end - start) / 1e6, 3),
        "span_count": len(spans),
        "services": sorted({s.service for s in spans}),
        "error": any(s.status == "error" for s in spans),
        "spans": roots,
    }


HTTP_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}


def span_label(node: dict) -> str:
    """A span's name, with the URL path for client spans the HTTP instrumentation names only by method."""
    name = node["name"]
    if name in HTTP_METHODS:
        url = node["attributes"].get("url.full") or node["attributes"].get("http.url") or ""
        path = urlsplit(str(url)).path
        if path:
            return f"{name} {path}" + (" →" if node["kind"] == "client" else "")
    return name


def waterfall_rows(tree: dict) -> list[dict]:
    """The tree flattened depth-first, with ``depth`` and bar geometry in percent of the whole."""
    total = tree["duration_ms"] or 1.0
    rows: list[dict] = []

    stack = [(root, 0) for root in reversed(tree["spans"])]
    while stack:  # depth first, without recursion
        node, depth = stack.pop()
        left = node["offset_ms"] / total * 100
        width = max(node["duration_ms"] / total * 100, 0.3)
        rows.append(
            {
                **{k: v for k, v in node.items() if k != "children"},
                "depth": depth,
                "label": span_label(node),
                "http_status": http_status(node["attributes"]),
                "left_pct": round(min(left, 99.7), 3),
                "width_pct": round(min(width, 100 - min(left, 99.7)), 3),
                "marks": [
                    {**e, "left_pct": round(min(max(e["offset_ms"] / total * 100, 0), 100), 3)} for e in node["events"]
                ],
            }
        )
        stack.extend((child, depth + 1) for child in reversed(node["children"]))
    return rows
