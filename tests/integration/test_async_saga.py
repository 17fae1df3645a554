"""The asynchronous saga with real processes: the order service, its Celery worker and beat, inventory and payment.

The module switches the order service to async mode, starts the worker and
beat on the harness's broker, and puts everything back afterwards (sync mode,
no faults, closed breakers, worker and beat stopped) so later modules see the
lab as they expect it.
"""

from __future__ import annotations

import time
import uuid

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from labctl import audit
from labctl.config import Paths
from labctl.labapi import LabApi, LabApiError

from .harness import ROOT

TERMINAL = {"CONFIRMED", "CANCELLED", "SHIPPED", "DELIVERED"}
SERVICES = ("user", "order", "inventory", "payment")
# Every process re-reads the lab state (faults, switches, the saga mode) at most 0.5 s late.
SPREAD_SECONDS = 1.1
# The worker's leases run out quickly and it waits a few seconds at most between attempts, and
# recovery runs every 2 s, so that a killed worker's sagas come back within seconds, not minutes.
WORKER_ENV = {
    "ORDER_SAGA_TASK_LEASE_SECONDS": "8",
    "ORDER_SAGA_RETRY_BACKOFF_SECONDS": "0.5",
    "ORDER_SAGA_RETRY_BACKOFF_MAX_SECONDS": "3",
    "ORDER_SHIPPING_AFTER_SECONDS": "3600",
}
BEAT_ENV = {"ORDER_RECOVERY_INTERVAL_SECONDS": "2"}


@pytest.fixture(scope="module")
def admin_api(lab) -> LabApi:
    """The lab admin (the dashboard's identity, as labctl signs it) of the harness's lab."""
    return LabApi(Paths(ROOT), urls=lab.urls, timeout=10)


@pytest.fixture(scope="module")
def async_lab(lab, admin_api):
    lab.start_worker(env=WORKER_ENV)
    lab.start_beat(env=BEAT_ENV)
    switch = admin_api.json("PUT", "order", "/_lab/saga/", json={"mode": "async", "deadline_seconds": 120})
    assert switch["mode"] == "async"
    time.sleep(SPREAD_SECONDS)
    yield lab
    try:
        admin_api.json("PUT", "order", "/_lab/saga/", json={"mode": "sync"})
        for service in SERVICES:
            admin_api.json("DELETE", service, "/_lab/faults/")
        admin_api.json("PUT", "order", "/_lab/resilience/", json={"reset_breakers": True})
        time.sleep(SPREAD_SECONDS)
    finally:
        lab.stop_celery()
    for name in ("worker", "beat"):
        tracebacks = [line for line in lab.log_tail(name, 5000).splitlines() if "Traceback" in line]
        assert not tracebacks, f"{name} logged a traceback; see {lab.logs[name]}"


@pytest.fixture
def no_faults(admin_api):
    yield
    for service in SERVICES:
        admin_api.json("DELETE", service, "/_lab/faults/")


def place(customer, sku: str, card: str, *, quantity: int = 1, key: str | None = None):
    return customer.order([{"sku": sku, "quantity": quantity}], card, key=key or f"it-async-{uuid.uuid4().hex}")


def order_of(customer, order_id: int) -> dict:
    response = customer.get("order", f"/api/orders/{order_id}/")
    assert response.status_code == 200, response.text
    return response.json()


def wait_terminal(customer, order_ids, timeout: float = 60) -> dict[int, dict]:
    """Poll the orders until each is in a final status (bounded); return them by id."""
    deadline = time.monotonic() + timeout
    orders: dict[int, dict] = {}
    while time.monotonic() < deadline:
        orders = {order_id: order_of(customer, order_id) for order_id in order_ids}
        if all(o["status"] in TERMINAL and o["saga_step"] == "done" for o in orders.values()):
            return orders
        time.sleep(0.5)
    pytest.fail("not terminal in time: " + ", ".join(f"{i}: {o['status']}/{o['saga_step']}" for i, o in orders.items()))


def charge_rows(admin_api, staff) -> list[dict]:
    """Every charge as the audit reads it: payment's reconciliation rows, or the same fields from its staff API.

    payment_service has no ``/internal/reconciliation/charges/`` yet; its staff
    listing carries the fields the audit needs (id, order_id, status, amount, refunded).
    """
    try:
        return admin_api.all_pages("payment", "/internal/reconciliation/charges/")
    except LabApiError as exc:
        if "answered 404" not in str(exc):
            raise
    rows, url = [], f"{staff.lab.urls['payment']}/api/payments/?page_size=100"
    for _ in range(200):
        response = staff.session.get(url, timeout=30)
        assert response.status_code == 200, response.text
        rows.extend(response.json()["results"])
        url = response.json()["next"]
        if not url:
            return rows
    pytest.fail("more than 200 pages of charges")


def charges_by_order(admin_api, staff) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for row in charge_rows(admin_api, staff):
        out.setdefault(str(row["order_id"]), []).append(row)
    return out


