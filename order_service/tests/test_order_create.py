"""POST /api/orders/: the checkout saga, its failures and compensations, idempotent replays."""

import pytest

from orders.models import Order, OrderEvent, OrderLine, OrderStatus, SagaStep
from tests.conftest import ALICE, notes, order_body, place

pytestmark = pytest.mark.django_db

HAPPY_NOTES = ["order received", "stock reserved", "payment captured", "stock committed", "confirmed"]


def test_checkout_confirms_and_records_each_step(alice, fake_inventory, fake_payment):
    """Ensure a checkout reserves, charges the reservation's total, commits, and answers 201 CONFIRMED."""
    response = place(alice)

    assert response.status_code == 201, response.data
    body = response.data
    assert body["status"] == "CONFIRMED"
    assert body["status_reason"] == ""
    assert body["saga_step"] == "done"
    assert body["customer_id"] == ALICE
    assert body["total_cents"] == 2 * 8900 + 2500
    assert [(line["sku"], line["quantity"], line["line_total_cents"]) for line in body["lines"]] == [
        ("KB-001", 2, 17800),
        ("MS-002", 1, 2500),
    ]
    assert [entry["note"] for entry in body["history"]] == HAPPY_NOTES
    assert body["history"][-1]["status"] == "CONFIRMED"

    reservation = fake_inventory.reservation_of(body["id"])
    assert reservation.status == "COMMITTED"
    assert fake_inventory.products["KB-001"].sold == 2
    assert fake_inventory.calls_to("reserve")[0][2] == f"order-{body['id']}-reserve"
    [charge] = fake_payment.captured()
    assert charge.amount_cents == body["total_cents"]
    assert fake_payment.calls_to("charge")[0][-1] == f"order-{body['id']}-charge"
    order = Order.objects.get(pk=body["id"])
    assert order.reservation_id == reservation.id and order.charge_id == charge.id


def test_prices_come_from_the_reservation_not_the_catalog_lookup(alice, fake_inventory, fake_payment, monkeypatch):
    """Ensure the reservation's prices are charged when they differ from the earlier product lookup."""
    real_reserve = fake_inventory.reserve

    def reserve_after_price_change(**kwargs):
        fake_inventory.products["KB-001"].price_cents = 9900
        return real_reserve(**kwargs)

    from orders.clients import inventory

    monkeypatch.setattr(inventory, "inventory_reserve", reserve_after_price_change)

    response = place(alice, order_body(lines=[{"sku": "KB-001", "quantity": 1}]))

    assert response.status_code == 201
    assert response.data["total_cents"] == 9900
    assert response.data["lines"][0]["unit_price_cents"] == 9900
    assert fake_payment.captured()[0].amount_cents == 9900


def test_insufficient_stock_cancels_without_charging(alice, fake_inventory, fake_payment):
    """Ensure not enough stock ends CANCELLED with a readable reason and no call to payment."""
    response = place(alice, order_body(lines=[{"sku": "MN-003", "quantity": 5}]))

    assert response.status_code == 201
    assert response.data["status"] == "CANCELLED"
    assert response.data["status_reason"] == "Not enough stock for MN-003 (2 available)"
    assert fake_payment.calls == []
    assert fake_inventory.products["MN-003"].available == 2
    assert notes(response.data["id"])[-1] == "cancelled: Not enough stock for MN-003 (2 available)"


@pytest.mark.parametrize(
    ("payment_method", "reason"),
    [("pm_declined", "Payment declined: card_declined"), ("pm_nofunds", "Payment declined: insufficient_funds")],
)
def test_declined_payment_releases_the_stock(alice, fake_inventory, fake_payment, payment_method, reason):
    """Ensure a declined card ends CANCELLED with the decline code, and the held stock is released."""
    response = place(alice, order_body(payment_method=payment_method))

    assert response.status_code == 201
    assert response.data["status"] == "CANCELLED"
    assert response.data["status_reason"] == reason
    reservation = fake_inventory.reservation_of(response.data["id"])
    assert reservation.status == "RELEASED"
    assert fake_inventory.products["KB-001"].available == 10
    assert fake_payment.captured() == []
    assert notes(response.data["id"]) == [
        "order received",
        "stock reserved",
        f"compensating: {reason}",
        "stock released",
        f"cancelled: {reason}",
    ]


