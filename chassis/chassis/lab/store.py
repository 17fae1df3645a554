"""Shared lab state in the Django cache, with a short per-process read cache.

Every request consults the fault list and the resilience switches; reading
Redis each time would cost a round trip per request, so each process keeps
what it read for ``CHASSIS["LAB_STATE_REFRESH"]`` seconds (0.5 s by default,
within the one-second promise). A write from this process is seen at once.
"""

from __future__ import annotations

import threading
import time

from django.conf import settings
from django.core.cache import cache

_local_cache: dict[str, tuple[float, object]] = {}
_lock = threading.Lock()
clock = time.monotonic  # injectable in tests


def _refresh() -> float:
    return settings.CHASSIS.get("LAB_STATE_REFRESH", 0.5)


def read(key: str, default):
    """The value stored under ``key`` (a fresh copy at most ``LAB_STATE_REFRESH`` old)."""
    now = clock()
    with _lock:
        hit = _local_cache.get(key)
        if hit and now - hit[0] < _refresh():
            return hit[1]
    try:
        value = cache.get(f"lab:{key}", default)
    except Exception:  # noqa: BLE001 — a lab without its cache keeps serving, with no faults
        value = default
    with _lock:
        _local_cache[key] = (now, value)
    return value


def write(key: str, value) -> None:
    cache.set(f"lab:{key}", value, timeout=None)
    with _lock:
        _local_cache[key] = (clock(), value)


def forget_local() -> None:
    """Drop this process's read cache (tests, and after a write by another process)."""
    with _lock:
        _local_cache.clear()