def audit_now(admin_api, staff) -> dict:
    """``labctl audit``'s check on what the four services report now."""
    data = {
        "orders": admin_api.all_pages("order", "/internal/reconciliation/orders/"),
        "stock": admin_api.all_pages("inventory", "/internal/reconciliation/stock/"),
        "reservations": admin_api.all_pages("inventory", "/internal/reconciliation/reservations/"),
        "charges": charge_rows(admin_api, staff),
    }
    return audit.check(data)


def metric(lab, name: str, **labels) -> float:
    text = requests.get(f"{lab.urls['order']}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def test_async_checkout_answers_202_at_once_and_the_worker_confirms(async_lab, admin_api, admin, customer, product):
    """Ensure POST answers 202 PENDING with a Location, the worker confirms it, and a replay answers 200."""
    sku, card, key = product(stock=10, price_cents=1500), customer.add_card(), f"it-async-{uuid.uuid4().hex}"
    confirmed_before = metric(async_lab, "lab_saga_outcomes_total", outcome="confirmed")

    response = place(customer, sku, card, quantity=2, key=key)

    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "PENDING"
    assert response.headers["Location"] == f"{async_lab.urls['order']}/api/orders/{body['id']}/"
    order = wait_terminal(customer, [body["id"]])[body["id"]]
    assert order["status"] == "CONFIRMED", order
    assert [e["step"] for e in order["history"]] == [
        "received",
        "queued",
        "reserved",
        "charged",
        "committed",
        "confirmed",
    ]

    replay = place(customer, sku, card, quantity=2, key=key)
    assert replay.status_code == 200 and replay.json()["id"] == body["id"]
    assert replay.json()["status"] == "CONFIRMED"
    [charge] = charges_by_order(admin_api, admin)[str(body["id"])]
    assert (charge["status"], charge["amount_cents"]) == ("CAPTURED", 3000)
    # The worker counts in the order service's /metrics (the same multiprocess directory).
    assert metric(async_lab, "lab_saga_outcomes_total", outcome="confirmed") == confirmed_before + 1


def test_payment_outage_keeps_orders_pending_then_they_all_confirm(
    async_lab, admin_api, admin, customer, product, no_faults
):
    """Ensure orders placed during a 20 s payment outage stay PENDING meanwhile, then all end CONFIRMED."""
    sku, card = product(stock=20, price_cents=990), customer.add_card()
    admin_api.json("PUT", "payment", "/_lab/faults/", json={"kind": "outage", "ttl_seconds": 20})
    outage_ends = time.monotonic() + 20
    time.sleep(SPREAD_SECONDS)

    answers = [place(customer, sku, card) for _ in range(3)]
    assert [a.status_code for a in answers] == [202, 202, 202], [a.text for a in answers]
    order_ids = [a.json()["id"] for a in answers]

    # Well into the outage, the worker is still waiting for payment: nothing gave up, nothing confirmed.
    time.sleep(max(0.0, outage_ends - time.monotonic() - 8))
    during = [order_of(customer, order_id) for order_id in order_ids]
    assert [(o["status"], o["saga_step"]) for o in during] == [("PENDING", "charging")] * 3, during
    assert all(any(e["step"] == "waiting" for e in o["history"]) for o in during)

    orders = wait_terminal(customer, order_ids, timeout=20 + 45)
    assert [o["status"] for o in orders.values()] == ["CONFIRMED"] * 3, orders
    charges = charges_by_order(admin_api, admin)
    assert [len(charges[str(order_id)]) for order_id in order_ids] == [1, 1, 1]


def test_worker_killed_mid_saga_loses_nothing_and_charges_once(
    async_lab, admin_api, admin, customer, product, no_faults
):
    """Ensure a SIGKILLed worker's sagas all end, consistent (audit clean), with no payment captured twice."""
    sku, card = product(stock=20, price_cents=2500), customer.add_card()
    # Charges take 3 s at payment, so several sagas are mid-charge when the worker dies.
    admin_api.json(
        "PUT",
        "payment",
        "/_lab/faults/",
        json={
            "kind": "latency",
            "delay_ms": 3000,
            "path_prefix": "/internal/charges/",
            "method": "POST",
            "ttl_seconds": 120,
        },
    )
    time.sleep(SPREAD_SECONDS)
    order_ids = [place(customer, sku, card).json()["id"] for _ in range(4)]

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if any(order_of(customer, order_id)["saga_step"] == "charging" for order_id in order_ids):
            break
        time.sleep(0.2)
    else:
        pytest.fail("no saga reached the charge")
    async_lab.kill_worker()
    admin_api.json("DELETE", "payment", "/_lab/faults/")
    assert any(order_of(customer, order_id)["status"] == "PENDING" for order_id in order_ids)
    async_lab.start_worker(env=WORKER_ENV)

    orders = wait_terminal(customer, order_ids, timeout=60)

    assert [o["status"] for o in orders.values()] == ["CONFIRMED"] * 4, orders
    charges = charges_by_order(admin_api, admin)
    assert all(len([c for c in charges[str(i)] if c["status"] == "CAPTURED"]) == 1 for i in order_ids), charges
    result = audit_now(admin_api, admin)
    assert result["ok"], audit.render(result)
    assert any(
        e["step"] == "queued" and e["note"].startswith("recovered") for o in orders.values() for e in o["history"]
    ), "recovery should have re-queued the killed sagas"
