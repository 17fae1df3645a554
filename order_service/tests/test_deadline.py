"""The request's deadline (X-Request-Deadline) in the sync saga: no new step for a client that has gone."""

import time

import pytest

from orders.clients import inventory, payment
from orders.models import Order
from tests.conftest import notes, place

pytestmark = pytest.mark.django_db


def _slow(monkeypatch, module, function: str, seconds: float) -> None:
    """Make the (fake) client function ``module.function`` take ``seconds``: done, then the time passes."""
    original = getattr(module, function)

    def slow(**kwargs):
        result = original(**kwargs)
        time.sleep(seconds)
        return result

    monkeypatch.setattr(module, function, slow)


def _place_by(client, sku: str, quantity: int, key: str, *, seconds_left: float):
    """POST one order whose X-Request-Deadline is ``seconds_left`` from now (negative: already passed)."""
    return client.post(
        "/api/orders/",
        {"lines": [{"sku": sku, "quantity": quantity}], "payment_method": "pm_visa_4242"},
        format="json",
        HTTP_IDEMPOTENCY_KEY=key,
        HTTP_X_REQUEST_DEADLINE=f"{time.time() + seconds_left:.3f}",
    )


def test_an_order_arriving_after_its_deadline_is_shed_and_nothing_is_saved(alice, fake_inventory, fake_payment):
    """Ensure a checkout whose deadline has passed is answered 503 before any work: no order, no peer call."""
    response = _place_by(alice, "KB-001", 1, "late-order-0001", seconds_left=-1)
    assert response.status_code == 503 and response.json()["code"] == "deadline_exceeded"
    assert Order.objects.count() == 0
    assert fake_inventory.calls == [] and fake_payment.calls == []


def test_a_deadline_that_passes_before_the_charge_releases_the_stock_and_charges_nothing(
    alice, fake_inventory, fake_payment, monkeypatch
):
    """Ensure the saga does not charge a client who has given up: it compensates (stock released), CANCELLED."""
    _slow(monkeypatch, inventory, "inventory_reserve", 0.4)

    response = _place_by(alice, "KB-001", 2, "deadline-order-01", seconds_left=0.2)

    assert response.status_code == 201, response.data
    order = Order.objects.get(pk=response.data["id"])
    assert (order.status, order.status_reason_code) == ("CANCELLED", "deadline_exceeded")
    assert fake_payment.calls == []
    assert fake_inventory.reservation_of(order.pk).status == "RELEASED"  # the compensation ran past the deadline
    assert fake_inventory.products["KB-001"].available == 10
    assert "stock released" in notes(order.pk)


def test_once_charged_the_saga_finishes_even_past_the_deadline(alice, fake_inventory, fake_payment, monkeypatch):
    """Ensure a deadline passing after the charge does not strand the order: commit runs, CONFIRMED."""
    _slow(monkeypatch, payment, "payment_charge", 0.4)

    response = place(alice)  # no deadline header: nothing changes for clients that send none
    assert response.data["status"] == "CONFIRMED"

    response = _place_by(alice, "MS-002", 1, "deadline-order-02", seconds_left=0.2)
    assert response.status_code == 201, response.data
    assert response.data["status"] == "CONFIRMED"
    assert fake_inventory.reservation_of(response.data["id"]).status == "COMMITTED"
