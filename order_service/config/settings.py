"""Settings of the order service: the chassis defaults plus the checkout saga's own knobs.

Every value comes from the environment (see ``.env.example``); the chassis
reads ``var/env/order.env`` first, so the variables below see it too.
"""

from pathlib import Path

import environ

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
