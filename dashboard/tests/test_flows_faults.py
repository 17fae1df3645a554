"""The checkout flows under an injected payment outage: prepared customers, a paused saga, fault-aware expectations."""

from __future__ import annotations

import pytest

from chassis import auth
from console import flows
from console.models import FlowRun

PAUSED = [
    {"status": "PENDING", "step": "received", "note": "order received", "at": "2026-01-01T10:00:00.000000Z"},
    {"status": "PENDING", "step": "reserved", "note": "stock reserved", "at": "2026-01-01T10:00:00.040000Z"},
    {
        "status": "PENDING",
        "step": "paused",
        "note": "paused: payment unavailable (circuit open: failing fast)",
        "at": "2026-01-01T10:00:00.052000Z",
    },
]
CONFIRMED = [
    {"status": "PENDING", "step": "received", "note": "order received", "at": "2026-01-01T10:00:00.000000Z"},
    {"status": "CONFIRMED", "step": "confirmed", "note": "confirmed", "at": "2026-01-01T10:00:00.250000Z"},
]


def shop(lab, *, order_status: int, order: dict) -> None:
    """Routes of a shop that logs in, lists one product, holds the prepared card and answers the order."""
    lab["user"].on("POST", "/api/auth/register/", 201, {"id": 7, "email": "x@lab.local"})
    lab["user"].on("POST", "/api/auth/login/", 200, {"access": "tok", "refresh": "r", "expires_in": 900})
    lab["inventory"].on(
        "GET", "/api/products/", 200, {"results": [{"sku": "MUG-1", "name": "Lab mug", "active": True, "available": 9}]}
    )
    lab["payment"].on("POST", "/api/payment-methods/", 201, {"token": "pm_new", "last4": "4242"})
    lab["payment"].on("GET", "/api/payment-methods/", 200, {"results": [{"token": "pm_saved"}]})
    lab["order"].on("POST", "/api/orders/", order_status, order)
    lab["order"].on("GET", f"/api/orders/{order['id']}/", 200, order)


def payment_outage(lab, *, breaker: dict | None = None) -> None:
    lab["payment"].on(
        "GET",
        "/_lab/faults/",
        200,
        {"service": "payment", "faults": [{"id": "preset-payment-outage", "kind": "outage", "ttl_seconds": 120}]},
    )
    lab["payment"].on("POST", "/api/payment-methods/", 503, {"code": "service_outage", "message": "Injected fault"})
    lab["payment"].on("GET", "/api/payment-methods/", 503, {"code": "service_outage", "message": "Injected fault"})
    lab["order"].on(
        "GET",
        "/_lab/resilience/",
        200,
        {
            "switches": {"breaker": {"enabled": True}},
            "breakers": {"payment": breaker or {"state": "closed", "fail_counter": 0, "fail_max": 5}},
        },
    )


def prepare(card: str = flows.APPROVED_CARD) -> None:
    flows.prepared_put(
        card, {"email": "flow-prep@lab.local", "password": "pw", "card_token": "pm_saved", "card_last4": card[-4:]}
    )


def test_checkout_reuses_the_prepared_card_while_payment_is_down(lab):
    """Ensure the outage lands on the order: the saved card is reused, payment's 503 on saving cards is never hit."""
    prepare()
    payment_outage(lab)
    shop(lab, order_status=202, order={"id": 12, "status": "PENDING", "history": PAUSED})
    payment_outage(lab)  # after shop(): the outage answers for payment's routes
    result = flows.flow_run("checkout-sync")
    assert lab["payment"].sent("POST", "/api/payment-methods/") == []
    assert lab["payment"].sent("GET", "/api/payment-methods/") == []  # no check that would hit the outage
    assert lab["user"].sent("POST", "/api/auth/register/") == []
    assert lab["user"].sent("POST", "/api/auth/login/")[0]["json"]["email"] == "flow-prep@lab.local"
    placed = lab["order"].sent("POST", "/api/orders/")
    assert placed[0]["json"]["payment_method"] == "pm_saved"
    assert [h["note"] for h in result.hops] == ["log in (prepared customer)", "browse the catalog", "place the order"]
    assert result.ok, result.outcome


def test_a_sync_202_paused_order_is_reported_at_once(lab):
    """Ensure a synchronous saga that paused on payment is reported from the 202, without polling the order."""
    prepare()
    shop(lab, order_status=202, order={"id": 12, "status": "PENDING", "history": PAUSED})
    payment_outage(lab, breaker={"state": "open", "fail_counter": 5, "fail_max": 5})
    result = flows.flow_run("checkout-sync")
    assert lab["order"].sent("GET", "/api/orders/12/") == []
    assert result.outcome == (
        "order #12 PENDING — paused: payment unavailable (circuit open: failing fast); "
        "the worker will finish it when payment is back"
    )
    assert result.duration_ms < 5000
    assert result.order["saga_duration_ms"] == 52.0


