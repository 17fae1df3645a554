"""Who may change the lab: a staff member logged in through user_service.

The login form posts the email and password to user_service
(``POST /api/auth/login/``); the access token it answers is verified locally
with the ``user`` public key, and only a token whose ``staff`` claim is true
opens a session. The tokens stay in the server-side session (the browser only
holds the session cookie); the access token is refreshed when it is about to
expire, for the pages that read data as the admin.

Changing the lab (faults, switches, flows) is done with the dashboard's own
service identity; the login only decides who may ask the dashboard to do it.

Staff status is not trusted for the session's 8 hours: on every request the
session's access token is checked against the revocations user_service
records (``chassis.revocation``, a copy at most a second old, no call to
anybody). Demoting an account, changing its password or logging it out
revokes its tokens, so its dashboard session ends within a second; a refresh
that answers a token without ``staff`` ends it too.

The login is forwarded with the browser's address (``X-Lab-Client-IP``, which
user_service believes only with the dashboard's service token), so the login
throttle counts each client, not the dashboard.
"""

from __future__ import annotations

import functools
import time

import jwt
from django.conf import settings
from django.shortcuts import redirect, render
from django.urls import reverse

from chassis import auth as chassis_auth
from chassis import revocation

from . import peers

SESSION_KEY = "lab_staff"
REFRESH_MARGIN_SECONDS = 60


class LoginRefused(Exception):
    """The login did not open a session; the message is for the person at the form."""


def current_staff(request) -> dict | None:
    """``{"id", "email", "name"}`` of the logged-in staff member, or None.

    A session whose token was revoked (demotion, password change, logout elsewhere)
    is closed here, at the first request that notices.
    """
    data = request.session.get(SESSION_KEY) if hasattr(request, "session") else None
    if not data:
        return None
    if _revoked(data):
        request.session.flush()
        return None
    return data["user"]


def _revoked(data: dict) -> bool:
    try:
        # Verified when it was stored; only its sub, sid and iat are read here.
        claims = jwt.decode(data.get("access", ""), options={"verify_signature": False})
    except jwt.InvalidTokenError:
        return True
    return revocation.is_revoked(claims)


def _claims(access: str) -> dict:
    try:
        claims = chassis_auth.verify(access)
    except jwt.InvalidTokenError as exc:
        raise LoginRefused(f"The user service's token could not be verified ({exc}).") from exc
    if claims.get("iss") != "user" or claims.get("typ") != "access":
        raise LoginRefused("The user service answered something that is not an access token.")
    return claims


def _store(request, pair: dict, claims: dict) -> None:
    request.session[SESSION_KEY] = {
        "user": {"id": claims.get("sub"), "email": claims.get("email", ""), "name": claims.get("name", "")},
        "access": pair["access"],
        "refresh": pair.get("refresh", ""),
        "access_exp": int(claims.get("exp", 0)),
    }


def staff_login(request, *, email: str, password: str) -> dict:
    """Log in at user_service; open a session for staff only. Raises :class:`LoginRefused`."""
    result = peers.call(
        "user",
        "POST",
        "/api/auth/login/",
        json={"email": email, "password": password},
        headers={"X-Lab-Client-IP": request.META.get("REMOTE_ADDR", "")},
    )
    if result.state in ("down", "timeout"):
        raise LoginRefused(f"The user service is unavailable ({result.state}); nobody can log in until it is back.")
    if result.status == 429:
        raise LoginRefused(result.message or "Too many attempts; wait a minute.")
    if not result.ok or not isinstance(result.data, dict) or "access" not in result.data:
        raise LoginRefused(
            result.message
            if result.status and result.status < 500
            else "The user service could not log you in; try again."
        )
    claims = _claims(result.data["access"])
    if not claims.get("staff"):
        raise LoginRefused("This account is not staff: the dashboard's controls are for the lab's instructors.")
    request.session.cycle_key()  # a new session id at login: no fixation
    _store(request, result.data, claims)
    return current_staff(request)


def staff_logout(request) -> None:
    data = request.session.get(SESSION_KEY)
    if data and data.get("refresh"):
        peers.call("user", "POST", "/api/auth/logout/", json={"refresh": data["refresh"]})
    request.session.flush()


def staff_access_token(request) -> str | None:
    """A valid access token of the logged-in staff member (refreshed if needed), or None."""
    data = request.session.get(SESSION_KEY)
    if not data:
        return None
    if data["access_exp"] - time.time() > REFRESH_MARGIN_SECONDS:
        return data["access"]
    if not data.get("refresh"):
        return None
    result = peers.call("user", "POST", "/api/auth/refresh/", json={"refresh": data["refresh"]})
    if not result.ok or not isinstance(result.data, dict) or "access" not in result.data:
        return None
    try:
        claims = _claims(result.data["access"])
    except LoginRefused:
        return None
    if not claims.get("staff"):
        request.session.flush()  # demoted since the login: the session's controls go with it
        return None
    _store(request, result.data, claims)
    return result.data["access"]


def can_read(request) -> bool:
    return settings.DASHBOARD_PUBLIC_READ or current_staff(request) is not None


def forbidden(request, message: str):
    return render(request, "console/forbidden.html", {"reason": message}, status=403)


def read_view(view):
    """Pages anyone may watch when ``DASHBOARD_PUBLIC_READ`` is on; otherwise staff only."""

    @functools.wraps(view)
    def wrapped(request, *args, **kwargs):
        if not can_read(request):
            if request.headers.get("HX-Request"):
                return forbidden(request, "Log in to watch the lab.")
            return redirect(f"{reverse('console:login')}?next={request.get_full_path()}")
        return view(request, *args, **kwargs)

    return wrapped


def staff_view(view):
    """Views that change the lab (every POST, every control): a logged-in staff member only."""

    @functools.wraps(view)
    def wrapped(request, *args, **kwargs):
        if current_staff(request) is None:
            if request.method == "GET" and not request.headers.get("HX-Request"):
                return redirect(f"{reverse('console:login')}?next={request.get_full_path()}")
            return forbidden(request, "Only a logged-in staff member may change the lab.")
        return view(request, *args, **kwargs)

    return wrapped
