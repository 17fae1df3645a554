"""The unsafe switch ``unsafe.charge_retry_new_key`` and the repair that undoes what it did.

Off (the default), a charge whose answer was lost is taken once; on, the saga sends
it again under a new key and payment captures twice. ``POST /_lab/repair/`` refunds
the charge the saga never recorded.
"""

import pytest

from orders.models import Order, OrderStatus
from tests.conftest import place

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def switches_back(dashboard):
    """The switches live in the cache, shared by the tests of this run: put them back after each."""
    yield
    assert dashboard.delete("/_lab/resilience/").status_code == 200


def _unsafe(dashboard, on: bool) -> None:
    response = dashboard.put("/_lab/resilience/", {"unsafe": {"charge_retry_new_key": on}}, format="json")
    assert response.status_code == 200, response.content


def test_a_lost_charge_answer_is_charged_once_with_the_switch_off(alice, fake_payment):
    """Ensure a charge whose answer was lost is looked up, not sent again: one capture, CONFIRMED."""
    fake_payment.fail("charge", after=True)

    response = place(alice)

    assert response.data["status"] == "CONFIRMED"
    assert [key for *_, key in fake_payment.calls_to("charge")] == [f"order-{response.data['id']}-charge"]
    assert len(fake_payment.captured()) == 1


def test_the_unsafe_switch_charges_again_under_a_new_key(alice, dashboard, fake_payment):
    """Ensure with the switch on a lost answer makes the saga charge again under another key: two captures."""
    _unsafe(dashboard, True)
    fake_payment.fail("charge", after=True, times=2)

    response = place(alice)

    order_id = response.data["id"]
    assert response.data["status"] == "CONFIRMED"
    keys = [key for *_, key in fake_payment.calls_to("charge")]
    assert len(keys) == 2 and keys[0] == f"order-{order_id}-charge" and keys[1].startswith(f"order-{order_id}-charge-")
    assert [c.order_id for c in fake_payment.captured()] == [order_id, order_id]


def test_the_repair_refunds_the_charge_the_saga_did_not_record(alice, dashboard, fake_payment):
    """Ensure POST /_lab/repair/ refunds only the extra charge, once, and answers what it did."""
    _unsafe(dashboard, True)
    fake_payment.fail("charge", after=True, times=2)
    order_id = place(alice).data["id"]
    kept = Order.objects.get(pk=order_id).charge_id
    extra = next(c.id for c in fake_payment.captured() if c.id != kept)

    first = dashboard.post("/_lab/repair/", {"order_ids": [order_id]}, format="json")
    again = dashboard.post("/_lab/repair/", {"order_ids": [order_id]}, format="json")

    assert first.status_code == 200, first.content
    assert first.json()["repaired"] == [{"order_id": order_id, "kept": kept, "refunded": [extra], "refused": []}]
    assert again.json()["repaired"][0]["refunded"] == []
    assert fake_payment.charges[kept].status == "CAPTURED" and fake_payment.charges[extra].status == "REFUNDED"
    assert Order.objects.get(pk=order_id).status == OrderStatus.CONFIRMED


@pytest.mark.parametrize("body", [{}, {"order_ids": []}, {"order_ids": ["x"]}, {"order_ids": [0]}])
def test_the_repair_refuses_bad_input(dashboard, body):
    """Ensure a malformed repair request is a 400 naming the field."""
    response = dashboard.post("/_lab/repair/", body, format="json")
    assert response.status_code == 400 and "order_ids" in response.json()["fields"]


def test_only_the_lab_admin_may_repair(alice):
    """Ensure a customer may not call the repair."""
    assert alice.post("/_lab/repair/", {"order_ids": [1]}, format="json").status_code == 403