@pytest.mark.django_db
def test_the_expectation_follows_a_payment_outage(lab, staff):
    """Ensure with payment in outage the recorded expectation is the pause and the breaker, and that counts as ok."""
    prepare()
    shop(lab, order_status=202, order={"id": 12, "status": "PENDING", "history": PAUSED})
    payment_outage(lab, breaker={"state": "closed", "fail_counter": 2, "fail_max": 5})
    staff.post("/flows/checkout-sync/run/")
    run = FlowRun.objects.get()
    assert run.ok, run.outcome
    assert run.expected.startswith("the saga pauses (202 PENDING, paused: payment unavailable)")
    assert "breaker order → payment counts the failure (2 before; it opens after 5 failures)" in run.expected
    assert len(run.expected) <= 200
    assert any(n.startswith("breaker order → payment: closed, 2/5 failures before") for n in run.notes)


@pytest.mark.django_db
def test_a_breaker_that_opens_just_before_the_order_refuses_it_and_that_is_as_expected(lab, staff):
    """Ensure a breaker read closed before the order and open by then (the worker's retries count) is no red verdict."""
    prepare()
    shop(lab, order_status=202, order={"id": 12, "status": "PENDING", "history": PAUSED})
    refusal = {"code": "dependency_unavailable", "message": "The payment service is unavailable.", "peer": "payment"}
    lab["order"].on("POST", "/api/orders/", 503, refusal, headers={"Retry-After": "7"})
    payment_outage(lab, breaker={"state": "closed", "fail_counter": 4, "fail_max": 5})

    staff.post("/flows/checkout-sync/run/")

    run = FlowRun.objects.get()
    assert run.expected.endswith("once open, 503 at once"), run.expected
    assert run.ok, run.outcome
    assert run.outcome.startswith("503 at once (Retry-After: 7 s), no order saved"), run.outcome


@pytest.mark.django_db
def test_the_expectation_is_the_plain_one_without_faults(lab, staff):
    """Ensure without faults the flow expects a confirmed order and a paused one is not as expected."""
    prepare()
    shop(lab, order_status=202, order={"id": 12, "status": "PENDING", "history": PAUSED})
    staff.post("/flows/checkout-sync/run/")
    run = FlowRun.objects.get()
    assert run.expected == "order CONFIRMED"
    assert not run.ok


def test_an_open_breaker_and_a_switched_off_one_are_expected_differently(lab):
    """Ensure the expectation says fail fast when the breaker is open, and retries when it is off."""
    payment_outage(lab, breaker={"state": "open", "fail_counter": 5, "fail_max": 5})
    expected, _ = flows.expectation(flows.FLOWS["checkout-sync"], flows.lab_state_read())
    assert "open and fails fast" in expected
    lab["order"].on("GET", "/_lab/resilience/", 200, {"switches": {"breaker": {"enabled": False}}, "breakers": {}})
    expected, _ = flows.expectation(flows.FLOWS["declined"], flows.lab_state_read())
    assert "breaker order → payment is off" in expected


@pytest.mark.django_db
def test_an_open_breaker_refuses_the_checkout_at_once_and_that_is_as_expected(lab, staff):
    """Ensure with payment's breaker open the flow expects, and reports, a 503 with Retry-After and no order."""
    prepare()
    shop(lab, order_status=202, order={"id": 12, "status": "PENDING", "history": PAUSED})
    refusal = {"code": "dependency_unavailable", "message": "The payment service is unavailable.", "peer": "payment"}
    lab["order"].on("POST", "/api/orders/", 503, refusal, headers={"Retry-After": "7"})
    payment_outage(lab, breaker={"state": "open", "fail_counter": 5, "fail_max": 5})

    staff.post("/flows/checkout-sync/run/")

    run = FlowRun.objects.get()
    assert run.expected.startswith("503 at once with Retry-After"), run.expected
    assert run.ok, run.outcome
    assert run.outcome.startswith("503 at once (Retry-After: 7 s), no order saved"), run.outcome


@pytest.mark.django_db
def test_a_paused_order_is_not_what_an_open_breaker_should_give(lab, staff):
    """Ensure with the breaker open a checkout that still paused (held stock) is reported as not expected."""
    prepare()
    shop(lab, order_status=202, order={"id": 12, "status": "PENDING", "history": PAUSED})
    payment_outage(lab, breaker={"state": "open", "fail_counter": 5, "fail_max": 5})

    staff.post("/flows/checkout-sync/run/")

    assert not FlowRun.objects.get().ok


