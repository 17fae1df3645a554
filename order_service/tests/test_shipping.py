"""The simulated carrier: CONFIRMED → SHIPPED → DELIVERED, one step per ORDER_SHIPPING_AFTER_SECONDS."""

from datetime import timedelta

import pytest
from django.utils import timezone

from orders import background
from orders.models import Order, OrderStatus, SagaStep
from tests.conftest import make_order

pytestmark = pytest.mark.django_db


def aged(order: Order, seconds: int) -> Order:
    """The order as if its last change were ``seconds`` ago."""
    Order.objects.filter(pk=order.pk).update(updated_at=timezone.now() - timedelta(seconds=seconds))
    return order


def history(order: Order) -> list[tuple[str, str]]:
    return list(order.events.order_by("id").values_list("status", "step"))


def test_confirmed_orders_ship_then_deliver_each_after_the_delay(settings, alice):
    """Ensure an order confirmed long enough ago ships, then is delivered a delay later, each with a dated event."""
    settings.ORDER_SHIPPING_AFTER_SECONDS = 60
    order = aged(make_order(status=OrderStatus.CONFIRMED, saga_step=SagaStep.DONE), 61)

    assert background.orders_advance_shipping() == {OrderStatus.DELIVERED: 0, OrderStatus.SHIPPED: 1}
    assert background.orders_advance_shipping() == {OrderStatus.DELIVERED: 0, OrderStatus.SHIPPED: 0}
    aged(order, 61)
    assert background.orders_advance_shipping() == {OrderStatus.DELIVERED: 1, OrderStatus.SHIPPED: 0}

    order.refresh_from_db()
    assert order.status == OrderStatus.DELIVERED
    assert history(order)[-2:] == [("SHIPPED", "shipped"), ("DELIVERED", "delivered")]
    body = alice.get(f"/api/orders/{order.pk}/").data
    assert [(e["status"], e["note"]) for e in body["history"]][-2:] == [
        ("SHIPPED", "shipped (simulated carrier)"),
        ("DELIVERED", "delivered (simulated carrier)"),
    ]
    assert all(e["at"] for e in body["history"])


def test_young_pending_cancelled_and_cancelling_orders_do_not_move(settings):
    """Ensure only CONFIRMED orders past the delay and with no cancellation running ship."""
    settings.ORDER_SHIPPING_AFTER_SECONDS = 60
    young = aged(make_order(status=OrderStatus.CONFIRMED, saga_step=SagaStep.DONE), 30)
    cancelling = aged(make_order(status=OrderStatus.CONFIRMED, saga_step=SagaStep.COMPENSATING), 600)
    pending = aged(make_order(status=OrderStatus.PENDING, saga_step=SagaStep.CHARGING), 600)
    cancelled = aged(make_order(status=OrderStatus.CANCELLED, saga_step=SagaStep.DONE), 600)

    assert background.orders_advance_shipping() == {OrderStatus.DELIVERED: 0, OrderStatus.SHIPPED: 0}

    for order, status in (
        (young, "CONFIRMED"),
        (cancelling, "CONFIRMED"),
        (pending, "PENDING"),
        (cancelled, "CANCELLED"),
    ):
        order.refresh_from_db()
        assert order.status == status


def test_a_shipped_order_can_no_longer_be_cancelled(settings, alice):
    """Ensure the customer's cancel of a SHIPPED order is a 409, as the contract says."""
    settings.ORDER_SHIPPING_AFTER_SECONDS = 60
    order = aged(make_order(status=OrderStatus.CONFIRMED, saga_step=SagaStep.DONE), 120)
    background.orders_advance_shipping()

    response = alice.post(f"/api/orders/{order.pk}/cancel/")

    assert response.status_code == 409
    assert response.data["code"] == "order_not_cancellable"


def test_expiry_job_asks_inventory_and_survives_its_outage(fake_inventory):
    """Ensure the expiry job calls inventory's expire endpoint, and an outage is logged and skipped, not raised."""
    assert background.reservations_expire_due() == 0
    fake_inventory.fail("expire")
    assert background.reservations_expire_due() is None
    assert len(fake_inventory.calls_to("expire")) == 2
