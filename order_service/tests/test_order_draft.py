"""Drafts: PATCH /api/orders/<id>/ while nothing started, then POST /api/orders/<id>/checkout/."""

import pytest

from orders.models import Order, OrderStatus, SagaStep
from tests.conftest import ALICE, make_order, notes, order_body, place

pytestmark = pytest.mark.django_db

ADDRESS = {
    "name": "Alice",
    "line1": "1 Lab Street",
    "line2": "Flat 2",
    "city": "Lyon",
    "postal_code": "69001",
    "country": "FR",
}


@pytest.fixture
def draft(alice):
    return place(alice, order_body(checkout=False)).data


def test_patch_replaces_lines_and_reprices(alice, draft, fake_inventory):
    """Ensure a draft's lines are replaced whole and priced from the catalog, with a timeline entry."""
    response = alice.patch(f"/api/orders/{draft['id']}/", {"lines": [{"sku": "MN-003", "quantity": 2}]}, format="json")

    assert response.status_code == 200
    assert [(line["sku"], line["quantity"]) for line in response.data["lines"]] == [("MN-003", 2)]
    assert response.data["total_cents"] == 2 * 19900
    assert response.data["history"][-1]["note"] == "order modified: lines"
    assert fake_inventory.calls_to("reserve") == []


def test_patch_sets_and_clears_the_shipping_address(alice, draft):
    """Ensure the shipping address can be set, then removed with null, without touching the lines."""
    set_response = alice.patch(f"/api/orders/{draft['id']}/", {"shipping_address": ADDRESS}, format="json")
    clear_response = alice.patch(f"/api/orders/{draft['id']}/", {"shipping_address": None}, format="json")

    assert set_response.data["shipping_address"] == ADDRESS
    assert clear_response.data["shipping_address"] is None
    assert clear_response.data["lines"] == draft["lines"]


def test_patch_with_an_unknown_sku_changes_nothing(alice, draft):
    """Ensure an unknown sku in a PATCH answers 400 naming it, and the draft keeps its lines."""
    response = alice.patch(f"/api/orders/{draft['id']}/", {"lines": [{"sku": "GHOST-1", "quantity": 1}]}, format="json")

    assert response.status_code == 400
    assert response.data["fields"]["lines"] == ["Unknown or inactive sku: GHOST-1."]
    assert alice.get(f"/api/orders/{draft['id']}/").data["lines"] == draft["lines"]


def test_patch_when_inventory_is_down_is_a_503(alice, draft, fake_inventory):
    """Ensure new lines cannot be saved unchecked: inventory down answers 503 and the draft is unchanged."""
    fake_inventory.fail("lookup")

    response = alice.patch(f"/api/orders/{draft['id']}/", {"lines": [{"sku": "MN-003", "quantity": 1}]}, format="json")

    assert response.status_code == 503
    assert alice.get(f"/api/orders/{draft['id']}/").data["lines"] == draft["lines"]


@pytest.mark.parametrize(
    ("status", "saga_step"),
    [
        (OrderStatus.CONFIRMED, SagaStep.DONE),
        (OrderStatus.CANCELLED, SagaStep.DONE),
        (OrderStatus.PENDING, SagaStep.CHARGING),
        (OrderStatus.SHIPPED, SagaStep.DONE),
    ],
)
def test_only_drafts_can_be_modified(alice, status, saga_step):
    """Ensure a PATCH of anything but a draft answers 409 order_not_modifiable and changes nothing."""
    order = make_order(customer_id=ALICE, status=status, saga_step=saga_step)

    response = alice.patch(f"/api/orders/{order.pk}/", {"shipping_address": ADDRESS}, format="json")

    assert response.status_code == 409
    assert response.data["code"] == "order_not_modifiable"
    assert Order.objects.get(pk=order.pk).shipping_address is None


def test_checkout_of_a_draft_confirms_it(alice, draft, fake_payment):
    """Ensure checking out a draft runs the saga with keys derived from the order id and confirms it."""
    response = alice.post(f"/api/orders/{draft['id']}/checkout/")

    assert response.status_code == 200
    assert response.data["status"] == "CONFIRMED"
    assert fake_payment.calls_to("charge")[0][-1] == f"order-{draft['id']}-charge"
    assert notes(draft["id"]) == [
        "order received as a draft",
        "checkout started",
        "stock reserved",
        "payment captured",
        "stock committed",
        "confirmed",
    ]


def test_a_second_checkout_is_a_conflict(alice, draft, fake_payment):
    """Ensure checking out an order that is no longer a draft answers 409 and charges nothing more."""
    alice.post(f"/api/orders/{draft['id']}/checkout/")

    response = alice.post(f"/api/orders/{draft['id']}/checkout/")

    assert response.status_code == 409
    assert response.data["code"] == "order_not_draft"
    assert len(fake_payment.calls_to("charge")) == 1


def test_checkout_of_a_draft_out_of_stock_is_cancelled(alice, fake_payment):
    """Ensure a draft whose stock ran out is cancelled at checkout with the stock reason."""
    draft = place(alice, order_body(checkout=False, lines=[{"sku": "MN-003", "quantity": 3}])).data

    response = alice.post(f"/api/orders/{draft['id']}/checkout/")

    assert response.status_code == 200
    assert response.data["status"] == "CANCELLED"
    assert response.data["status_reason"] == "Not enough stock for MN-003 (2 available)"
    assert fake_payment.calls == []


def test_a_checked_out_draft_cannot_be_modified(alice, draft):
    """Ensure a draft stops being modifiable once its checkout ran."""
    alice.post(f"/api/orders/{draft['id']}/checkout/")

    response = alice.patch(f"/api/orders/{draft['id']}/", {"shipping_address": ADDRESS}, format="json")

    assert response.status_code == 409
