"""Helpers for services' tests: real signed tokens, as a peer or user_service would mint them."""

from __future__ import annotations

import time

from . import auth


def user_token(*, user_id: int, email: str = "", name: str = "", staff: bool = False, ttl: int = 900, **extra) -> str:
    """An access token as user_service issues it (signed with the ``user`` key)."""
    now = int(time.time())
    claims = {
        "typ": "access",
        "sub": str(user_id),
        "email": email or f"user{user_id}@lab.local",
        "name": name or f"User {user_id}",
        "staff": staff,
        "exp": now + ttl,
        **extra,
    }
    return auth.sign(claims, issuer="user")


def service_token(*, caller: str, audience: str, ttl: int = 60) -> str:
    """A service token as ``caller`` mints it for ``audience``."""
    return auth.sign({"typ": "service", "sub": caller, "aud": audience, "exp": int(time.time()) + ttl}, issuer=caller)


def bearer(token: str) -> dict:
    """Keyword arguments for Django's test client: ``client.get(url, **bearer(tok))``."""
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}