def test_without_a_prepared_card_the_outage_stop_says_what_to_do(lab):
    """Ensure with payment down and nothing prepared the flow stops at saving the card and says how to prepare."""
    shop(lab, order_status=201, order={"id": 3, "status": "CONFIRMED", "history": CONFIRMED})
    payment_outage(lab)
    result = flows.flow_run("checkout-sync")
    assert not result.ok
    assert result.outcome == (
        "stopped while saving a card: payment answered 503. Payment is down and no card "
        "was saved before the outage: run this flow once while payment is up"
    )
    assert lab["order"].sent("POST", "/api/orders/") == []
    assert flows.prepared_get(flows.APPROVED_CARD)["card_token"] == ""  # the account is kept for next time


def test_a_first_checkout_prepares_the_customer_and_the_next_reuses_it(lab):
    """Ensure the first run registers and saves a card, the second only logs in and checks the card with payment."""
    shop(lab, order_status=201, order={"id": 3, "status": "CONFIRMED", "history": CONFIRMED})
    lab["payment"].on("GET", "/api/payment-methods/", 200, {"results": [{"token": "pm_new"}]})
    first = flows.flow_run("checkout-sync")
    assert first.ok, first.outcome
    assert [h["note"] for h in first.hops] == [
        "register",
        "log in",
        "save card …4242",
        "browse the catalog",
        "place the order",
    ]
    second = flows.flow_run("checkout-sync")
    assert second.ok, second.outcome
    assert [h["note"] for h in second.hops] == [
        "log in (prepared customer)",
        "check the saved card …4242",
        "browse the catalog",
        "place the order",
    ]
    assert second.customer == first.customer
    assert lab["order"].sent("POST", "/api/orders/")[1]["json"]["payment_method"] == "pm_new"


def test_a_prepared_customer_that_cannot_log_in_is_replaced(lab):
    """Ensure a prepared customer whose login is refused (a reset user database) is registered afresh."""
    prepare()
    shop(lab, order_status=201, order={"id": 3, "status": "CONFIRMED", "history": CONFIRMED})
    lab["user"].on("POST", "/api/auth/login/", 401, {"code": "invalid_credentials", "message": "no"})
    result = flows.flow_run("checkout-sync")
    assert not result.ok  # every login is refused here, the fresh one too
    assert lab["user"].sent("POST", "/api/auth/register/")
    assert any("could not log in any more" in n for n in result.notes)


def test_a_card_payment_no_longer_holds_is_saved_again(lab):
    """Ensure a prepared card missing from payment's list is saved again before the order."""
    prepare()
    shop(lab, order_status=201, order={"id": 3, "status": "CONFIRMED", "history": CONFIRMED})
    lab["payment"].on("GET", "/api/payment-methods/", 200, {"results": []})
    result = flows.flow_run("checkout-sync")
    assert result.ok, result.outcome
    assert lab["order"].sent("POST", "/api/orders/")[0]["json"]["payment_method"] == "pm_new"
    assert flows.prepared_get(flows.APPROVED_CARD)["card_token"] == "pm_new"


def test_a_throttled_login_reuses_the_previous_token(lab):
    """Ensure a class clicking Run many times a minute still reaches the order when user_service throttles logins."""
    prepare()
    shop(lab, order_status=201, order={"id": 3, "status": "CONFIRMED", "history": CONFIRMED})
    assert flows.flow_run("checkout-sync").ok
    lab["user"].on("POST", "/api/auth/login/", 429, {"code": "throttled", "message": "Request was throttled."})
    result = flows.flow_run("checkout-sync")
    assert result.ok, result.outcome
    assert lab["order"].sent("POST", "/api/orders/")[1]["headers"]["Authorization"] == "Bearer tok"


def test_an_async_order_is_polled_until_it_pauses(lab, settings):
    """Ensure polling stops as soon as the worker's saga pauses, and that is as expected under the outage."""
    prepare()
    shop(lab, order_status=202, order={"id": 12, "status": "PENDING", "history": PAUSED[:1]})
    lab["order"].on("GET", "/_lab/saga/", 200, {"mode": "sync"})
    lab["order"].on("PUT", "/_lab/saga/", 200, {"mode": "async"})
    lab["order"].on("GET", "/api/orders/12/", 200, {"id": 12, "status": "PENDING", "history": PAUSED})
    payment_outage(lab)
    result = flows.flow_run("checkout-async")
    assert len(lab["order"].sent("GET", "/api/orders/12/")) == 1
    assert result.ok, result.outcome
    # This one order runs async; the lab's mode is never switched.
    assert lab["order"].sent("PUT", "/_lab/saga/") == []
    placed = lab["order"].sent("POST", "/api/orders/")[-1]["headers"]
    assert placed["X-Lab-Saga-Mode"] == "async"
    assert auth.verify(placed["X-Lab-Admin"])["iss"] == "dashboard"
    assert result.flow.expected.startswith("202 at once; the worker's saga pauses")


