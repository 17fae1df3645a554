"""The worker's broker as the web processes see it: the ``/health/`` check and the queue depth gauge.

The broker is Redis (the service's own database) when ``REDIS_URL`` is set,
else an embedded one made of files (kombu's ``filesystem://`` transport) that
works for the processes of one machine. Both are described here so that a
student can tell from ``/health/`` which one the lab runs on.
"""

from __future__ import annotations

import os
import threading
from urllib.parse import urlparse

from django.conf import settings

QUEUES = ("saga", "beat")
# kombu's Redis transport keeps a queue's messages in one list per priority step.
_PRIORITY_SEPARATOR = "\x06\x16"
_PRIORITY_STEPS = (0, 3, 6, 9)

_client = None
_client_url = ""
_client_lock = threading.Lock()


def transport() -> str:
    """``redis``, ``filesystem`` or ``memory`` (unit tests)."""
    scheme = urlparse(settings.CELERY_BROKER_URL).scheme
    return "redis" if scheme in ("redis", "rediss") else scheme


def _redis():
    global _client, _client_url
    import redis

    with _client_lock:
        if _client is None or _client_url != settings.CELERY_BROKER_URL:
            _client = redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_connect_timeout=1, socket_timeout=1)
            _client_url = settings.CELERY_BROKER_URL
        return _client


def queue_depths() -> dict[str, int] | None:
    """Tasks waiting in each queue (Redis only; None for the embedded broker). Raises when Redis is down."""
    if transport() != "redis":
        return None
    prefix = settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("global_keyprefix", "")
    pipe = _redis().pipeline(transaction=False)
    for queue in QUEUES:
        for step in _PRIORITY_STEPS:
            pipe.llen(prefix + (queue if not step else f"{queue}{_PRIORITY_SEPARATOR}{step}"))
    lengths = pipe.execute()
    per_queue = len(_PRIORITY_STEPS)
    return {queue: sum(lengths[i * per_queue : (i + 1) * per_queue]) for i, queue in enumerate(QUEUES)}


def check_broker() -> dict:
    """The ``broker`` entry of ``/health/``: which broker, and whether it answers."""
    kind = transport()
    if kind == "redis":
        _redis().ping()
        return {"transport": "redis", "queues": queue_depths()}
    if kind == "filesystem":
        folder = settings.CELERY_BROKER_FOLDER
        if not os.access(folder / "queue", os.W_OK):
            raise RuntimeError(f"the embedded broker's folder {folder / 'queue'} is not writable")
        return {
            "transport": "filesystem",
            "embedded": True,
            "folder": str(folder),
            "note": "No Redis: an embedded broker (files), shared by the processes of this machine only.",
        }
    return {"transport": kind, "embedded": True}


def queue_depth_samples() -> list[tuple[tuple[str], int]]:
    """Samples of the ``lab_celery_queue_depth`` gauge: one per queue, none without Redis."""
    depths = queue_depths()
    return [((queue,), depth) for queue, depth in (depths or {}).items()]
