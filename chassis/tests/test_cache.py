"""The lab's Redis cache backend: Django's, with one Redis client per connection pool, against the real Redis."""

import os
import uuid

import pytest
import redis

from chassis.cache import RedisCache

REDIS_URL = os.environ.get("CHASSIS_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture
def backend():
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5).ping()
    except redis.RedisError:
        pytest.skip(f"no Redis at {REDIS_URL}")
    cache = RedisCache(
        REDIS_URL,
        {
            "KEY_PREFIX": f"chassis-cache-test-{uuid.uuid4().hex}",
            "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
        },
    )
    yield cache
    cache.delete_many(["a", "b", "n", "with spaces"])


def test_cache_calls_reuse_one_redis_client(backend):
    """Ensure twenty cache calls build one Redis client, not one each (its constructor costs more than the call)."""
    built = []
    client_class = backend._cache._client

    def counting(*args, **kwargs):
        built.append(1)
        return client_class(*args, **kwargs)

    backend._cache._client = counting
    for n in range(10):
        backend.set("a", {"n": n}, timeout=30)
        assert backend.get("a") == {"n": n}
    assert len(built) == 1


def test_the_backend_behaves_as_djangos(backend):
    """Ensure get, set, add, incr, delete and timeouts answer as Django's Redis backend does."""
    assert backend.get("a", "default") == "default"
    backend.set("a", [1, "two"], timeout=30)
    assert backend.get("a") == [1, "two"]
    assert backend.add("a", "other", timeout=30) is False
    assert backend.add("b", "first", timeout=30) is True
    backend.set("n", 1, timeout=30)
    assert backend.incr("n", 2) == 3
    assert backend.delete("b") is True
    assert backend.get("b") is None
    backend.set("with spaces", "kept", timeout=30)  # Redis takes any key
    assert backend.get("with spaces") == "kept"
    backend.set("a", "gone", timeout=0)
    assert backend.get("a") is None
