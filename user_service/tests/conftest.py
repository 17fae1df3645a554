"""Fixtures of the user service's tests: users, real signed tokens, clean throttle counts."""

from __future__ import annotations

import copy
import itertools

import pytest
from django.conf import settings as django_settings
from django.core.cache import cache
from django.test import override_settings
from rest_framework.test import APIClient

from accounts.models import User

from .helpers import PASSWORD, client_for

_sequence = itertools.count(1)


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    # The production hasher costs ~0.5 s per call by design; the tests check behaviour, not cost.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(scope="session", autouse=True)
def _own_cache_namespace():
    """Keep the tests' cache keys apart from a running user service sharing the same Redis database.

    Without this, `make test` during a lab session would read the live service's faults
    and wipe its throttle counts.
    """
    caches = copy.deepcopy(django_settings.CACHES)
    caches["default"]["KEY_PREFIX"] = f"test:{caches['default'].get('KEY_PREFIX', '')}"
    with override_settings(CACHES=caches):
        yield


@pytest.fixture(autouse=True)
def _fresh_revocations():
    """Each test starts with no revoked token (the list is this suite's own, see chassis.settings)."""
    from chassis import revocation

    revocation.clear()
    yield
    revocation.clear()


@pytest.fixture(autouse=True)
def _fresh_throttle_counts():
    """Forget login counts between tests (only the tests' own keys: the Redis database may be shared)."""
    _forget_cache_keys()
    yield
    _forget_cache_keys()


def _forget_cache_keys():
    if "RedisCache" not in django_settings.CACHES["default"]["BACKEND"]:
        cache.clear()
        return
    client = cache._cache.get_client(write=True)
    prefix = django_settings.CACHES["default"]["KEY_PREFIX"]
    keys = list(client.scan_iter(match=f"{prefix}:*", count=500))
    if keys:
        client.delete(*keys)


@pytest.fixture
def api():
    """An anonymous API client speaking JSON."""
    return APIClient()


@pytest.fixture
def make_user(db):
    """Create a user row: ``make_user(email=..., password=..., name=..., is_staff=...)``."""

    def make(*, email: str | None = None, password: str = PASSWORD, name: str = "", **extra) -> User:
        number = next(_sequence)
        return User.objects.create_user(
            email or f"user{number}@example.test", password, name=name or f"User {number}", **extra
        )

    return make


@pytest.fixture
def user(make_user):
    return make_user(email="carol@example.test", name="Carol Test")


@pytest.fixture
def staff(make_user):
    return make_user(email="staff@example.test", name="Staff Test", is_staff=True)


@pytest.fixture
def user_client(user):
    return client_for(user)


@pytest.fixture
def staff_client(staff):
    return client_for(staff)
