"""Fail fast: a checkout with a breaker open on a peer it needs is refused before its first step."""

import pytest

from chassis.lab import resilience
from orders.models import Order, OrderEvent, SagaStep
from tests.conftest import order_body, place

pytestmark = pytest.mark.django_db


def _open(peer: str) -> None:
    resilience.breaker_for(peer).open()


@pytest.mark.parametrize("peer", ["payment", "inventory"])
def test_an_open_breaker_answers_503_with_retry_after_and_writes_nothing(alice, fake_inventory, fake_payment, peer):
    """Ensure an order placed while the breaker towards a saga peer is open is a 503 with Retry-After:
    no lookup, no reservation, no charge, no order."""
    _open(peer)

    response = place(alice)

    assert response.status_code == 503, response.data
    assert response.data["code"] == "dependency_unavailable"
    assert response.data["peer"] == peer
    reset_timeout = resilience.breaker_for(peer).reset_timeout
    assert 1 <= int(response["Retry-After"]) <= reset_timeout
    assert response.data["retry_after"] == int(response["Retry-After"])
    assert fake_inventory.calls == [] and fake_payment.calls == []
    assert Order.objects.count() == 0 and OrderEvent.objects.count() == 0


def test_the_refusal_is_counted_and_noted_for_the_lab_admin(alice, dashboard):
    """Ensure the refusal is a rejected call in order's metrics and the last one shows on /_lab/resilience/."""
    from chassis import metrics

    before = metrics.PEER_CALLS.labels("payment", "rejected")._value.get()
    _open("payment")

    assert place(alice).status_code == 503

    assert metrics.PEER_CALLS.labels("payment", "rejected")._value.get() == before + 1
    noted = dashboard.get("/_lab/resilience/").json()["fail_fast"]
    assert noted["peer"] == "payment" and noted["retry_after"] >= 1 and noted["ms"] >= 0


def test_a_replay_of_an_earlier_order_is_answered_while_the_breaker_is_open(alice, fake_payment):
    """Ensure the same key sent again while payment's breaker is open replays the confirmed order (no 503)."""
    first = place(alice, key="fail-fast-replay-1")
    assert first.status_code == 201
    _open("payment")

    again = place(alice, key="fail-fast-replay-1")

    assert again.status_code == 200 and again.data["id"] == first.data["id"], again.data
    assert again["Idempotent-Replayed"] == "true" and again.data["status"] == "CONFIRMED"


def test_a_draft_is_still_saved_and_its_checkout_refused_until_the_breaker_closes(alice, fake_inventory):
    """Ensure a draft needs no peer but its catalog lookup; its checkout is a 503 that leaves it a draft."""
    _open("payment")
    draft = place(alice, order_body(checkout=False))
    assert draft.status_code == 201, draft.data

    refused = alice.post(f"/api/orders/{draft.data['id']}/checkout/")

    assert refused.status_code == 503, refused.data
    assert "Retry-After" in refused
    order = Order.objects.get(pk=draft.data["id"])
    assert order.saga_step == SagaStep.NONE and order.is_draft
    assert fake_inventory.calls_to("reserve") == []

    resilience.breakers_reset(["payment"])
    assert alice.post(f"/api/orders/{draft.data['id']}/checkout/").data["status"] == "CONFIRMED"


def test_a_half_open_breaker_lets_the_checkout_through_as_its_trial(alice, fake_payment):
    """Ensure once reset_timeout has run out the checkout is not refused: its charge is the trial call."""
    breaker = resilience.breaker_for("payment")
    breaker.half_open()

    response = place(alice)

    assert response.status_code == 201 and response.data["status"] == "CONFIRMED", response.data


def test_with_the_breaker_switched_off_an_open_breaker_does_not_refuse(alice):
    """Ensure the fail-fast check follows the breaker switch: off, the checkout runs (and calls its peers)."""
    _open("payment")
    resilience.switches_update(changes={"breaker": {"enabled": False}})
    try:
        response = place(alice)
    finally:
        resilience.switches_reset()

    assert response.status_code == 201 and response.data["status"] == "CONFIRMED", response.data


def test_the_refusal_reads_no_order_it_does_not_have(alice, django_assert_num_queries):
    """Ensure a first checkout refused at once costs one statement, an EXISTS of its key, loading no columns."""
    _open("payment")

    with django_assert_num_queries(1) as captured:
        assert place(alice, key="fail-fast-first-1").status_code == 503

    assert captured.captured_queries[0]["sql"].startswith("SELECT 1 AS")
