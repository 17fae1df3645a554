"""Authentication between users, services and the lab, with EdDSA JWTs.

Two kinds of bearer token reach a service:

* user tokens, issued by user_service with its private key
  (``iss="user"``, ``typ="access"``, ``sub`` = user id, ``email``, ``name``, ``staff``);
* service tokens, minted by the *calling* service with its own private key
  (``iss=<caller>``, ``typ="service"``, ``aud=<callee>``, short-lived).

Every service verifies both locally with the issuer's public key, so a
user_service outage does not log anybody out. A user token is also checked
against the revocations user_service recorded (logout, password change,
demotion: :mod:`chassis.revocation`), from a copy at most a second old. Only ``EdDSA`` is accepted:
``alg: none`` and HMAC tokens forged with a public key are refused.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass

import jwt
from django.conf import settings
from rest_framework import authentication, exceptions, permissions

from . import keys, revocation

ALGORITHM = "EdDSA"
KNOWN_ISSUERS = ("user", "order", "inventory", "payment", "dashboard")


def _conf() -> dict:
    return settings.CHASSIS


def sign(claims: dict, *, issuer: str | None = None) -> str:
    """Sign ``claims`` as this service, with its own private key (the only one it holds).

    ``issuer`` may only name this service: a service cannot sign as another
    (tests that need a peer's token use :func:`chassis.testing.sign_as`).
    """
    own = _conf()["SERVICE"]
    if issuer not in (None, own):
        raise ValueError(f"the {own} service signs as {own} only, not as {issuer!r}")
    issuer = own
    key = keys.load_private_key(str(_conf()["KEYS_DIR"]), issuer)
    now = int(time.time())
    payload = {"iat": now, "jti": uuid.uuid4().hex, **claims, "iss": issuer}
    return jwt.encode(payload, key, algorithm=ALGORITHM)


# Claims of tokens whose signature was verified, by the raw token: a client sends the same
# token with each of its requests, and checking an Ed25519 signature (and decoding the token
# twice) is most of what authenticating a request costs. An entry answers until the token
# expires, exactly as PyJWT would (exp + leeway); revocation and the service token's lifetime
# are checked on every request after it (``LabJWTAuthentication.principal_from``).
VERIFIED_CACHE_SIZE = 4096
_verified: dict[tuple[str, str, int], tuple[float, dict]] = {}
_verified_lock = threading.Lock()
clock = time.time  # injectable in tests


def verify(token: str, *, leeway: int = 5) -> dict:
    """Verify a token with its issuer's public key; raise ``jwt.InvalidTokenError``.

    A token verified before is answered from this process's cache of verified claims
    until it expires (then ``jwt.ExpiredSignatureError``, as a fresh check would say).
    """
    key = (token, str(_conf()["KEYS_DIR"]), leeway)
    hit = _verified.get(key)
    if hit is not None:
        if clock() < hit[0]:
            return dict(hit[1])
        with _verified_lock:
            _verified.pop(key, None)
        raise jwt.ExpiredSignatureError("Signature has expired")
    claims = _verify_signature(token, leeway=leeway)
    exp = claims.get("exp")
    if isinstance(exp, (int, float)) and not isinstance(exp, bool):
        with _verified_lock:
            while len(_verified) >= VERIFIED_CACHE_SIZE:
                _verified.pop(next(iter(_verified)))
            _verified[key] = (exp + leeway, dict(claims))
    return claims


def forget_verified() -> None:
    """Drop the cache of verified tokens (tests)."""
    with _verified_lock:
        _verified.clear()


def _verify_signature(token: str, *, leeway: int) -> dict:
    unverified = jwt.decode(token, options={"verify_signature": False})
    issuer = unverified.get("iss")
    if issuer not in KNOWN_ISSUERS:
        raise jwt.InvalidIssuerError("unknown token issuer")
    try:
        key = keys.load_public_key(str(_conf()["KEYS_DIR"]), issuer)
    except FileNotFoundError as exc:
        raise jwt.InvalidTokenError(f"no public key for issuer {issuer!r}") from exc
    return jwt.decode(
        token,
        key,
        algorithms=[ALGORITHM],
        issuer=issuer,
        leeway=leeway,
        options={"require": ["exp", "iat", "iss", "typ"], "verify_aud": False},
    )


# A service token lives SERVICE_TOKEN_TTL seconds (60); one that claims to live longer than
# this, or was issued longer ago, is refused whatever its exp says: a token stolen from one
# call cannot be replayed for long, and a caller cannot mint itself a token for a year.
SERVICE_TOKEN_MAX_LIFETIME = 120


def check_service_token_lifetime(claims: dict) -> None:
    """Refuse a service token whose lifetime (exp - iat) is beyond the bound."""
    try:
        issued, expires = float(claims["iat"]), float(claims["exp"])
    except (KeyError, TypeError, ValueError) as exc:
        raise exceptions.AuthenticationFailed("Service token without a usable iat or exp.") from exc
    if expires - issued > SERVICE_TOKEN_MAX_LIFETIME:
        raise exceptions.AuthenticationFailed(
            f"Service token lives {expires - issued:.0f} s; at most {SERVICE_TOKEN_MAX_LIFETIME} s is accepted."
        )
    # Its age needs no check of its own: it is unexpired (PyJWT checked exp) and lives at most the
    # bound, so it was issued less than the bound ago; one issued in the future PyJWT refuses (iat).


_service_tokens: dict[str, tuple[str, float]] = {}
_service_tokens_lock = threading.Lock()


def service_token(audience: str) -> str:
    """A token naming this service as caller, for ``audience``; reused until near expiry."""
    ttl = min(_conf()["SERVICE_TOKEN_TTL"], SERVICE_TOKEN_MAX_LIFETIME)
    now = time.time()
    with _service_tokens_lock:
        cached = _service_tokens.get(audience)
        if cached and cached[1] - now > ttl / 3:
            return cached[0]
        token = sign({"typ": "service", "sub": _conf()["SERVICE"], "aud": audience, "exp": int(now) + ttl})
        _service_tokens[audience] = (token, now + ttl)
        return token


@dataclass(frozen=True)
class LabUser:
    """A customer or staff member known from a verified user token."""

    id: int
    email: str
    name: str
    is_staff: bool
    is_authenticated: bool = True
    is_anonymous: bool = False
    is_service: bool = False

    @property
    def pk(self) -> int:
        return self.id

    def __str__(self) -> str:
        return self.email


@dataclass(frozen=True)
class ServicePrincipal:
    """Another lab service (or the dashboard) calling with a service token."""

    name: str
    is_authenticated: bool = True
    is_anonymous: bool = False
    is_staff: bool = False
    is_service: bool = True
    id = None
    pk = None

    def __str__(self) -> str:
        return f"service:{self.name}"


@dataclass(frozen=True)
class AnonymousPrincipal:
    """Nobody logged in (DRF's ``UNAUTHENTICATED_USER``, without django.contrib.auth)."""

    is_authenticated: bool = False
    is_anonymous: bool = True
    is_staff: bool = False
    is_service: bool = False
    id = None
    pk = None

    def __str__(self) -> str:
        return "anonymous"


def anonymous_user() -> AnonymousPrincipal:
    return AnonymousPrincipal()


class LabJWTAuthentication(authentication.BaseAuthentication):
    """``Authorization: Bearer <jwt>`` → ``LabUser`` or ``ServicePrincipal``.

    No header means anonymous; a bad, expired or misused token is a 401.
    """

    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.lower().encode():
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Authorization header must be 'Bearer <token>'.")
        try:
            token = header[1].decode("ascii")
            claims = verify(token)
        except (UnicodeDecodeError, jwt.ExpiredSignatureError) as exc:
            raise exceptions.AuthenticationFailed(
                "Token has expired." if isinstance(exc, jwt.ExpiredSignatureError) else "Token is malformed."
            ) from exc
        except jwt.InvalidTokenError as exc:
            raise exceptions.AuthenticationFailed("Token is invalid.") from exc
        return self.principal_from(claims), claims

    def principal_from(self, claims: dict):
        kind = claims.get("typ")
        if kind == "access" and claims["iss"] == "user":
            if revocation.is_revoked(claims):
                raise exceptions.AuthenticationFailed(
                    "Token has been revoked (logout, password change or a change of role); log in again."
                )
            try:
                return LabUser(
                    id=int(claims["sub"]),
                    email=str(claims.get("email", "")),
                    name=str(claims.get("name", "")),
                    is_staff=bool(claims.get("staff", False)),
                )
            except (KeyError, ValueError) as exc:
                raise exceptions.AuthenticationFailed("Token is invalid.") from exc
        if kind == "service" and claims.get("aud") == _conf()["SERVICE"]:
            check_service_token_lifetime(claims)
            return ServicePrincipal(name=claims["iss"])
        raise exceptions.AuthenticationFailed("This token cannot be used here.")

    def authenticate_header(self, request):
        return 'Bearer realm="lab"'


class IsLabUser(permissions.BasePermission):
    """A logged-in customer or staff member (not a service)."""

    message = "Log in with a user token."

    def has_permission(self, request, view):
        return bool(request.user and request.user.is_authenticated and not getattr(request.user, "is_service", False))


class IsStaff(IsLabUser):
    message = "Staff only."

    def has_permission(self, request, view):
        return super().has_permission(request, view) and bool(request.user.is_staff)


class ServiceOnly(permissions.BasePermission):
    """Internal endpoints: only the listed calling services are accepted."""

    allowed: tuple[str, ...] = ()
    message = "This endpoint is internal to the lab's services."

    @classmethod
    def allow(cls, *services: str) -> type[ServiceOnly]:
        return type(f"ServiceOnly_{'_'.join(services)}", (cls,), {"allowed": tuple(services)})

    def has_permission(self, request, view):
        user = request.user
        return bool(user and getattr(user, "is_service", False) and user.name in self.allowed)
