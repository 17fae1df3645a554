"""Helpers for services' tests: real signed tokens, as a peer or user_service would mint them."""

from __future__ import annotations

import contextlib
import time
import uuid
from pathlib import Path

import jwt
from django.conf import settings

from . import auth, keys


def peer_keys_dir(issuer: str) -> Path:
    """Where a test keeps ``issuer``'s private key: that identity's own dir beside this service's.

    With the lab's layout (``var/keys/<identity>/``) that is the lab's real key; in a
    temporary keys dir it is a pair made for the test. Its public key is copied into
    this service's keys dir, which is all the service under test ever reads of it.
    """
    return Path(settings.CHASSIS["KEYS_DIR"]).parent / issuer


def sign_as(issuer: str, claims: dict) -> str:
    """Sign ``claims`` as ``issuer``: this service with :func:`auth.sign`, a peer with the peer's own key.

    Test code only: a service itself can sign as nobody but itself.
    """
    own_dir = Path(settings.CHASSIS["KEYS_DIR"])
    if issuer == settings.CHASSIS["SERVICE"]:
        return auth.sign(claims)
    peer_dir = peer_keys_dir(issuer)
    keys.ensure_key_pair(peer_dir, issuer)
    public = keys.public_path(peer_dir, issuer).read_bytes()
    if not keys.public_path(own_dir, issuer).exists() or keys.public_path(own_dir, issuer).read_bytes() != public:
        own_dir.mkdir(parents=True, exist_ok=True)
        keys.public_path(own_dir, issuer).write_bytes(public)
        keys.load_public_key.cache_clear()
    key = keys.load_private_key(str(peer_dir), issuer)
    payload = {"iat": int(time.time()), "jti": uuid.uuid4().hex, **claims, "iss": issuer}
    return jwt.encode(payload, key, algorithm=auth.ALGORITHM)


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
    return sign_as("user", claims)


def service_token(*, caller: str, audience: str, ttl: int = 60) -> str:
    """A service token as ``caller`` mints it for ``audience``."""
    return sign_as(caller, {"typ": "service", "sub": caller, "aud": audience, "exp": int(time.time()) + ttl})


def bearer(token: str) -> dict:
    """Keyword arguments for Django's test client: ``client.get(url, **bearer(tok))``."""
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


class StatementCount:
    """The SQL statements run so far inside :func:`statements_counted`, counted as ``lab_db_queries_total`` counts.

    ``marks`` are the counts at each :meth:`mark` (e.g. when a fake peer is called), so a
    test can tell how many statements each step of a request ran.
    """

    def __init__(self):
        self.count = 0
        self.marks: list[tuple[str, int]] = []
        self.sql: list[str] = []

    def __call__(self, execute, sql, params, many, context):
        self.count += 1
        self.sql.append(sql)
        return execute(sql, params, many, context)

    def mark(self, name: str) -> None:
        self.marks.append((name, self.count))

    def between_marks(self) -> dict[str, int]:
        """Statements run before each mark since the previous one, and after the last (``"end"``)."""
        counts, previous = {}, 0
        for name, at in [*self.marks, ("end", self.count)]:
            counts[name] = at - previous
            previous = at
        return counts


@contextlib.contextmanager
def statements_counted():
    """Count the statements the default database runs inside (a ``connection.execute_wrapper``, as the metric does).

    Transaction control (BEGIN, COMMIT) is not a statement the metric sees; a test that
    wants the figures of a real request runs with ``django_db(transaction=True)``, where
    ``atomic`` blocks are transactions, not savepoints.
    """
    from django.db import connection

    counter = StatementCount()
    with connection.execute_wrapper(counter):
        yield counter
