"""Small formatting helpers for the console's templates."""

from __future__ import annotations

import time

from django import template
from django.utils.html import conditional_escape
from django.utils.safestring import mark_safe

from chassis import parts

register = template.Library()

SERVICE_CLASSES = (*parts.SERVICE_NAMES, "worker", parts.DASHBOARD.name)


@register.filter
def rate(value) -> str:
    """Requests per second, or an em dash while there is no number yet."""
    if value is None:
        return "—"
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


@register.filter
def percent(value) -> str:
    if value is None:
        return "—"
    return f"{value * 100:.0f}%" if value == 0 or value >= 0.1 else f"{value * 100:.1f}%"


@register.filter
def ms(value) -> str:
    if value is None:
        return "—"
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}"


@register.filter
def svc_class(service: str) -> str:
    return f"svc-{service}" if service in SERVICE_CLASSES else "svc-other"


@register.filter
def fault_summary(fault: dict) -> str:
    """One line a student can read: what the fault does, how often, where, for how long."""
    kind = fault.get("kind", "?")
    if kind == "latency":
        what = f"latency {fault.get('delay_ms', 0)} ms"
        if fault.get("jitter_ms"):
            what += f" ± {fault['jitter_ms']}"
    elif kind == "error":
        what = f"HTTP {fault.get('status', 503)} errors"
    elif kind == "outage":
        what = "outage: 503 to everything"
    elif kind == "database":
        mode = fault.get("mode") or "fail"
        what = "database queries fail" if mode == "fail" else f"database slowed {fault.get('delay_ms', 0)} ms"
    elif kind == "dependency":
        mode = fault.get("mode") or "fail"
        what = f"calls to {fault.get('target', '?')} " + (
            f"delayed {fault.get('delay_ms', 0)} ms" if mode == "delay" else ("hang" if mode == "hang" else "fail")
        )
    else:
        what = kind
    parts = [what]
    probability = fault.get("probability", 1.0)
    if kind != "outage" and probability is not None and probability < 1:
        parts.append(f"{probability * 100:.0f}% of requests")
    scope = " ".join(x for x in (fault.get("method") or "", fault.get("path_prefix") or "") if x)
    if scope:
        parts.append(f"only {scope}")
    if fault.get("expires_at"):
        left = int(fault["expires_at"] - time.time())
        parts.append(f"clears in {left} s" if left > 0 else "clearing")
    return " · ".join(parts)


@register.filter
def get(mapping, key):
    if isinstance(mapping, dict):
        return mapping.get(key)
    return None


@register.filter
def event_class(name: str) -> str:
    if name == "lab.fault":
        return "fault"
    if name in ("lab.retry", "lab.breaker_rejected", "lab.bulkhead_rejected", "lab.fallback"):
        return "retry"
    if name.startswith("saga."):
        return "saga"
    return ""


@register.filter
def cents(value) -> str:
    try:
        return f"{int(value) / 100:.2f}"
    except (TypeError, ValueError):
        return "—"


@register.filter
def fit(detail, state) -> str:
    """A map node's detail, cut so that it fits on the line after the state word."""
    room = 25 - len(str(state or ""))  # the state word is bold capitals: wider than the detail's letters
    detail = str(detail or "")
    return detail if len(detail) <= room else detail[: room - 1].rstrip() + "…"


@register.filter
def get_link(links, service: str):
    """The browser links of ``service`` from the context's ``service_links``."""
    return next((link for link in links or [] if link["name"] == service), None)


@register.filter
def break_after_slashes(value) -> str:
    """A path that may wrap after each ``/`` (a ``<wbr>``), not in the middle of a word; escaped first."""
    return mark_safe("/<wbr>".join(conditional_escape(part) for part in str(value).split("/")))
