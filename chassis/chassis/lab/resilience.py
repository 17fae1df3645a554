"""Run-time resilience switches, and the per-destination breaker and bulkhead.

The switches (one dict, stored like the faults so every worker shares them)::

    timeouts  {enabled, connect, read}         off → read timeout of 30 s
    retries   {enabled, attempts, backoff}      off → one attempt
    breaker   {enabled, fail_max, reset_timeout}
    bulkhead  {enabled, max_concurrent}         per destination, per process;
                                                default: half the process's serving threads
    fallback  {enabled}                         serve a cached answer when a peer is down
    unsafe    {charge_retry_new_key}            UNSAFE, off by default: takes a defence away
                                                (the consistency lab); shown in red when on

``unsafe.charge_retry_new_key``: order_service's saga retries a charge whose
answer was lost itself, with a new idempotency key each time, so payment
cannot tell a retry from a new charge and captures again. Every reset of the
switches (the Faults page's "Clear all", a lab's reset) turns it off.

Breakers are pybreaker's, one per destination, named after it, with their
state and failure counter in Redis so every worker process shares them
(in-memory when the service runs without Redis). Only ``PeerUnavailable``
counts as a failure: a 4xx is an answer, not a fault of the peer.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pybreaker
from django.conf import settings
from rest_framework import serializers

from . import store

OFF_READ_TIMEOUT = 30.0

# How many threads of this process serve requests: set by gunicorn's post_worker_init
# hook (chassis.gunicorn_conf), None outside gunicorn (a Celery worker, a test client).
_serving_threads: int | None = None
# The bulkhead per peer when nobody configured one and the serving threads are unknown.
UNKNOWN_THREADS_BULKHEAD = 16


def set_serving_threads(threads: int) -> None:
    global _serving_threads
    _serving_threads = max(1, int(threads))


def default_bulkhead() -> int:
    """Concurrent calls allowed to one peer when ``BULKHEAD_MAX_CONCURRENT`` is not set.

    Half the threads that serve requests in this process (at least one): a peer
    that hangs can hold at most that many, and the rest stay free for requests
    that do not need it. A limit at or above the thread count would never engage.
    """
    configured = settings.CHASSIS.get("BULKHEAD_MAX_CONCURRENT") or 0
    if configured > 0:
        return configured
    if _serving_threads is None:
        return UNKNOWN_THREADS_BULKHEAD
    return max(1, _serving_threads // 2)


def defaults() -> dict:
    conf = settings.CHASSIS
    return {
        "timeouts": {"enabled": True, "connect": conf["CONNECT_TIMEOUT"], "read": conf["READ_TIMEOUT"]},
        "retries": {"enabled": True, "attempts": conf["RETRY_ATTEMPTS"], "backoff": conf["RETRY_BACKOFF"]},
        "breaker": {
            "enabled": True,
            "fail_max": conf.get("BREAKER_FAIL_MAX", 5),
            "reset_timeout": conf.get("BREAKER_RESET_TIMEOUT", 10),
        },
        "bulkhead": {"enabled": True, "max_concurrent": default_bulkhead()},
        "fallback": {"enabled": True},
        "unsafe": {"charge_retry_new_key": False},
    }


class _Timeouts(serializers.Serializer):
    enabled = serializers.BooleanField(required=False)
    connect = serializers.FloatField(min_value=0.05, max_value=30, required=False)
    read = serializers.FloatField(min_value=0.05, max_value=30, required=False)


class _Retries(serializers.Serializer):
    enabled = serializers.BooleanField(required=False)
    attempts = serializers.IntegerField(min_value=1, max_value=10, required=False)
    backoff = serializers.FloatField(min_value=0.0, max_value=5, required=False)


class _Breaker(serializers.Serializer):
    enabled = serializers.BooleanField(required=False)
    fail_max = serializers.IntegerField(min_value=1, max_value=100, required=False)
    reset_timeout = serializers.IntegerField(min_value=1, max_value=600, required=False)  # Redis keeps whole seconds


class _Bulkhead(serializers.Serializer):
    enabled = serializers.BooleanField(required=False)
    max_concurrent = serializers.IntegerField(min_value=1, max_value=256, required=False)


class _Fallback(serializers.Serializer):
    enabled = serializers.BooleanField(required=False)


class _Unsafe(serializers.Serializer):
    charge_retry_new_key = serializers.BooleanField(required=False)


class SwitchesSerializer(serializers.Serializer):
    """A partial update of the switches: only the keys sent change."""

    timeouts = _Timeouts(required=False)
    retries = _Retries(required=False)
    breaker = _Breaker(required=False)
    bulkhead = _Bulkhead(required=False)
    fallback = _Fallback(required=False)
    unsafe = _Unsafe(required=False)
    reset_breakers = serializers.BooleanField(required=False, default=False)


def merged(overrides: dict) -> dict:
    """The defaults with ``overrides`` laid over them, section by section."""
    result = defaults()
    for section, values in overrides.items():
        if section in result:
            result[section] = {**result[section], **values}
    return result


def switches() -> dict:
    """The switches in force, defaults filled in for anything never set."""
    return merged(store.read("resilience", {}) or {})


def switches_update(*, changes: dict) -> dict:
    stored = store.read("resilience", {}) or {}
    stored = {k: dict(v) for k, v in stored.items()}
    for section, values in changes.items():
        if section in defaults():
            stored.setdefault(section, {}).update(values)
    store.write("resilience", stored)
    if "breaker" in changes:
        for breaker in _breakers.values():
            _configure(breaker, switches()["breaker"])
    return switches()


def switches_reset() -> dict:
    store.write("resilience", {})
    return switches()


# --- breakers -------------------------------------------------------------

_breakers: dict[str, pybreaker.CircuitBreaker] = {}
# Each breaker's state storage, kept here because pybreaker does not expose it.
_storages: dict[str, pybreaker.CircuitBreakerStorage] = {}
_breakers_lock = threading.Lock()


class PeerDown(Exception):
    """Raised inside the breaker when a call failed; carries the client's error."""

    def __init__(self, error: Exception):
        self.error = error
        super().__init__(str(error))


