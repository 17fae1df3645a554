"""Checkout: customers who log in once, add a test card, then order again and again.

Each order goes through the whole saga (reserve stock, charge, commit). With
the sync saga the order service answers 201 with the final state; with the
async saga it answers 202 and the client polls ``GET /api/orders/<id>/`` until
the order is CONFIRMED or CANCELLED. ``SAGA_MODE`` switches the order service
for the run (through ``PUT /_lab/saga/``, restored afterwards); the client
follows whatever answer it gets either way.

A share of the orders (``DECLINE_SHARE``, default 0.05) is paid with the
declined test card: those end CANCELLED, as they should, and are counted on
their own row ``/api/orders/ [declined card, expected]``, not as failures.

Usage: labctl load --scenario checkout --users 50 --spawn-rate 10 --duration 60s
       SAGA_MODE=async labctl load --scenario checkout ...   (or --env SAGA_MODE=async)

Environment: SAGA_MODE (sync | async; unset: leave the service as it is),
DECLINE_SHARE, THINK_TIME (default "0.5-1.5"), POLL_TIMEOUT, STOCK_FLOOR,
ACCOUNTS_FILE (see common.py).
Expected failures: none (declines are expected outcomes).
"""

from locust import task

from common import ShopUser, listen_restock, think_time
from labhooks import use_saga_mode_from_env

listen_restock()
SAGA_SWITCH = use_saga_mode_from_env()


class Customer(ShopUser):
    wait_time = think_time("0.5-1.5")

    @task
    def order(self):
        self.place_order()
