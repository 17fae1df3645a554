"""Revoked access tokens, as every service sees them: the chassis auth against the real Redis."""

import os
import uuid

import pytest

from chassis import revocation
from chassis.testing import bearer, user_token

REDIS_URL = os.environ.get("CHASSIS_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def redis_cache(location: str = REDIS_URL, prefix: str = "") -> dict:
    return {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": location,
        "KEY_PREFIX": prefix,
        "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
    }


class Clock:
    """The monotonic clock of the revocation copy, moved by hand."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def shared_list(settings, monkeypatch):
    """The revocation list on the real Redis, under a prefix of this test only."""
    prefix = f"chassis-revocation-test-{uuid.uuid4().hex}"
    settings.CHASSIS = {**settings.CHASSIS, "REVOCATION_CACHE": redis_cache(prefix=prefix), "LAB_STATE_REFRESH": 0.5}
    clock = Clock()
    monkeypatch.setattr(revocation, "monotonic", clock)
    revocation.forget_local()
    yield clock
    revocation.clear()


def another_process_sees_it_now():
    """What a worker of another service sees once its copy is older than LAB_STATE_REFRESH."""
    revocation.forget_local()


def test_a_logged_out_session_is_refused_and_others_pass(api, shared_list):
    """Ensure an access token of a session user_service logged out is a 401, another session's passes."""
    token = user_token(user_id=7, sid="session-a")
    other = user_token(user_id=7, sid="session-b")
    assert api.get("/whoami/", **bearer(token)).status_code == 200

    revocation.revoke_session(sid="session-a", lifetime=900)
    another_process_sees_it_now()

    refused = api.get("/whoami/", **bearer(token))
    assert refused.status_code == 401
    assert "revoked" in refused.json()["message"]
    assert api.get("/whoami/", **bearer(other)).status_code == 200


def test_a_password_change_refuses_every_older_token_of_the_user(api, shared_list):
    """Ensure a user's valid-after time refuses their tokens issued before it, not later ones or other users'."""
    before = user_token(user_id=7)
    someone_else = user_token(user_id=8)

    valid_after = revocation.revoke_user(user_id=7, lifetime=900)
    another_process_sees_it_now()

    assert api.get("/whoami/", **bearer(before)).status_code == 401
    assert api.get("/whoami/", **bearer(someone_else)).status_code == 200
    # user_service dates a token issued after the revocation no earlier than valid_after.
    assert api.get("/whoami/", **bearer(user_token(user_id=7, iat=valid_after))).status_code == 200


def test_each_process_reads_the_list_at_most_every_refresh(api, shared_list):
    """Ensure a process reuses its copy while it is fresh and sees another process's revocation after."""
    token = user_token(user_id=9, sid="session-c")
    assert api.get("/whoami/", **bearer(token)).status_code == 200  # the copy (empty) is read here
    # Another process (user_service) records the logout straight in Redis.
    revocation._store().set(revocation.KEY, {"s:session-c": (0, revocation.clock() + 900)}, timeout=900)

    shared_list.now += 0.2
    assert api.get("/whoami/", **bearer(token)).status_code == 200  # this process's copy: 0.2 s old
    shared_list.now += 0.4
    assert api.get("/whoami/", **bearer(token)).status_code == 401  # 0.6 s: read again


def test_redis_down_keeps_the_last_list_read(api, shared_list, settings):
    """Ensure an unreadable list fails open with the last list read: known revocations still bite."""
    revoked = user_token(user_id=7, sid="session-d")
    revocation.revoke_session(sid="session-d", lifetime=900)
    another_process_sees_it_now()
    assert api.get("/whoami/", **bearer(revoked)).status_code == 401  # the list is read from Redis

    reachable = settings.CHASSIS
    settings.CHASSIS = {**settings.CHASSIS, "REVOCATION_CACHE": redis_cache("redis://127.0.0.1:1/0")}
    shared_list.now += 5

    assert api.get("/whoami/", **bearer(revoked)).status_code == 401
    assert api.get("/whoami/", **bearer(user_token(user_id=8))).status_code == 200
    settings.CHASSIS = reachable


def test_a_revocation_that_cannot_be_written_raises(settings):
    """Ensure writing to an unreachable list raises RevocationUnavailable (the caller answers 503)."""
    settings.CHASSIS = {**settings.CHASSIS, "REVOCATION_CACHE": redis_cache("redis://127.0.0.1:1/0")}
    with pytest.raises(revocation.RevocationUnavailable):
        revocation.revoke_user(user_id=7, lifetime=900)


def test_entries_are_kept_only_while_a_token_they_refuse_can_live(shared_list, monkeypatch):
    """Ensure an entry past its lifetime is dropped at the next write, so the list stays small."""
    now = [10_000.0]
    monkeypatch.setattr(revocation, "clock", lambda: now[0])
    revocation.revoke_session(sid="old", lifetime=900)
    now[0] += 901
    revocation.revoke_session(sid="new", lifetime=900)
    another_process_sees_it_now()

    assert set(revocation.entries()) == {"s:new"}
