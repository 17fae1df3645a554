"""Revoked user access tokens: what logout, a password change or a change of role cancel.

Access tokens are verified locally by every service, so an issued one would
otherwise live its 15 minutes whatever happens to the account. user_service
records two kinds of revocation, in one shared place (the issuer's Redis
database, ``CHASSIS["REVOCATION_CACHE"]``), and every verifier consults them:

* a **session**: logout names the session (``sid`` claim) of the refresh token
  it revokes; every access token of that login, across refreshes, is refused;
* a **user's valid-after time**: a password change, a demotion or a disabled
  account refuses every access token of that user issued (``iat``) before it.
  The time is a whole second strictly after the revocation, and user_service
  dates the tokens it issues afterwards no earlier than it, so a token issued
  in the same second as the revocation is on the right side of it.

Each entry is kept only while a token it refuses can still be unexpired (the
writer says how long), so the list stays as small as the number of recent
logouts. Verifiers read the whole list at most every ``LAB_STATE_REFRESH``
seconds (0.5 s) per process, like the faults: no extra round trip per request,
and a revocation bites everywhere within about a second.

When the store cannot be read, a verifier keeps the last list it read and
accepts what that list accepts (fail open): tokens are verified without
calling anybody so that an outage of one part does not log everybody out, and
a Redis outage already means the lab runs without its faults and switches.
No revocation is lost silently: user_service refuses a logout or a password
change it cannot record (503), so nobody is told "logged out" while the token
lives on.
"""

from __future__ import annotations

import logging
import math
import threading
import time

from django.conf import settings
from django.utils.module_loading import import_string

log = logging.getLogger("chassis.revocation")

KEY = "revocations"
LOCK_KEY = "revocations:lock"
LOCK_SECONDS = 5
LOCK_ATTEMPTS = 100  # x 20 ms: a writer waits at most 2 s for another to finish
clock = time.time  # injectable in tests
monotonic = time.monotonic
sleep = time.sleep

_lock = threading.Lock()
_backend: tuple[str, object] | None = None
_copy: tuple[float, dict] | None = None  # (monotonic read time, entries)


class RevocationUnavailable(Exception):
    """The revocation store cannot be written: the revocation did not happen."""


def _store():
    """The cache backend holding the list (built from ``CHASSIS["REVOCATION_CACHE"]``)."""
    global _backend
    conf = settings.CHASSIS.get("REVOCATION_CACHE") or {
        "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
        "LOCATION": "lab-revocations",
    }
    signature = repr(sorted(conf.items()))
    with _lock:
        if _backend is None or _backend[0] != signature:
            params = {k: v for k, v in conf.items() if k not in ("BACKEND", "LOCATION")}
            _backend = (signature, import_string(conf["BACKEND"])(conf.get("LOCATION", ""), params))
        return _backend[1]


def _refresh_seconds() -> float:
    return min(1.0, settings.CHASSIS.get("LAB_STATE_REFRESH", 0.5))


def _live(entries: dict, now: float) -> dict:
    return {key: value for key, value in entries.items() if value[1] > now}


def _read_fresh() -> dict:
    entries = _store().get(KEY, None)
    return entries if isinstance(entries, dict) else {}


def entries() -> dict:
    """The revocations in force, from this process's copy (at most ``LAB_STATE_REFRESH`` old).

    ``{"s:<sid>": (0, until), "u:<user id>": (valid_after, until)}``. If the store
    cannot be read the last copy is kept (empty if none was ever read).
    """
    global _copy
    now = monotonic()
    with _lock:
        if _copy is not None and now - _copy[0] < _refresh_seconds():
            return _copy[1]
        previous = _copy[1] if _copy is not None else {}
    try:
        current = _read_fresh()
    except Exception as exc:  # noqa: BLE001 — fail open with the last list read, see the module docstring
        log.warning("token revocations unreadable, keeping the last list read (%d entries): %s", len(previous), exc)
        current = previous
    with _lock:
        _copy = (now, current)
    return current


def is_revoked(claims: dict) -> bool:
    """True when a user access token's ``sid`` was logged out, or it predates its user's valid-after time."""
    current = entries()
    if not current:
        return False
    sid = claims.get("sid")
    if isinstance(sid, str) and f"s:{sid}" in current:
        return True
    user = current.get(f"u:{claims.get('sub')}")
    if user is None:
        return False
    try:
        return float(claims.get("iat", 0)) < user[0]
    except (TypeError, ValueError):
        return True


def user_valid_after(user_id: int) -> int | None:
    """The user's valid-after time read from the store now (user_service dates new tokens no earlier)."""
    try:
        entry = _live(_read_fresh(), clock()).get(f"u:{user_id}")
    except Exception as exc:  # noqa: BLE001 — an unreadable store cannot have a newer time than this
        log.warning("token revocations unreadable while issuing a token: %s", exc)
        entry = None
    return int(entry[0]) if entry else None


def _write(key: str, value: tuple[float, float]) -> None:
    global _copy
    store = _store()
    try:
        for _ in range(LOCK_ATTEMPTS):
            if store.add(LOCK_KEY, 1, timeout=LOCK_SECONDS):
                break
            sleep(0.02)
        else:
            raise RevocationUnavailable("another writer holds the revocation list")
        try:
            now = clock()
            current = _live(_read_fresh(), now)
            old = current.get(key)
            current[key] = (max(old[0], value[0]), max(old[1], value[1])) if old else value
            longest = max(until for _, until in current.values())
            store.set(KEY, current, timeout=max(1, math.ceil(longest - now)))
        finally:
            store.delete(LOCK_KEY)
    except RevocationUnavailable:
        raise
    except Exception as exc:  # whatever the cache raises, the revocation did not happen
        raise RevocationUnavailable(str(exc)) from exc
    with _lock:
        _copy = (monotonic(), current)


def revoke_session(*, sid: str, lifetime: int) -> None:
    """Refuse every access token of one login (``sid``) from now on; ``lifetime``: their longest life, seconds."""
    _write(f"s:{sid}", (0, clock() + lifetime))


def revoke_user(*, user_id: int, lifetime: int) -> int:
    """Refuse every access token of ``user_id`` issued until now; return the valid-after time (whole seconds)."""
    now = clock()
    valid_after = math.floor(now) + 1
    _write(f"u:{user_id}", (valid_after, valid_after + lifetime))
    return valid_after


def forget_local() -> None:
    """Drop this process's copy (tests)."""
    global _copy
    with _lock:
        _copy = None


def clear() -> None:
    """Forget every revocation, stored and copied (tests: each suite has a list of its own)."""
    _store().delete(KEY)
    forget_local()
