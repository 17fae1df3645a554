"""Races on real MySQL with real threads: one order per key, one saga per order, one refund per cancel."""

import queue
import threading

import pytest
from django.db import connection

from orders.models import Order
from tests.conftest import ALICE, client_for, order_body, place

pytestmark = pytest.mark.django_db(transaction=True)

TIMEOUT = 15


def run_in_threads(*calls):
    """Run each call in its own thread (each with its own DB connection); return their results in order."""
    results = [None] * len(calls)
    errors = queue.Queue()

    def runner(index, call):
        try:
            results[index] = call()
        except BaseException as exc:  # noqa: BLE001 — reported to the test below
            errors.put(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=runner, args=(i, call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert not any(thread.is_alive() for thread in threads), "a request hung"
    assert errors.empty(), errors.get()
    return results


def test_concurrent_duplicates_make_one_order_and_one_charge(fake_inventory, fake_payment):
    """Ensure two simultaneous requests with the same key and body make one order, one saga, one charge."""
    both_looked_up = threading.Barrier(2, timeout=TIMEOUT)
    fake_inventory.on_lookup = both_looked_up.wait  # both pass the "key unused?" check before either inserts
    body = order_body()

    first, second = run_in_threads(
        lambda: place(client_for(ALICE), body, key="double-submit-01"),
        lambda: place(client_for(ALICE), body, key="double-submit-01"),
    )

    assert sorted([first.status_code, second.status_code]) == [200, 201]
    assert first.data["id"] == second.data["id"]
    assert Order.objects.count() == 1
    assert len(fake_inventory.calls_to("reserve")) == 1
    assert len(fake_payment.calls_to("charge")) == 1
    assert len(fake_payment.captured()) == 1
    assert Order.objects.get().status == "CONFIRMED"


def test_concurrent_cancels_refund_once(fake_inventory, fake_payment):
    """Ensure two simultaneous cancels of a confirmed order run one compensation: one refund, one 409."""
    order = place(client_for(ALICE)).data
    answered = threading.Event()
    fake_payment.on_refund = lambda: answered.wait(TIMEOUT)  # hold the first refund until the other cancel answered

    def cancel():
        try:
            return client_for(ALICE).post(f"/api/orders/{order['id']}/cancel/")
        finally:
            answered.set()

    results = run_in_threads(cancel, cancel)

    assert sorted(r.status_code for r in results) == [200, 409]
    assert len(fake_payment.calls_to("refund")) == 1
    assert fake_inventory.reservation_of(order["id"]).status == "RETURNED"
    assert Order.objects.get(pk=order["id"]).status == "CANCELLED"


def test_concurrent_checkouts_of_a_draft_run_one_saga(fake_inventory, fake_payment, monkeypatch):
    """Ensure two simultaneous checkouts of one draft run the saga once; the other answers 409."""
    from orders.clients import inventory

    draft = place(client_for(ALICE), order_body(checkout=False)).data
    answered = threading.Event()
    real_reserve = fake_inventory.reserve

    def slow_reserve(**kwargs):
        answered.wait(TIMEOUT)  # hold the first saga until the other checkout answered
        return real_reserve(**kwargs)

    monkeypatch.setattr(inventory, "inventory_reserve", slow_reserve)

    def checkout():
        try:
            return client_for(ALICE).post(f"/api/orders/{draft['id']}/checkout/")
        finally:
            answered.set()

    results = run_in_threads(checkout, checkout)

    assert sorted(r.status_code for r in results) == [200, 409]
    assert len(fake_inventory.calls_to("reserve")) == 1
    assert len(fake_payment.calls_to("charge")) == 1
    assert Order.objects.get(pk=draft["id"]).status == "CONFIRMED"
