"""Settings of the order service: the chassis defaults plus the checkout saga's own knobs and Celery.

Every value comes from the environment (see ``.env.example``); the chassis
reads ``var/env/order.env`` first, so the variables below see it too.
"""

import os
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from chassis import parts
from chassis.settings import build

BASE_DIR = Path(__file__).resolve().parent.parent

globals().update(
    build(
        service="order",
        base_dir=BASE_DIR,
        apps=["orders"],
        depends_on=("inventory", "payment"),
        title="Lab order service",
        description=(
            "Orders: create (with the checkout saga: reserve stock, charge, commit), draft, modify, "
            "cancel with refund and restock, and the tracking timeline of every order."
        ),
    )
)

env = environ.Env()

# How long inventory holds the stock of a checkout that never commits (a lost
# order's hold then expires on its own instead of staying reserved forever).
ORDER_RESERVATION_TTL_SECONDS = env.int("ORDER_RESERVATION_TTL_SECONDS", default=600)

# How long one runner of a saga owns it before another (a replay of the same
# request, a retried cancel, later a Celery worker) may take it over. It must
# outlast one peer call with its retries (CLIENT_* timeouts x attempts).
ORDER_SAGA_LEASE_SECONDS = env.int("ORDER_SAGA_LEASE_SECONDS", default=120)
# The same, for a task a worker has taken from the broker (renewed at every step
# and while it waits for a retry): a killed worker's sagas are recovered this
# long after it died. A step longer than this (a peer hanging with timeouts
# switched off) may get a second runner meanwhile, which the saga's keys make harmless.
ORDER_SAGA_TASK_LEASE_SECONDS = env.int("ORDER_SAGA_TASK_LEASE_SECONDS", default=30)

# --------------------------------------------------------------------------- the asynchronous saga
# In "async" mode POST /api/orders/ answers 202 at once and the Celery worker
# runs the saga; the lab admin switches it at run time (GET/PUT /_lab/saga/),
# these are only the values in force until someone does.
ORDER_SAGA_MODE = env.str("ORDER_SAGA_MODE", default=parts.DEFAULT_SAGA_MODE)
if ORDER_SAGA_MODE not in parts.SAGA_MODES:
    raise ImproperlyConfigured(f"ORDER_SAGA_MODE is {ORDER_SAGA_MODE!r}: use {' or '.join(parts.SAGA_MODES)}.")
# How long the worker keeps retrying a saga whose peer is down before it gives
# up and compensates (counted from the order's creation).
ORDER_SAGA_DEADLINE_SECONDS = env.int("ORDER_SAGA_DEADLINE_SECONDS", default=120)
if not 30 <= ORDER_SAGA_DEADLINE_SECONDS <= 3600:
    raise ImproperlyConfigured(f"ORDER_SAGA_DEADLINE_SECONDS is {ORDER_SAGA_DEADLINE_SECONDS}: use 30 to 3600.")
# Exponential backoff between the worker's attempts: base * 2**attempt, capped, with jitter.
ORDER_SAGA_RETRY_BACKOFF_SECONDS = env.float("ORDER_SAGA_RETRY_BACKOFF_SECONDS", default=1.0)
ORDER_SAGA_RETRY_BACKOFF_MAX_SECONDS = env.float("ORDER_SAGA_RETRY_BACKOFF_MAX_SECONDS", default=30.0)

# Periodic jobs (Celery beat), in seconds.
ORDER_RECOVERY_INTERVAL_SECONDS = env.float("ORDER_RECOVERY_INTERVAL_SECONDS", default=15.0)
ORDER_EXPIRY_INTERVAL_SECONDS = env.float("ORDER_EXPIRY_INTERVAL_SECONDS", default=30.0)
ORDER_SHIPPING_INTERVAL_SECONDS = env.float("ORDER_SHIPPING_INTERVAL_SECONDS", default=15.0)
# Simulated logistics: a CONFIRMED order ships after this long, and is delivered as long after that.
ORDER_SHIPPING_AFTER_SECONDS = env.int("ORDER_SHIPPING_AFTER_SECONDS", default=60)