def _storage(peer: str):
    redis_url = _redis_url()
    if redis_url:
        import redis

        client = redis.Redis.from_url(redis_url, socket_connect_timeout=1, socket_timeout=1)
        return pybreaker.CircuitRedisStorage(
            pybreaker.STATE_CLOSED,
            client,
            namespace=f"{settings.CHASSIS.get('REDIS_PREFIX', 'lab')}:{settings.SERVICE_NAME}:breaker:{peer}",
        )
    return pybreaker.CircuitMemoryStorage(pybreaker.STATE_CLOSED)


def _redis_url() -> str:
    cache = settings.CACHES["default"]
    return cache["LOCATION"] if cache["BACKEND"].endswith("RedisCache") else ""


def _configure(breaker: pybreaker.CircuitBreaker, conf: dict) -> None:
    breaker.fail_max = int(conf["fail_max"])
    breaker.reset_timeout = float(conf["reset_timeout"])


def breaker_for(peer: str) -> pybreaker.CircuitBreaker:
    """The breaker guarding calls from this service to ``peer``."""
    with _breakers_lock:
        breaker = _breakers.get(peer)
        if breaker is None:
            conf = switches()["breaker"]
            _storages[peer] = _storage(peer)
            breaker = pybreaker.CircuitBreaker(
                fail_max=conf["fail_max"],
                reset_timeout=conf["reset_timeout"],
                state_storage=_storages[peer],
                name=peer,
                throw_new_error_on_trip=False,
            )
            _breakers[peer] = breaker
        else:
            _configure(breaker, switches()["breaker"])
        return breaker


def breaker_states(peers) -> dict:
    """Each breaker's state and failure counter, as every worker sees them."""
    out = {}
    for peer in peers:
        breaker = breaker_for(peer)
        storage = _storages[peer]
        opened_at = storage.opened_at
        out[peer] = {
            "state": breaker.current_state,
            "fail_counter": breaker.fail_counter,
            "fail_max": breaker.fail_max,
            "reset_timeout": breaker.reset_timeout,
            "opened_at": opened_at.isoformat() if opened_at else None,
        }
    return out


def breaker_open_for(peer: str) -> float | None:
    """Seconds the breaker towards ``peer`` stays open, or None when a call would be let through.

    None while it is closed or half-open, and once its ``reset_timeout`` has run out (the next
    call is then the half-open trial). One read of the shared state, a second only when open.
    """
    breaker = breaker_for(peer)
    if breaker.current_state != pybreaker.STATE_OPEN:
        return None
    opened_at = _storages[peer].opened_at
    if opened_at is None:
        return None
    left = (opened_at + timedelta(seconds=breaker.reset_timeout) - datetime.now(UTC)).total_seconds()
    return left if left > 0 else None


def fail_fast_note(*, peer: str, retry_after: int, ms: float) -> None:
    """Remember the last request refused before its first call because ``peer``'s breaker was open.

    The lab admin's ``GET /_lab/resilience/`` shows it (``fail_fast``): a refusal leaves no record
    of its own (nothing was written), and the circuit-breaker lab measures it from here.
    """
    import time

    try:
        store.write("fail_fast", {"at": time.time(), "peer": peer, "retry_after": retry_after, "ms": round(ms, 1)})
    except Exception:  # noqa: BLE001 — the refusal stands without its note when the cache is down
        pass


def breakers_reset(peers) -> None:
    for peer in peers:
        breaker_for(peer).close()


# --- bulkheads ------------------------------------------------------------

_bulkheads: dict[tuple[str, int], threading.BoundedSemaphore] = {}


def bulkhead_for(peer: str, size: int) -> threading.BoundedSemaphore:
    """A semaphore of ``size`` places for calls to ``peer`` from this process."""
    with _breakers_lock:
        key = (peer, size)
        if key not in _bulkheads:
            _bulkheads[key] = threading.BoundedSemaphore(size)
        return _bulkheads[key]
