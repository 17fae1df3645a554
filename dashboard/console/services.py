"""Writes of the console: recording the flows it ran."""

from __future__ import annotations

from django.db import transaction

from .flows import FlowResult
from .models import FlowRun

KEEP_FLOW_RUNS = 200


@transaction.atomic
def flow_run_record(*, result: FlowResult, started_by: str) -> FlowRun:
    """Store a finished flow and forget all but the newest runs."""
    run = FlowRun.objects.create(
        flow=result.flow.slug,
        title=result.flow.title,
        request_id=result.request_id,
        trace_id=result.trace_id,
        started_by=started_by,
        duration_ms=result.duration_ms,
        ok=result.ok,
        expected=result.flow.expected,
        outcome=result.outcome,
        customer=result.customer,
        hops=result.hops,
        order=result.order,
        notes=result.notes,
    )
    stale = FlowRun.objects.order_by("-started_at").values_list("id", flat=True)[KEEP_FLOW_RUNS:]
    FlowRun.objects.filter(id__in=list(stale)).delete()
    return run
