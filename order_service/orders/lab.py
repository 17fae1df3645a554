"""The order service's own lab switch: where the checkout saga runs, and how long it may retry.

``{"mode": "sync"|"async", "deadline_seconds": N}`` is stored like the chassis'
faults and resilience switches (``chassis.lab.store``: the service's cache,
Redis in the lab), so every web and worker process sees a change within
``LAB_STATE_REFRESH`` seconds. Until the lab admin changes it, the values are
``ORDER_SAGA_MODE`` and ``ORDER_SAGA_DEADLINE_SECONDS``.
"""

from __future__ import annotations

from django.conf import settings

from chassis import parts
from chassis.lab import store

STORE_KEY = "saga"
MODES = parts.SAGA_MODES
DEADLINE_MIN, DEADLINE_MAX = 30, 3600


def saga_settings() -> dict:
    """The saga mode and deadline in force: ``{"mode", "deadline_seconds"}``."""
    stored = store.read(STORE_KEY, {}) or {}
    return {
        "mode": stored.get("mode") or settings.ORDER_SAGA_MODE,
        "deadline_seconds": int(stored.get("deadline_seconds") or settings.ORDER_SAGA_DEADLINE_SECONDS),
    }


def saga_settings_update(*, mode: str | None = None, deadline_seconds: int | None = None) -> dict:
    """Change the mode and/or the deadline (validated by the caller); return the values now in force."""
    stored = dict(store.read(STORE_KEY, {}) or {})
    if mode is not None:
        stored["mode"] = mode
    if deadline_seconds is not None:
        stored["deadline_seconds"] = deadline_seconds
    store.write(STORE_KEY, stored)
    return saga_settings()


def saga_settings_reset() -> dict:
    """Forget what the lab admin set: the defaults are in force again."""
    store.write(STORE_KEY, {})
    return saga_settings()


def saga_is_async() -> bool:
    return saga_settings()["mode"] == "async"