def test_lost_charge_answer_with_a_capture_goes_on_to_confirm(alice, fake_inventory, fake_payment):
    """Ensure a charge whose answer was lost but which payment captured is found by lookup and confirmed."""
    fake_payment.fail("charge", after=True)

    response = place(alice)

    assert response.status_code == 201
    assert response.data["status"] == "CONFIRMED"
    assert len(fake_payment.captured()) == 1
    assert fake_payment.calls_to("charges_for_order") == [response.data["id"]]
    assert "payment captured (learnt from payment after its answer was lost)" in notes(response.data["id"])
    assert fake_inventory.reservation_of(response.data["id"]).status == "COMMITTED"


def test_unreachable_payment_without_capture_releases_the_stock(alice, fake_inventory, fake_payment):
    """Ensure a charge that never reached payment (lookup finds nothing) is compensated: stock released."""
    fake_payment.fail("charge")

    response = place(alice)

    assert response.status_code == 201
    assert response.data["status"] == "CANCELLED"
    assert response.data["status_reason"] == "Payment service unavailable; nothing was charged."
    assert fake_payment.captured() == []
    assert fake_inventory.reservation_of(response.data["id"]).status == "RELEASED"


def test_unknown_charge_outcome_pauses_and_a_replay_finishes(alice, fake_inventory, fake_payment):
    """Ensure a charge whose outcome cannot be learnt leaves the order PENDING (202), and a replay resumes it."""
    fake_payment.fail("charge", after=True)
    fake_payment.fail("charges_for_order")
    body, key = order_body(), "resume-key-0001"

    first = place(alice, body, key=key)

    assert first.status_code == 202
    assert first.data["status"] == "PENDING"
    assert first.data["saga_step"] == "charging"
    assert first.data["history"][-1]["step"] == "paused"
    assert fake_inventory.reservation_of(first.data["id"]).status == "HELD"

    second = place(alice, body, key=key)

    assert second.status_code == 200
    assert second["Idempotent-Replayed"] == "true"
    assert second.data["id"] == first.data["id"]
    assert second.data["status"] == "CONFIRMED"
    assert len(fake_payment.captured()) == 1  # the replayed charge key did not charge twice
    assert Order.objects.count() == 1


def test_commit_refused_refunds_and_releases(alice, fake_inventory, fake_payment, monkeypatch):
    """Ensure a commit that inventory refuses is compensated: full refund, then stock released."""
    real_commit = fake_inventory.commit

    def commit_expired(*, reservation_id):
        fake_inventory.reservations[reservation_id].status = "EXPIRED"
        return real_commit(reservation_id=reservation_id)

    from orders.clients import inventory

    monkeypatch.setattr(inventory, "inventory_commit", commit_expired)

    response = place(alice)

    assert response.status_code == 201
    assert response.data["status"] == "CANCELLED"
    assert response.data["status_reason"] == "Stock could not be committed: The reservation is EXPIRED."
    [charge] = fake_payment.captured()
    assert charge.status == "REFUNDED"
    assert charge.refunds[0].amount_cents == response.data["total_cents"]
    assert fake_payment.calls_to("refund")[0][-1] == f"order-{response.data['id']}-refund"
    assert notes(response.data["id"])[-3:] == [
        "payment refunded (203.00 EUR)",
        "stock released",
        f"cancelled: {response.data['status_reason']}",
    ]


