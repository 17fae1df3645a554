"""Lost answers in the sync saga: a hold inventory made without telling us is found and released before CANCELLED."""

import pytest

from chassis.client import PeerUnavailable
from orders import background
from orders.models import Order, OrderStatus, SagaStep
from tests.conftest import notes, order_body, place

pytestmark = pytest.mark.django_db

REASON = "Inventory unavailable while reserving stock; nothing was charged."


def test_a_reservation_whose_answer_was_lost_is_released_before_cancelling(alice, fake_inventory, fake_payment):
    """Ensure a reserve that happened with its answer lost is looked up, released, and only then CANCELLED."""
    fake_inventory.fail("reserve", after=True)

    response = place(alice)

    assert response.status_code == 201
    assert (response.data["status"], response.data["status_reason"]) == ("CANCELLED", REASON)
    assert fake_inventory.reservation_of(response.data["id"]).status == "RELEASED"
    assert fake_inventory.products["KB-001"].available == 10
    assert fake_inventory.calls_to("reservations_for_order") == [response.data["id"]]
    assert notes(response.data["id"])[-4:] == [
        f"compensating: {REASON}",
        "stock held after a lost answer was found; it will be released",
        "stock released",
        f"cancelled: {REASON}",
    ]
    assert fake_payment.calls == []


def test_when_inventory_cannot_say_the_order_waits_in_compensation(alice, queued, fake_inventory, fake_payment):
    """Ensure an unanswerable lookup leaves the order PENDING/compensating (202), and the worker finishes it later."""
    fake_inventory.fail("reserve", after=True)
    fake_inventory.fail("reservations_for_order")

    response = place(alice)

    assert response.status_code == 202
    assert (response.data["status"], response.data["saga_step"]) == ("PENDING", "compensating")
    assert fake_inventory.reservation_of(response.data["id"]).status == "HELD"  # not CANCELLED with stock held

    assert background.orders_recover_stalled() == 1
    queued.run()

    order = Order.objects.get(pk=response.data["id"])
    assert (order.status, order.saga_step) == (OrderStatus.CANCELLED, SagaStep.DONE)
    assert fake_inventory.reservation_of(order.pk).status == "RELEASED"
    assert fake_payment.calls == []


def test_a_replay_finishes_a_compensation_that_had_to_wait(alice, fake_inventory):
    """Ensure replaying the request (sync mode) resumes the compensation once inventory answers again."""
    fake_inventory.fail("reserve", after=True)
    fake_inventory.fail("reservations_for_order")
    first = place(alice, order_body(), key="lost-reserve-01")

    second = place(alice, order_body(), key="lost-reserve-01")

    assert first.status_code == 202 and second.status_code == 200
    assert second.data["status"] == "CANCELLED"
    assert fake_inventory.reservation_of(first.data["id"]).status == "RELEASED"


def test_a_reserve_our_breaker_refused_cancels_without_a_lookup(alice, fake_inventory, monkeypatch):
    """Ensure a draft's reserve that was never sent (breaker open) cancels at once: there is nothing to look up.

    (Placing an order, the same refusal is a 503 that keeps no order: test_order_create.py.)
    """
    from orders.clients import inventory

    def breaker_open(**kwargs):
        raise PeerUnavailable("inventory", "circuit open: failing fast", rejected=True, attempts=0)

    draft = place(alice, order_body(checkout=False))
    monkeypatch.setattr(inventory, "inventory_reserve", breaker_open)

    response = alice.post(f"/api/orders/{draft.data['id']}/checkout/")

    assert response.status_code == 200
    assert (response.data["status"], response.data["status_reason"]) == ("CANCELLED", REASON)
    assert fake_inventory.calls_to("reservations_for_order") == []
    assert Order.objects.get(pk=response.data["id"]).status_reason_code == "inventory_unavailable"


def test_a_charge_without_an_answer_is_settled_by_its_key_before_cancelling(alice, fake_inventory, fake_payment):
    """Ensure a charge with no answer and nothing found is settled at payment by its key before CANCELLED.

    The charge may still be on its way to payment: a lookup that finds nothing
    proves nothing, so the compensation settles ``order-<id>-charge`` (payment
    voids it) and only then releases the stock and cancels.
    """
    fake_payment.fail("charge")  # no answer; payment has not acted (yet)

    response = place(alice)

    order_id = response.data["id"]
    assert response.status_code == 201
    assert response.data["status"] == "CANCELLED"
    assert fake_payment.calls_to("settle") == [(order_id, f"order-{order_id}-charge", f"order-{order_id}-settle")]
    assert fake_payment.settlements[f"order-{order_id}-charge"].outcome == "VOIDED"
    assert notes(order_id)[-4:] == [
        "compensating: Payment service unavailable; nothing was charged.",
        f"nothing was charged under order-{order_id}-charge; payment will refuse a charge arriving late",
        "stock released",
        "cancelled: Payment service unavailable; nothing was charged.",
    ]
    order = Order.objects.get(pk=order_id)
    assert (order.status_reason_code, order.charge_outcome_unknown, order.charge_id) == (
        "payment_unavailable",
        False,
        "",
    )


def test_when_payment_cannot_settle_the_order_waits_in_compensation(alice, fake_inventory, fake_payment):
    """Ensure a settlement payment cannot answer leaves the order compensating with its stock held, not CANCELLED."""
    fake_payment.fail("charge")
    fake_payment.fail("settle")

    response = place(alice)

    assert response.status_code == 202
    assert (response.data["status"], response.data["saga_step"]) == ("PENDING", "compensating")
    assert fake_inventory.reservation_of(response.data["id"]).status == "HELD"
    assert Order.objects.get(pk=response.data["id"]).charge_outcome_unknown is True