# --------------------------------------------------------------------------- Celery
# The broker is the service's own Redis database (the one REDIS_URL names, which
# the chassis moves out of the live lab's way under pytest). Without Redis, an
# embedded broker made of files under $LAB_ROOT/var/celery/ works across the
# processes of one machine; /health/ says which one is in use.
# CELERY_BROKER_URL, when set, wins over both. A unit test run sends nothing
# anywhere (an in-process broker) unless it sets CELERY_BROKER_URL itself.
_cache = CACHES["default"]  # noqa: F821 — set by build() above
_redis_url = _cache["LOCATION"] if _cache["BACKEND"].endswith("RedisCache") else ""
_default_broker = "memory://" if "PYTEST_VERSION" in os.environ else (_redis_url or "filesystem://localhost//")
CELERY_BROKER_FOLDER = Path(env.str("CELERY_BROKER_FOLDER", default="") or LAB_ROOT / "var" / "celery")  # noqa: F821
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="") or _default_broker
if CELERY_BROKER_URL.startswith("filesystem://"):
    for _folder in ("queue", "control"):
        (CELERY_BROKER_FOLDER / _folder).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(CELERY_BROKER_FOLDER / "queue"),
        "data_folder_out": str(CELERY_BROKER_FOLDER / "queue"),
        "control_folder": str(CELERY_BROKER_FOLDER / "control"),
        "store_processed": False,
    }
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        # A message a killed worker had taken comes back after this long. It must
        # outlast the longest countdown plus the longest task, or a waiting retry
        # would be handed out twice (harmless, since sagas are idempotent, but noisy).
        "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=900),
        "socket_connect_timeout": 1,
        "socket_timeout": 2,
        # Every key of the broker (queues "saga" and "beat" included) under the lab's Redis prefix,
        # so that labs sharing one Redis (a test run beside the running lab) never take each other's tasks.
        "global_keyprefix": f"{CHASSIS['REDIS_PREFIX']}:celery:",  # noqa: F821 — set by build() above
    }
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_CONNECTION_TIMEOUT = 2
# Nobody reads task results: the order in the database is the result.
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
# A task is acknowledged when it has finished, not when it starts, and a worker
# that dies mid-task gives it back: a SIGKILL loses nothing. Each process takes
# one task at a time, so a killed worker holds as few as possible.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True
# A saga step is bounded by the client's timeouts; this only stops a task stuck for another reason.
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=300)
CELERY_TASK_DEFAULT_QUEUE = "saga"
CELERY_TASK_ROUTES = {
    "orders.saga_run": {"queue": "saga"},
    "orders.sagas_recover": {"queue": "beat"},
    "orders.reservations_expire": {"queue": "beat"},
    "orders.shipping_advance": {"queue": "beat"},
}
# Log through Django's LOGGING (the service's format, with the request id) instead of Celery's own.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE = {
    # A beat tick that waits longer than its interval in the queue is dropped: the next one does the same work.
    "recover-stalled-sagas": {
        "task": "orders.sagas_recover",
        "schedule": ORDER_RECOVERY_INTERVAL_SECONDS,
        "options": {"expires": ORDER_RECOVERY_INTERVAL_SECONDS},
    },
    "expire-stale-reservations": {
        "task": "orders.reservations_expire",
        "schedule": ORDER_EXPIRY_INTERVAL_SECONDS,
        "options": {"expires": ORDER_EXPIRY_INTERVAL_SECONDS},
    },
    "advance-shipping": {
        "task": "orders.shipping_advance",
        "schedule": ORDER_SHIPPING_INTERVAL_SECONDS,
        "options": {"expires": ORDER_SHIPPING_INTERVAL_SECONDS},
    },
}