def test_commit_unavailable_refunds_and_releases(alice, fake_inventory, fake_payment):
    """Ensure inventory going down at commit time ends CANCELLED with the payment refunded and stock released."""
    fake_inventory.fail("commit")

    response = place(alice)

    assert response.status_code == 201
    assert response.data["status"] == "CANCELLED"
    assert response.data["status_reason"] == "Inventory unavailable while committing stock; payment refunded."
    assert fake_payment.captured()[0].status == "REFUNDED"
    assert fake_inventory.reservation_of(response.data["id"]).status == "RELEASED"
    assert fake_inventory.products["KB-001"].available == 10


def test_reserve_unavailable_cancels_without_charging(alice, fake_inventory, fake_payment):
    """Ensure inventory going down at reserve time ends CANCELLED and payment is never called."""
    fake_inventory.fail("reserve")

    response = place(alice)

    assert response.status_code == 201
    assert response.data["status"] == "CANCELLED"
    assert response.data["status_reason"] == "Inventory unavailable while reserving stock; nothing was charged."
    assert fake_payment.calls == []


def test_a_reservation_our_bulkhead_turns_away_is_a_503_with_no_order(alice, fake_payment, monkeypatch):
    """Ensure a reservation refused unsent (our bulkhead or breaker) answers 503 with Retry-After, no order kept."""
    from chassis.client import PeerUnavailable
    from orders.clients import inventory

    def turned_away(**kwargs):
        raise PeerUnavailable("inventory", "bulkhead full (1 calls in flight)", rejected=True, attempts=0)

    monkeypatch.setattr(inventory, "inventory_reserve", turned_away)

    response = place(alice)

    assert response.status_code == 503, response.data
    assert response.data["code"] == "dependency_unavailable" and response.data["peer"] == "inventory"
    assert response["Retry-After"] == "1"
    assert Order.objects.count() == 0 and OrderEvent.objects.count() == 0
    assert fake_payment.calls == []


def test_replay_returns_the_same_order_without_a_second_saga(alice, fake_inventory, fake_payment):
    """Ensure the same key and body answer 200 with the first order, marked replayed, and nothing runs again."""
    body = order_body()
    first = place(alice, body, key="replay-key-0001")
    calls_before = (len(fake_inventory.calls), len(fake_payment.calls))

    second = place(alice, body, key="replay-key-0001")

    assert first.status_code == 201 and "Idempotent-Replayed" not in first
    assert second.status_code == 200
    assert second["Idempotent-Replayed"] == "true"
    assert second.data == first.data
    assert (len(fake_inventory.calls), len(fake_payment.calls)) == calls_before
    assert Order.objects.count() == 1


def test_same_key_with_another_body_is_a_conflict(alice, fake_payment):
    """Ensure reusing a key with a different body answers 409 idempotency_conflict and creates nothing."""
    place(alice, order_body(), key="conflict-key-01")

    response = place(alice, order_body(lines=[{"sku": "KB-001", "quantity": 3}]), key="conflict-key-01")

    assert response.status_code == 409
    assert response.data["code"] == "idempotency_conflict"
    assert Order.objects.count() == 1
    assert len(fake_payment.calls_to("charge")) == 1


def test_the_same_key_for_two_customers_makes_two_orders(alice, bob):
    """Ensure idempotency keys are scoped to a customer: another customer's key does not collide."""
    first = place(alice, key="shared-key-0001")
    second = place(bob, key="shared-key-0001")

    assert first.status_code == second.status_code == 201
    assert first.data["id"] != second.data["id"]


def test_draft_is_saved_pending_without_a_saga(alice, fake_inventory, fake_payment):
    """Ensure checkout=false saves a PENDING draft priced from the catalog and calls neither reserve nor charge."""
    response = place(
        alice,
        order_body(
            checkout=False,
            shipping_address={
                "name": "Alice",
                "line1": "1 Lab Street",
                "city": "Paris",
                "postal_code": "75001",
                "country": "FR",
            },
        ),
    )

    assert response.status_code == 201
    assert response.data["status"] == "PENDING"
    assert response.data["saga_step"] == "none"
    assert response.data["total_cents"] == 20300
    assert response.data["shipping_address"]["city"] == "Paris"
    assert response.data["shipping_address"]["line2"] == ""
    assert fake_inventory.calls_to("reserve") == [] and fake_payment.calls == []
    assert Order.objects.get().saga_step == SagaStep.NONE


