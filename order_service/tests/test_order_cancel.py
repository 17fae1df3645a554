"""POST /api/orders/<id>/cancel/: drafts at once, confirmed orders with refund and restock."""

import pytest

from orders.models import Order, OrderStatus, SagaStep
from tests.conftest import ALICE, make_order, notes, order_body, place

pytestmark = pytest.mark.django_db


def test_cancel_a_draft(alice, fake_inventory, fake_payment):
    """Ensure a draft is cancelled at once, without calling any peer."""
    draft = place(alice, order_body(checkout=False)).data

    response = alice.post(f"/api/orders/{draft['id']}/cancel/")

    assert response.status_code == 200
    assert response.data["status"] == "CANCELLED"
    assert response.data["status_reason"] == "Cancelled by customer"
    assert fake_inventory.calls_to("release") == [] and fake_payment.calls == []


def test_cancel_a_confirmed_order_refunds_and_returns_the_stock(alice, fake_inventory, fake_payment):
    """Ensure cancelling a CONFIRMED order refunds the full charge, returns the stock, and records each step."""
    order = place(alice).data
    assert fake_inventory.products["KB-001"].sold == 2

    response = alice.post(f"/api/orders/{order['id']}/cancel/")

    assert response.status_code == 200
    assert response.data["status"] == "CANCELLED"
    assert response.data["status_reason"] == "Cancelled by customer"
    [charge] = fake_payment.captured()
    assert charge.status == "REFUNDED" and charge.refunds[0].amount_cents == order["total_cents"]
    assert fake_payment.calls_to("refund")[0][-1] == f"order-{order['id']}-refund"
    assert fake_inventory.reservation_of(order["id"]).status == "RETURNED"
    assert fake_inventory.products["KB-001"].available == 10
    assert fake_inventory.products["KB-001"].sold == 0
    assert notes(order["id"])[-4:] == [
        "cancellation requested by customer",
        "payment refunded (203.00 EUR)",
        "stock returned",
        "cancelled: Cancelled by customer",
    ]


@pytest.mark.parametrize("status", [OrderStatus.SHIPPED, OrderStatus.DELIVERED, OrderStatus.CANCELLED])
def test_orders_past_confirmation_cannot_be_cancelled(alice, fake_payment, status):
    """Ensure SHIPPED, DELIVERED and CANCELLED orders answer 409 order_not_cancellable and stay as they are."""
    order = make_order(customer_id=ALICE, status=status, saga_step=SagaStep.DONE)

    response = alice.post(f"/api/orders/{order.pk}/cancel/")

    assert response.status_code == 409
    assert response.data["code"] == "order_not_cancellable"
    assert Order.objects.get(pk=order.pk).status == status
    assert fake_payment.calls == []


def test_cancelling_twice_is_a_conflict_without_a_second_refund(alice, fake_payment):
    """Ensure a second cancel answers 409 and refunds nothing more."""
    order = place(alice).data
    alice.post(f"/api/orders/{order['id']}/cancel/")

    response = alice.post(f"/api/orders/{order['id']}/cancel/")

    assert response.status_code == 409
    assert len(fake_payment.calls_to("refund")) == 1


def test_payment_down_during_cancel_answers_503_and_a_retry_finishes(alice, fake_inventory, fake_payment):
    """Ensure a cancel that cannot refund answers 503 with its progress recorded, and a second cancel completes it."""
    order = place(alice).data
    fake_payment.fail("refund")

    response = alice.post(f"/api/orders/{order['id']}/cancel/")

    assert response.status_code == 503
    assert response.data["code"] == "dependency_unavailable"
    assert response.data["order_id"] == order["id"]
    stuck = Order.objects.get(pk=order["id"])
    assert (stuck.status, stuck.saga_step) == (OrderStatus.CONFIRMED, SagaStep.COMPENSATING)
    assert stuck.saga_lease_until is None
    assert fake_inventory.reservation_of(order["id"]).status == "COMMITTED"  # nothing undone out of order
    assert notes(order["id"])[-1].startswith("paused: payment unavailable")

    retry = alice.post(f"/api/orders/{order['id']}/cancel/")

    assert retry.status_code == 200
    assert retry.data["status"] == "CANCELLED"
    assert fake_payment.captured()[0].status == "REFUNDED"
    assert fake_inventory.reservation_of(order["id"]).status == "RETURNED"
    assert "cancellation resumed" in notes(order["id"])


def test_inventory_down_during_cancel_keeps_the_refund_and_does_not_repeat_it(alice, fake_inventory, fake_payment):
    """Ensure a refund done before inventory failed is recorded, so the retry only releases the stock."""
    order = place(alice).data
    fake_inventory.fail("release")

    first = alice.post(f"/api/orders/{order['id']}/cancel/")

    assert first.status_code == 503
    assert Order.objects.get(pk=order["id"]).refund_id

    second = alice.post(f"/api/orders/{order['id']}/cancel/")

    assert second.status_code == 200
    assert second.data["status"] == "CANCELLED"
    assert len(fake_payment.calls_to("refund")) == 1
    assert notes(order["id"]).count("payment refunded (203.00 EUR)") == 1
    assert fake_inventory.reservation_of(order["id"]).status == "RETURNED"


def test_cancel_while_a_run_holds_the_order_is_a_conflict(alice, fake_payment):
    """Ensure a cancel does not start while another runner holds the order's lease."""
    from django.utils import timezone

    order = place(alice).data
    Order.objects.filter(pk=order["id"]).update(saga_lease_until=timezone.now() + timezone.timedelta(seconds=60))

    response = alice.post(f"/api/orders/{order['id']}/cancel/")

    assert response.status_code == 409
    assert fake_payment.calls_to("refund") == []


def test_cancel_an_interrupted_checkout_undoes_what_it_did(alice, fake_inventory, fake_payment):
    """Ensure cancelling an order stuck mid-checkout settles the lost capture by its key and releases the stock."""
    fake_payment.fail("charge", after=True)
    fake_payment.fail("charges_for_order")
    order = place(alice).data
    assert order["status"] == "PENDING" and order["saga_step"] == "charging"

    response = alice.post(f"/api/orders/{order['id']}/cancel/")

    assert response.status_code == 200
    assert response.data["status"] == "CANCELLED"
    assert fake_payment.captured()[0].status == "REFUNDED"
    assert fake_inventory.reservation_of(order["id"]).status == "RELEASED"
    assert "a capture made after its answer was lost was refunded (203.00 EUR)" in notes(order["id"])
    assert fake_payment.calls_to("settle") == [
        (order["id"], f"order-{order['id']}-charge", f"order-{order['id']}-settle")
    ]
