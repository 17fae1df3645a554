"""Writes of the collector: store received spans, and keep the table bounded."""

from __future__ import annotations

import threading
import time

from django.conf import settings
from django.db import transaction

from .models import Span

clock = time.time_ns  # injectable in tests

_since_prune = 0
_pruned_once = False
_prune_lock = threading.Lock()


def spans_ingest(*, rows: list[dict]) -> int:
    """Insert span rows in bulk (a span sent twice is kept once); prune now and then. Returns rows given."""
    if not rows:
        return 0
    with transaction.atomic():
        Span.objects.bulk_create([Span(**row) for row in rows], batch_size=500, ignore_conflicts=True)
    _count_and_maybe_prune(len(rows))
    return len(rows)


def _count_and_maybe_prune(inserted: int) -> None:
    global _since_prune, _pruned_once
    with _prune_lock:
        _since_prune += inserted
        due = _since_prune >= settings.TRACES_PRUNE_EVERY or not _pruned_once
        if due:
            _since_prune, _pruned_once = 0, True
    if due:
        spans_prune()


def spans_prune(*, keep: int | None = None, keep_minutes: int | None = None) -> int:
    """Delete spans older than ``keep_minutes`` and all but the newest ``keep``; returns how many went.

    Both deletions run on indexed columns (start time, primary key), so a
    prune costs two range deletes, whatever the table size.
    """
    keep = settings.TRACES_KEEP_SPANS if keep is None else keep
    keep_minutes = settings.TRACES_KEEP_MINUTES if keep_minutes is None else keep_minutes
    deleted = 0
    if keep_minutes:
        cutoff = clock() - keep_minutes * 60 * 1_000_000_000
        deleted += Span.objects.filter(start_ns__lt=cutoff).delete()[0]
    if keep:
        boundary = list(Span.objects.order_by("-id").values_list("id", flat=True)[keep : keep + 1])
        if boundary:
            deleted += Span.objects.filter(id__lte=boundary[0]).delete()[0]
    return deleted


def reset_prune_counter() -> None:
    """Forget this process's insert count (tests)."""
    global _since_prune, _pruned_once
    with _prune_lock:
        _since_prune, _pruned_once = 0, False
