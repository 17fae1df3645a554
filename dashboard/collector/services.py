"""Writes of the collector: store received spans, and keep the table bounded."""

from __future__ import annotations

import threading
import time

from django.conf import settings
from django.db import transaction
from django.db.models import Sum

from .models import Span

clock = time.time_ns  # injectable in tests

_since_prune = 0
_bytes_since_prune = 0
_pruned_once = False
_prune_lock = threading.Lock()


def spans_ingest(*, rows: list[dict]) -> int:
    """Insert span rows in bulk (a span sent twice is kept once); prune now and then. Returns rows given."""
    if not rows:
        return 0
    with transaction.atomic():
        Span.objects.bulk_create([Span(**row) for row in rows], batch_size=500, ignore_conflicts=True)
    _count_and_maybe_prune(len(rows), sum(row.get("size_bytes", 0) for row in rows))
    return len(rows)


def _count_and_maybe_prune(inserted: int, size: int = 0) -> None:
    global _since_prune, _bytes_since_prune, _pruned_once
    with _prune_lock:
        _since_prune += inserted
        _bytes_since_prune += size
        # Every TRACES_PRUNE_EVERY spans, or sooner when a tenth of the size budget has arrived since.
        due = (
            _since_prune >= settings.TRACES_PRUNE_EVERY
            or (settings.TRACES_KEEP_BYTES and _bytes_since_prune * 10 >= settings.TRACES_KEEP_BYTES)
            or not _pruned_once
        )
        if due:
            _since_prune, _bytes_since_prune, _pruned_once = 0, 0, True
    if due:
        spans_prune()


# One pass of the size prune looks at this many of the oldest rows at a time.
_SIZE_PRUNE_CHUNK = 1000


def spans_prune(*, keep: int | None = None, keep_minutes: int | None = None, keep_bytes: int | None = None) -> int:
    """Delete spans older than ``keep_minutes``, all but the newest ``keep``, and the oldest beyond ``keep_bytes``.

    Returns how many went. The first two run on indexed columns (start time,
    primary key): two range deletes, whatever the table size. The size bound
    sums ``size_bytes`` and, when over, deletes the oldest rows (by id, in
    chunks) until what is left fits.
    """
    keep = settings.TRACES_KEEP_SPANS if keep is None else keep
    keep_minutes = settings.TRACES_KEEP_MINUTES if keep_minutes is None else keep_minutes
    keep_bytes = settings.TRACES_KEEP_BYTES if keep_bytes is None else keep_bytes
    deleted = 0
    if keep_minutes:
        cutoff = clock() - keep_minutes * 60 * 1_000_000_000
        deleted += Span.objects.filter(start_ns__lt=cutoff).delete()[0]
    if keep:
        boundary = list(Span.objects.order_by("-id").values_list("id", flat=True)[keep : keep + 1])
        if boundary:
            deleted += Span.objects.filter(id__lte=boundary[0]).delete()[0]
    if keep_bytes:
        deleted += _prune_to_size(keep_bytes)
    return deleted


def _prune_to_size(keep_bytes: int) -> int:
    excess = (Span.objects.aggregate(total=Sum("size_bytes"))["total"] or 0) - keep_bytes
    deleted = 0
    while excess > 0:
        oldest = list(Span.objects.order_by("id").values_list("id", "size_bytes")[:_SIZE_PRUNE_CHUNK])
        if not oldest:
            break
        boundary = oldest[-1][0]
        for span_id, size in oldest:
            excess -= size
            if excess <= 0:
                boundary = span_id
                break
        deleted += Span.objects.filter(id__lte=boundary).delete()[0]
    return deleted


def reset_prune_counter() -> None:
    """Forget this process's insert count (tests)."""
    global _since_prune, _bytes_since_prune, _pruned_once
    with _prune_lock:
        _since_prune, _bytes_since_prune, _pruned_once = 0, 0, False
