"""Bulkhead: many customers checking out while a few only list their orders, each reported on its own row.

The bulkhead lab's scenario. ``READERS`` users (default 2) only list their
orders, ``GET /api/orders/?page_size=10``, reported as ``list orders``; every
other user checks out again and again (``POST /api/orders/``). Listing orders
needs no other service: while payment hangs, it stays fast only if the order
service still has a free request thread for it. A reader gives up after
``READ_PATIENCE`` seconds (default 5): a list that waited that long is a failure.

Usage: labctl load --scenario bulkhead --users 18 --spawn-rate 10 --duration 20s

Environment: READERS, READ_PATIENCE, THINK_TIME (default "1-2" for the buyers,
the readers list every 0.3-0.6 s), DECLINE_SHARE, STOCK_FLOOR (see common.py).
Expected failures: none while payment answers; while it hangs, the checkouts
that waited on it (and, without a bulkhead, the lists of orders too).
"""

import os

from locust import between, task

from common import ShopUser, _json, listen_restock, think_time

listen_restock()

LIST_NAME = "list orders"


def _number(name: str, default: float, *, low: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SystemExit(f"{name}={raw!r}: use a number") from None
    if value < low:
        raise SystemExit(f"{name}={raw!r}: at least {low:g}")
    return value


class Reader(ShopUser):
    """Lists its orders and nothing else: a request that needs no peer of the order service."""

    fixed_count = int(_number("READERS", 2, low=1))
    network_timeout = _number("READ_PATIENCE", 5.0, low=0.5)
    wait_time = between(0.3, 0.6)

    @task
    def list_orders(self):
        self.ensure_signed_in()
        with self.call("GET", "order", "/api/orders/?page_size=10", name=LIST_NAME, catch_response=True) as r:
            if r.status_code == 200:
                r.success()
            else:
                self.judge_failure(r, _json(r) if r.status_code else {}, "order")  # no answer: no body


class Buyer(ShopUser):
    """Checks out again and again: each checkout calls inventory, then payment."""

    wait_time = think_time("1-2")

    @task
    def order(self):
        self.place_order()
