"""Raw SQL for what the ORM cannot say in one statement (a multi-table UPDATE), with an all-or-none row count."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from django.db import connection


def update_matched(sql: str, params: Sequence, *, expected: int, mismatch: Callable[[int], str]) -> bool:
    """Run one UPDATE: False when it matched no row, True when it matched ``expected`` rows, and a
    RuntimeError saying ``mismatch(matched)`` for any other count (rows changed under a lock meant to hold
    them). A row found but left as it was counts: Django's MySQL connection reports rows found."""
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        matched = cursor.rowcount
    if matched == 0:
        return False
    if matched != expected:
        raise RuntimeError(mismatch(matched))
    return True
