"""Customers' and staff's views of payments, and the staff ledger."""

import pytest

from payments import services

from .conftest import ALICE, BOB, DECLINE_CARD, new_key

pytestmark = pytest.mark.django_db


def refund(charge, amount_cents=None):
    return services.refund_create(
        charge_id=charge.id, amount_cents=amount_cents, reason="test", idempotency_key=new_key("refund")
    ).refund


def test_customer_lists_own_payments_with_refunds(api, alice_auth, make_charge, django_assert_max_num_queries):
    """Ensure a customer sees only their charges, each with its refunds, in a constant number of queries."""
    mine = [make_charge(customer_id=ALICE, amount_cents=1000) for _ in range(6)]
    for charge in mine:
        refund(charge, 100)
        refund(charge, 200)
    make_charge(customer_id=BOB)
    with django_assert_max_num_queries(3):
        response = api.get("/api/payments/", auth=alice_auth)
    body = response.json()
    assert response.status_code == 200 and body["count"] == 6
    assert {item["id"] for item in body["results"]} == {str(c.id) for c in mine}
    first = body["results"][0]
    assert first["refunded_cents"] == 300 and [r["amount_cents"] for r in first["refunds"]] == [100, 200]
    assert first["card_brand"] == "visa" and first["card_last4"] == "4242"


def test_staff_lists_every_payment(api, staff_auth, make_charge, django_assert_max_num_queries):
    """Ensure staff see everybody's charges, declined ones included."""
    make_charge(customer_id=ALICE)
    make_charge(customer_id=BOB, number=DECLINE_CARD)
    with django_assert_max_num_queries(3):
        body = api.get("/api/payments/", auth=staff_auth).json()
    assert body["count"] == 2 and {item["status"] for item in body["results"]} == {"CAPTURED", "DECLINED"}


def test_payment_detail_is_own_only(api, alice_auth, bob_auth, staff_auth, make_charge):
    """Ensure a customer reads their own charge, another customer gets 404, staff read any."""
    charge = make_charge(customer_id=ALICE, amount_cents=1500)
    refund(charge)
    url = f"/api/payments/{charge.id}/"
    own = api.get(url, auth=alice_auth)
    assert own.status_code == 200
    assert own.json()["refunded_cents"] == 1500 and len(own.json()["refunds"]) == 1
    assert api.get(url, auth=bob_auth).status_code == 404
    assert api.get(url, auth=staff_auth).status_code == 200
    assert api.get("/api/payments/not-a-uuid/", auth=alice_auth).status_code == 404


def test_payments_need_a_user(api, order_auth):
    """Ensure anonymous callers get 401 and services get 403 on the customer API."""
    assert api.get("/api/payments/").status_code == 401
    assert api.get("/api/payments/", auth=order_auth).status_code == 403


def test_ledger_is_staff_only(api, alice_auth):
    """Ensure a customer cannot read the ledger and an anonymous caller must log in."""
    assert api.get("/api/ledger/", auth=alice_auth).status_code == 403
    assert api.get("/api/ledger/").status_code == 401


def test_ledger_filtered_by_order(api, staff_auth, make_charge, django_assert_max_num_queries):
    """Ensure staff list the ledger of one order: the capture and each refund, in few queries."""
    charge = make_charge(order_id="order-42", amount_cents=1000)
    refund(charge, 400)
    make_charge(order_id="order-43")
    make_charge(order_id="order-42", number=DECLINE_CARD)  # declined: no ledger entry
    with django_assert_max_num_queries(2):
        response = api.get("/api/ledger/?order_id=order-42", auth=staff_auth)
    body = response.json()
    assert response.status_code == 200 and body["count"] == 2
    assert sorted((e["kind"], e["amount_cents"]) for e in body["results"]) == [("CHARGE", 1000), ("REFUND", -400)]
    assert {e["order_id"] for e in body["results"]} == {"order-42"}
    assert api.get("/api/ledger/", auth=staff_auth).json()["count"] == 3
    assert api.get("/api/ledger/?order_id=" + "x" * 65, auth=staff_auth).status_code == 400


@pytest.mark.parametrize(
    "query, status",
    [
        # A page past the last one is a 404 ...
        ("?page=999", 404),
        # ... a page or page size that is not a positive integer is a 400 ...
        ("?page=abc", 400),
        ("?page=0", 400),
        ("?page_size=-1", 400),
        ("?page_size=abc", 400),
        # ... and a page size over the maximum is cut to it.
        ("?page_size=100000", 200),
    ],
)
def test_bad_pagination_is_never_a_500(api, staff_auth, make_charge, query, status):
    """Ensure nonsense paging parameters answer a 400 (not a number), a 404 (past the end) or a page, never 500."""
    make_charge()
    for url in ("/api/payments/", "/api/ledger/"):
        response = api.get(url + query, auth=staff_auth)
        assert response.status_code == status, (url, response.content[:200])
        if status == 200:
            assert response.json()["count"] == 1 and len(response.json()["results"]) == 1


@pytest.mark.parametrize(
    "url, who",
    [
        ("/api/payment-methods/", "alice"),
        ("/api/payments/", "alice"),
        ("/api/payments/{charge}/", "alice"),
        ("/api/ledger/", "staff"),
        ("/internal/charges/?order_id={order}", "order"),
    ],
)
def test_browsable_api_pages(api, alice_auth, staff_auth, order_auth, make_charge, url, who):
    """Ensure every list and detail page renders as HTML for a browser."""
    charge = make_charge(customer_id=ALICE)
    auth = {"alice": alice_auth, "staff": staff_auth, "order": order_auth}[who]
    response = api.get(url.format(charge=charge.id, order=charge.order_id), auth=auth, HTTP_ACCEPT="text/html")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/html")
    assert b"<html" in response.content


def test_browsable_api_error_page(api):
    """Ensure an anonymous browser gets a rendered 401 page, not a server error."""
    response = api.get("/api/payments/", HTTP_ACCEPT="text/html")
    assert response.status_code == 401 and b"<html" in response.content
