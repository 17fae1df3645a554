"""The async saga's clocks on real processes: its deadline, and the expiry of the stock it holds.

Each test starts the order service's Celery worker and beat with the
settings it needs (short backoff, a fast expiry sweep, a short reservation
TTL), switches the saga to async, injects a payment outage on the real
payment service and follows one order to its end through the public APIs
and the reconciliation endpoints. The worker and beat are stopped after each
test, and the lab admin's fixture puts the saga mode and the faults back.
"""

from __future__ import annotations

import time

import pytest

from labctl import audit

from .conftest import stock_of
from .conftest_lab import SPREAD_SECONDS, history_notes, wait_until

WORKER_ENV = {
    "ORDER_SAGA_TASK_LEASE_SECONDS": "8",
    "ORDER_SAGA_RETRY_BACKOFF_SECONDS": "0.5",
    "ORDER_SAGA_RETRY_BACKOFF_MAX_SECONDS": "2",
    "ORDER_SHIPPING_AFTER_SECONDS": "3600",
}
BEAT_ENV = {"ORDER_RECOVERY_INTERVAL_SECONDS": "2", "ORDER_EXPIRY_INTERVAL_SECONDS": "1"}
DEADLINE_SECONDS = 30  # the smallest deadline the saga switch accepts
TERMINAL = {"CONFIRMED", "CANCELLED", "SHIPPED", "DELIVERED"}


@pytest.fixture
def celery(lab):
    """A function starting the worker (with ``env`` on top of WORKER_ENV) and beat; both stopped afterwards."""

    def start(**env: str) -> None:
        lab.start_worker(env={**WORKER_ENV, **env})
        lab.start_beat(env=BEAT_ENV)

    yield start
    lab.stop_celery()
    for name in ("worker", "beat"):
        if name in lab.logs:
            tracebacks = [line for line in lab.log_tail(name, 5000).splitlines() if "Traceback" in line]
            assert not tracebacks, f"{name} logged a traceback; see {lab.logs[name]}"


def async_mode(lab_admin, *, deadline_seconds: int) -> None:
    saga = lab_admin.api.json(
        "PUT", "order", "/_lab/saga/", json={"mode": "async", "deadline_seconds": deadline_seconds}
    )
    assert (saga["mode"], saga["deadline_seconds"]) == ("async", deadline_seconds)
    time.sleep(SPREAD_SECONDS)


def order_of(api, order_id: int) -> dict:
    response = api.get("order", f"/api/orders/{order_id}/")
    assert response.status_code == 200, response.text
    return response.json()


def ended(api, order_id: int) -> dict | None:
    order = order_of(api, order_id)
    return order if order["status"] in TERMINAL and order["saga_step"] == "done" else None


def rows_of(lab_admin, service: str, path: str, order_id: int) -> list[dict]:
    return [row for row in lab_admin.api.all_pages(service, path) if str(row["order_id"]) == str(order_id)]


def assert_audit_clean(lab_admin) -> None:
    result = audit.check(audit.collect(lab_admin.api))
    assert result["ok"], audit.render(result)


def test_a_payment_outage_longer_than_the_deadline_gives_up(lab, lab_admin, celery, shopper, product):
    """Ensure an order whose payment is down past its 30 s deadline ends CANCELLED "gave up", stock back, no capture.

    The outage lasts 45 s: the worker retries the charge until the deadline,
    gives up, and its compensation (which has no deadline) settles the
    unknown charge and releases the stock once payment answers again.
    """
    celery()
    async_mode(lab_admin, deadline_seconds=DEADLINE_SECONDS)
    sku = product(stock=10, price_cents=1200)
    lab_admin.add_fault("payment", kind="outage", ttl_seconds=45)

    placed = shopper.order(sku, quantity=3)

    assert placed["status_code"] == 202, placed["data"]
    order_id = placed["data"]["id"]
    order = wait_until(lambda: ended(shopper.api, order_id), timeout=45 + 40, interval=1, message="order ended")
    assert order["status"] == "CANCELLED", history_notes(order)
    assert order["status_reason"] == f"Gave up after {DEADLINE_SECONDS} s: payment unavailable"
    steps = [event["step"] for event in order["history"]]
    assert {"waiting", "compensating", "charge_voided", "released", "cancelled"} <= set(steps), history_notes(order)
    assert "confirmed" not in steps
    stock = stock_of(shopper.api, sku)
    assert (stock["available"], stock["reserved"], stock["sold"]) == (10, 0, 0)
    charges = rows_of(lab_admin, "payment", "/internal/reconciliation/charges/", order_id)
    assert [c for c in charges if c["status"] == "CAPTURED"] == [], charges
    [reservation] = rows_of(lab_admin, "inventory", "/internal/reconciliation/reservations/", order_id)
    assert reservation["status"] == "RELEASED"
    assert_audit_clean(lab_admin)


def test_a_stranded_reservation_expires_through_beat_and_the_order_is_not_confirmed(
    lab, lab_admin, celery, shopper, product
):
    """Ensure a HELD reservation past its TTL is expired by beat (inventory's endpoint), and its order is not CONFIRMED.

    Reservations are held for 10 s and the sweep runs every second; payment
    is down for 20 s, so the order's stock is held, unused, past its TTL. Once
    payment is back the charge goes through, the commit of the expired
    reservation is refused, and the compensation refunds: CANCELLED, stock
    back, no money kept.
    """
    celery(ORDER_RESERVATION_TTL_SECONDS="10")
    async_mode(lab_admin, deadline_seconds=120)
    sku = product(stock=10, price_cents=800)
    lab_admin.add_fault("payment", kind="outage", ttl_seconds=20)

    placed = shopper.order(sku, quantity=2)

    assert placed["status_code"] == 202, placed["data"]
    order_id = placed["data"]["id"]
    reservation = wait_until(
        lambda: next(
            (
                r
                for r in rows_of(lab_admin, "inventory", "/internal/reconciliation/reservations/", order_id)
                if r["status"] == "EXPIRED"
            ),
            None,
        ),
        timeout=30,
        interval=0.5,
        message="the order's reservation expired",
    )
    assert order_of(shopper.api, order_id)["status"] == "PENDING"
    stock = stock_of(shopper.api, sku)
    assert (stock["available"], stock["reserved"], stock["sold"]) == (10, 0, 0)

    order = wait_until(lambda: ended(shopper.api, order_id), timeout=60, interval=1, message="order ended")
    assert order["status"] == "CANCELLED", history_notes(order)
    assert order["status_reason"].startswith("Stock could not be committed"), order["status_reason"]
    steps = [event["step"] for event in order["history"]]
    assert "confirmed" not in steps and "refunded" in steps, history_notes(order)
    [charge] = rows_of(lab_admin, "payment", "/internal/reconciliation/charges/", order_id)
    assert (charge["status"], charge["refunded_cents"]) == ("CAPTURED", charge["amount_cents"])
    stock = stock_of(shopper.api, sku)
    assert (stock["available"], stock["reserved"], stock["sold"]) == (10, 0, 0)
    [still] = rows_of(lab_admin, "inventory", "/internal/reconciliation/reservations/", order_id)
    assert still["id"] == reservation["id"] and still["status"] == "EXPIRED"
    assert_audit_clean(lab_admin)