def test_an_async_order_is_polled_for_a_bounded_time(lab, monkeypatch):
    """Ensure an order the worker never picks up ends the poll after POLL_SECONDS with a note saying so."""
    monkeypatch.setattr(flows, "POLL_SECONDS", 0.6)
    prepare()
    shop(lab, order_status=202, order={"id": 12, "status": "PENDING", "history": PAUSED[:1]})
    result = flows.flow_run("checkout-sync")
    assert not result.ok
    assert any("still PENDING after 0.6 s of polling" in n for n in result.notes)


@pytest.mark.django_db
def test_the_declined_page_explains_the_trace_errors(lab, staff):
    """Ensure the declined flow, cancelled as it should be, says its trace errors are the lesson, not a failure."""
    prepare(flows.DECLINED_CARD)
    cancelled = [
        *CONFIRMED[:1],
        {
            "status": "CANCELLED",
            "step": "cancelled",
            "note": "cancelled: card declined",
            "at": "2026-01-01T10:00:00.120000Z",
        },
    ]
    shop(
        lab,
        order_status=201,
        order={"id": 4, "status": "CANCELLED", "status_reason": "card declined", "history": cancelled},
    )
    lab["payment"].on("GET", "/api/payment-methods/", 200, {"results": [{"token": "pm_saved"}]})
    response = staff.post("/flows/declined/run/")
    page = staff.get(response["Location"]).content.decode()
    assert 'data-ok="true"' in page
    assert 'data-testid="expected-errors"' in page and "402 (card declined)" in page
    assert 'data-testid="order-hop-latency"' in page
    assert 'data-testid="saga-duration"' in page and "120 ms" in page


DB_DOWN = {"id": "preset-inventory-db-down", "kind": "database", "mode": "fail", "probability": 1.0}


def inventory_db_down(lab) -> None:
    lab["inventory"].on("GET", "/_lab/faults/", 200, {"service": "inventory", "faults": [DB_DOWN]})


def test_checkout_with_inventory_database_down_expects_the_reservation_refused(lab):
    """Ensure a checkout whose reservation inventory refused (503) is what the flow expects under the fault."""
    prepare()
    refused = {
        "id": 14,
        "status": "PENDING",
        "status_reason": "Inventory unavailable while reserving stock; nothing was charged.",
        "history": [
            {"status": "PENDING", "step": "received", "note": "order received", "at": "2026-01-01T10:00:00.000000Z"},
            {
                "status": "PENDING",
                "step": "paused",
                "note": "paused: inventory unavailable (HTTP 503)",
                "at": "2026-01-01T10:00:00.900000Z",
            },
        ],
    }
    shop(lab, order_status=202, order=refused)
    inventory_db_down(lab)

    result = flows.flow_run("checkout-sync")

    assert result.ok, result.outcome
    assert "reservation refused (503)" in result.flow.expected
    assert "paused: inventory unavailable" in result.outcome


def test_checkout_confirmed_while_inventory_database_is_down_is_not_as_expected(lab):
    """Ensure the flow does not call a confirmed order right while inventory cannot reserve anything."""
    prepare()
    shop(lab, order_status=201, order={"id": 15, "status": "CONFIRMED", "history": CONFIRMED})
    inventory_db_down(lab)

    assert not flows.flow_run("checkout-sync").ok


def test_browse_with_inventory_database_down_shows_the_stale_copy(lab):
    """Ensure a catalog served from inventory's last good copy is marked STALE on its hop and in the outcome."""
    lab["user"].on("POST", "/api/auth/register/", 201, {"id": 7, "email": "x@lab.local"})
    lab["user"].on("POST", "/api/auth/login/", 200, {"access": "tok", "refresh": "r", "expires_in": 900})
    mug = {"sku": "MUG-1", "name": "Lab mug", "active": True, "available": 9}
    stale = {"count": 1, "stale": True, "results": [mug]}
    lab["inventory"].on("GET", "/api/products/", 200, stale)
    down = {"code": "database_unavailable", "message": "The service's database is unavailable; try again shortly."}
    lab["inventory"].on("GET", "/api/products/MUG-1/", 503, down)
    inventory_db_down(lab)

    result = flows.flow_run("browse")

    assert result.ok, result.outcome
    assert "last good copy, marked stale" in result.flow.expected

    listing = next(h for h in result.hops if h["note"].startswith("browse the catalog"))
    assert "STALE" in listing["note"]
    assert any("last good copy, marked stale: 1 products" in note for note in result.notes)
    assert "marked stale (MUG-1: 9 available then)" in result.outcome
    assert "product page: 503" in result.outcome
    assert [h["note"] for h in result.hops][-2:] == ["search", "product page"]