def test_inventory_down_before_a_draft_is_written_answers_503(alice, fake_inventory):
    """Ensure an unreachable inventory at a draft's product lookup answers 503 and writes no order.

    (A checkout makes no lookup: with inventory's breaker open it is refused before its first
    step, test_fail_fast.py; a reservation that fails cancels it, test_reserve_unavailable_*.)
    """
    fake_inventory.fail("lookup")

    response = place(alice, order_body(checkout=False))

    assert response.status_code == 503
    assert response.data["code"] == "dependency_unavailable"
    assert Order.objects.count() == 0


def test_unknown_and_inactive_skus_are_named_and_nothing_is_written(alice, fake_inventory, fake_payment):
    """Ensure unknown or inactive skus answer 400 naming each sku in fields.lines, with no order written."""
    response = place(
        alice,
        order_body(
            lines=[
                {"sku": "KB-001", "quantity": 1},
                {"sku": "NOPE-1", "quantity": 1},
                {"sku": "OLD-999", "quantity": 1},
            ]
        ),
    )

    assert response.status_code == 400
    assert response.data["code"] == "invalid"
    assert response.data["fields"]["lines"] == ["Unknown or inactive sku: NOPE-1.", "Unknown or inactive sku: OLD-999."]
    assert Order.objects.count() == 0 and OrderEvent.objects.count() == 0 and OrderLine.objects.count() == 0
    # The reservation refused them (there is no lookup first): nothing is held, nothing charged.
    assert len(fake_inventory.calls_to("reserve")) == 1 and fake_inventory.reservations == {}
    assert fake_payment.calls == []


def test_a_checkout_calls_its_peers_three_times_reserve_charge_commit(alice, fake_inventory, fake_payment):
    """Ensure a synchronous checkout makes exactly three peer calls: no product lookup before the reservation."""
    response = place(alice)

    assert response.status_code == 201 and response.data["status"] == "CONFIRMED", response.data
    assert [name for name, _ in fake_inventory.calls] == ["reserve", "commit"]
    assert [name for name, _ in fake_payment.calls] == ["charge"]
    # The lines were priced by the reservation's answer.
    assert [(line["name"], line["unit_price_cents"]) for line in response.data["lines"]] == [
        ("Mechanical keyboard", 8900),
        ("Wireless mouse", 2500),
    ]


def test_a_refused_sku_in_a_draft_checkout_cancels_the_draft(alice, fake_inventory, fake_payment):
    """Ensure a draft whose product was withdrawn since it was saved ends CANCELLED at checkout, nothing charged."""
    draft = place(alice, order_body(checkout=False))
    fake_inventory.products["KB-001"].active = False

    response = alice.post(f"/api/orders/{draft.data['id']}/checkout/")

    assert response.status_code == 200, response.data
    assert response.data["status"] == "CANCELLED"
    assert response.data["status_reason"].startswith("Inventory refused the reservation: Unknown or inactive sku")
    assert fake_payment.calls == []


def test_an_interrupted_saga_is_resumed_from_its_step(alice, fake_inventory, fake_payment):
    """Ensure a saga stopped after reserving (its runner died) resumes at charging on replay, reserving once."""
    from orders import saga

    fake_payment.fail("charge", after=True)
    fake_payment.fail("charges_for_order")
    first = place(alice, key="interrupted-0001")
    order = Order.objects.get(pk=first.data["id"])
    # As if the runner had died after recording the reservation: back to "reserved".
    Order.objects.filter(pk=order.pk).update(saga_step=SagaStep.RESERVED, saga_lease_until=None)

    result = saga.order_saga_resume(order_id=order.pk)

    assert result.status == OrderStatus.CONFIRMED
    assert len(fake_inventory.calls_to("reserve")) == 1
    assert len(fake_payment.captured()) == 1
