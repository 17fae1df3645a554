"""Login throttling: per account (the email tried) and per client IP.

The counts live in the Django cache, which is Redis in the lab, so every
gunicorn worker (and every replica) sees the same counts. Rates are read from
settings at each request, so they follow ``LOGIN_RATE_PER_ACCOUNT`` /
``LOGIN_RATE_PER_IP`` and can be changed in tests.

If the cache cannot be reached the request is let through and a warning is
logged: logging in still needs the right password, and a Redis outage (a
fault a student may inject) should not lock every user out.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping

from django.conf import settings
from redis.exceptions import RedisError
from rest_framework.throttling import SimpleRateThrottle

from .models import normalize_email

log = logging.getLogger("accounts.throttles")


class _SettingRateThrottle(SimpleRateThrottle):
    rate_setting: str = ""

    def get_rate(self) -> str:
        return getattr(settings, self.rate_setting)

    def allow_request(self, request, view) -> bool:
        try:
            return super().allow_request(request, view)
        except (RedisError, OSError) as exc:
            log.warning("%s not applied, the cache is unreachable: %s", self.scope, exc)
            return True

    def _key(self, ident: str) -> str:
        return self.cache_format % {"scope": self.scope, "ident": ident}


class LoginIpThrottle(_SettingRateThrottle):
    """Login attempts from one client IP (``NUM_PROXIES`` says how to find it)."""

    scope = "login_ip"
    rate_setting = "LOGIN_RATE_PER_IP"

    def get_cache_key(self, request, view):
        return self._key(self.get_ident(request))


class LoginAccountThrottle(_SettingRateThrottle):
    """Login attempts on one email, whether or not an account has it."""

    scope = "login_account"
    rate_setting = "LOGIN_RATE_PER_ACCOUNT"

    def get_cache_key(self, request, view):
        data = request.data  # a malformed body raises ParseError here: a 400, as it should
        email = data.get("email") if isinstance(data, Mapping) else None
        if not isinstance(email, str) or not email.strip():
            return None  # nothing to count against; the serializer will refuse the body
        digest = hashlib.sha256(normalize_email(email)[:320].encode()).hexdigest()
        return self._key(digest)


class PasswordChangeThrottle(_SettingRateThrottle):
    """Attempts to change a password, per user: guessing the old one is as slow as logging in."""

    scope = "password_change"
    rate_setting = "LOGIN_RATE_PER_ACCOUNT"

    def get_cache_key(self, request, view):
        user_id = getattr(request.user, "id", None)
        return self._key(str(user_id)) if user_id is not None else None
