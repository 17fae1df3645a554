"""Throttling of the user service's anonymous writes: login, registration, password change.

Login is counted three ways: per client IP (``LOGIN_RATE_PER_IP``), per email
*and* client (``LOGIN_RATE_PER_ACCOUNT``: a stranger guessing a password locks
out only their own client, not the owner's) and per email from every client
together (``LOGIN_RATE_PER_EMAIL``, wider: guesses spread over many addresses
still meet a ceiling). Registration is counted per client IP
(``REGISTER_RATE_PER_IP``).

The client is ``REMOTE_ADDR`` (or, behind ``NUM_PROXIES`` proxies, DRF's reading
of ``X-Forwarded-For``), except for a login the dashboard or a service's
browsable API forwards: those carry their caller's service token and the real
client in ``X-Lab-Client-IP``, which is believed only with such a token.
Otherwise every login through the dashboard would share one bucket.

The counts live in the Django cache, which is Redis in the lab, so every
gunicorn worker (and every replica) sees the same counts. Rates are read from
settings at each request, so they follow the settings and can be changed in tests.

If the cache cannot be reached the request is let through and a warning is
logged: logging in still needs the right password, and a Redis outage (a
fault a student may inject) should not lock every user out.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
from collections.abc import Mapping

import jwt
from rest_framework import authentication, exceptions

from chassis import auth
from chassis.throttling import SettingRateThrottle

from .models import normalize_email

log = logging.getLogger("accounts.throttles")

CLIENT_IP_HEADER = "HTTP_X_LAB_CLIENT_IP"
# Callers whose X-Lab-Client-IP is believed: they log people in on their behalf, from their own address.
LOGIN_FORWARDERS = ("dashboard", "order", "inventory", "payment")


def forwarded_client_ip(request) -> str | None:
    """The client address a trusted forwarder (service token, audience user) sent, else None."""
    value = request.META.get(CLIENT_IP_HEADER)
    if not value:
        return None
    header = authentication.get_authorization_header(request).split()
    if len(header) != 2 or header[0].lower() != b"bearer":
        return None
    try:
        claims = auth.verify(header[1].decode("ascii"))
        if claims.get("typ") != "service" or claims.get("aud") != "user" or claims.get("iss") not in LOGIN_FORWARDERS:
            return None
        auth.check_service_token_lifetime(claims)
        return str(ipaddress.ip_address(value.strip()))
    except (UnicodeDecodeError, ValueError, jwt.InvalidTokenError, exceptions.AuthenticationFailed):
        return None


class _SettingRateThrottle(SettingRateThrottle):
    what = "login attempts"

    def get_ident(self, request) -> str:
        return forwarded_client_ip(request) or super().get_ident(request)

    def _key(self, ident: str) -> str:
        return self.key_for(ident)

    def _email(self, request) -> str | None:
        data = request.data  # a malformed body raises ParseError here: a 400, as it should
        email = data.get("email") if isinstance(data, Mapping) else None
        if not isinstance(email, str) or not email.strip():
            return None  # nothing to count against; the serializer will refuse the body
        return normalize_email(email)[:320]


class LoginIpThrottle(_SettingRateThrottle):
    """Login attempts from one client IP (``NUM_PROXIES`` says how to find it)."""

    scope = "login_ip"
    rate_setting = "LOGIN_RATE_PER_IP"

    def get_cache_key(self, request, view):
        return self._key(self.get_ident(request))


class LoginAccountThrottle(_SettingRateThrottle):
    """Login attempts on one email from one client, whether or not an account has it."""

    scope = "login_account"
    rate_setting = "LOGIN_RATE_PER_ACCOUNT"

    def get_cache_key(self, request, view):
        email = self._email(request)
        if email is None:
            return None
        return self._key(hashlib.sha256(f"{email}|{self.get_ident(request)}".encode()).hexdigest())


class LoginEmailThrottle(_SettingRateThrottle):
    """Login attempts on one email from every client together (a wider cap)."""

    scope = "login_email"
    rate_setting = "LOGIN_RATE_PER_EMAIL"

    def get_cache_key(self, request, view):
        email = self._email(request)
        return self._key(hashlib.sha256(email.encode()).hexdigest()) if email is not None else None


class RegisterIpThrottle(_SettingRateThrottle):
    """Accounts created from one client IP."""

    scope = "register_ip"
    rate_setting = "REGISTER_RATE_PER_IP"
    what = "registrations from this address"

    def get_cache_key(self, request, view):
        return self._key(self.get_ident(request))


class PasswordChangeThrottle(_SettingRateThrottle):
    """Attempts to change a password, per user: guessing the old one is as slow as logging in."""

    scope = "password_change"
    rate_setting = "LOGIN_RATE_PER_ACCOUNT"
    what = "password change attempts"

    def get_cache_key(self, request, view):
        user_id = getattr(request.user, "id", None)
        return self._key(str(user_id)) if user_id is not None else None
