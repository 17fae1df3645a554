"""The user tokens this service issues, as docs/contracts.md describes them.

Both kinds are EdDSA JWTs signed with the ``user`` key through
``chassis.auth.sign`` (``iss="user"``) and carry ``sub`` (the user id as a
string), ``email``, ``name``, ``staff``, ``sid`` (the login session, kept
across refreshes, which logout revokes), ``jti``, ``iat``, ``exp``; ``typ``
tells them apart. The chassis accepts only ``typ="access"`` as a bearer token,
and :func:`refresh_claims_decode` accepts only ``typ="refresh"``, so neither
can stand in for the other.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import jwt
from django.conf import settings

from chassis import auth

from .exceptions import TokenRejected

ACCESS = "access"
REFRESH = "refresh"

# Injectable clock: tests can move time without sleeping.
clock = time.time


@dataclass(frozen=True)
class IssuedToken:
    """A signed token and what the database needs to know about it."""

    token: str
    jti: str
    expires_at: int  # Unix time


def token_issue(*, user, kind: str, sid: str, not_before: int | None = None) -> IssuedToken:
    """Sign an access or refresh token for ``user`` (a ``User`` row) in the login session ``sid``.

    ``not_before`` is the user's valid-after time (``chassis.revocation``): a token
    issued in the very second of a revocation is dated at it, so it is not refused.
    """
    ttl = settings.ACCESS_TOKEN_TTL if kind == ACCESS else settings.REFRESH_TOKEN_TTL
    now = int(clock())
    if not_before is not None and now < not_before:
        now = not_before  # at most a second ahead, within every verifier's leeway
    jti = uuid.uuid4().hex
    claims = {
        "typ": kind,
        "sub": str(user.pk),
        "email": user.email,
        "name": user.name,
        "staff": bool(user.is_staff),
        "sid": sid,
        "jti": jti,
        "iat": now,
        "exp": now + ttl,
    }
    return IssuedToken(token=auth.sign(claims, issuer="user"), jti=jti, expires_at=now + ttl)


def refresh_claims_decode(*, token: str) -> dict:
    """Verify a refresh token's signature, issuer, type and expiry; return its claims.

    Raises :class:`TokenRejected` (401) for anything else, without saying more
    than needed about why a forged token failed.
    """
    try:
        claims = auth.verify(token)
    except jwt.ExpiredSignatureError as exc:
        raise TokenRejected("This refresh token has expired; log in again.", code="token_expired") from exc
    except (jwt.InvalidTokenError, ValueError) as exc:
        raise TokenRejected("This refresh token is not valid.") from exc
    if claims.get("iss") != "user" or claims.get("typ") != REFRESH:
        raise TokenRejected("This is not a refresh token.")
    if not isinstance(claims.get("jti"), str) or not str(claims.get("sub", "")).isdigit():
        raise TokenRejected("This refresh token is not valid.")
    return claims
