"""Rate limits on writes, counted in the Django cache (Redis in the lab, shared by every worker).

:class:`UserWriteThrottle` is every service's default throttle: each logged-in
user may make ``CHASSIS["WRITE_RATE_PER_USER"]`` writes (POST, PUT, PATCH,
DELETE) per service (env ``WRITE_RATE_PER_USER``, default ``20/s``). Reads are
never counted, nor are calls between the lab's services (a saga must not be
refused half-way) or anonymous requests (the views that accept them count by
client IP themselves, such as registration and login in user_service).

The limit is per user, not per IP, on purpose: the lab's load runs and its
benchmark send everything from 127.0.0.1, and a single account stays bounded.
It is generous (a customer clicking, or a load-test user without think time,
stays far below it) and exists so that one account cannot flood a service.

Beyond the limit: 429 with ``Retry-After`` (seconds) and the lab's error body.
If the cache cannot be reached the write is let through and a warning logged:
the limit protects the service, it should not turn a Redis outage into one.
"""

from __future__ import annotations

import logging

from django.conf import settings
from rest_framework import exceptions
from rest_framework.throttling import SimpleRateThrottle

log = logging.getLogger("chassis.throttling")

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class Throttled(exceptions.Throttled):
    """A 429 whose message names the limit that was reached (DRF adds when to come back)."""

    def __init__(self, wait: float | None, what: str, rate: str):
        super().__init__(wait=wait, detail=f"Request was throttled: too many {what} (limit {rate}).")


class SettingRateThrottle(SimpleRateThrottle):
    """A DRF rate throttle whose rate is read from settings at each request (tests can change it).

    ``rate_setting`` names a Django setting, or ``CHASSIS:<KEY>`` for a chassis one;
    ``what`` says what is counted, for the 429's message.
    """

    rate_setting: str = ""
    what: str = "requests"

    def get_rate(self) -> str:
        if self.rate_setting.startswith("CHASSIS:"):
            return settings.CHASSIS[self.rate_setting.split(":", 1)[1]]
        return getattr(settings, self.rate_setting)

    def allow_request(self, request, view) -> bool:
        try:
            allowed = super().allow_request(request, view)
        except exceptions.APIException:
            raise  # a malformed body found while reading the key: the client's 400
        except Exception as exc:  # noqa: BLE001 — Redis errors, file cache errors: let the request through
            log.warning("%s not applied, the cache is unreachable: %s", self.scope, exc)
            return True
        if not allowed:
            raise Throttled(self.wait(), self.what, self.rate)
        return True

    def key_for(self, ident: str) -> str:
        return self.cache_format % {"scope": self.scope, "ident": ident}


class UserWriteThrottle(SettingRateThrottle):
    """Writes of one logged-in user to this service (``WRITE_RATE_PER_USER``)."""

    scope = "write_user"
    rate_setting = "CHASSIS:WRITE_RATE_PER_USER"
    what = "writes from this account"

    def get_cache_key(self, request, view):
        if request.method not in WRITE_METHODS:
            return None
        user = request.user
        if not getattr(user, "is_authenticated", False) or getattr(user, "is_service", False):
            return None
        user_id = getattr(user, "id", None)
        return self.key_for(str(user_id)) if user_id is not None else None
