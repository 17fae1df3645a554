"""The lab's Redis cache backend: Django's, with one Redis client per connection pool.

Django's ``RedisCacheClient.get_client`` builds a new ``redis.Redis`` object for every
cache call; its constructor fills a table of some two hundred response callbacks,
which cost more CPU than the round trip itself. A service makes several cache calls
per request (faults and switches, throttles, idempotency, a fallback copy), so this
backend keeps the client of each pool and reuses it: a ``redis.Redis`` client is safe
to share between threads (each command takes a connection from the pool).

Keys are not checked for memcached's limits (length, spaces, control characters):
Redis takes any key, and the check walks every character of every key.

The class keeps the name ``RedisCache``: ``/health/`` reports the backend by it.
"""

from __future__ import annotations

from django.core.cache.backends import redis as django_redis


class RedisCacheClient(django_redis.RedisCacheClient):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._clients: dict[int, object] = {}

    def get_client(self, key=None, *, write=False):
        index = self._get_connection_pool_index(write)
        client = self._clients.get(index)
        if client is None:
            if index not in self._pools:
                self._pools[index] = self._pool_class.from_url(self._servers[index], **self._pool_options)
            client = self._clients[index] = self._client(connection_pool=self._pools[index])
        return client


class RedisCache(django_redis.RedisCache):
    def __init__(self, server, params):
        super().__init__(server, params)
        self._class = RedisCacheClient

    def validate_key(self, key):
        """Redis takes any key: no memcached warnings (they cost a walk over every character)."""
