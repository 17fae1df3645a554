"""GET /api/orders/ and /api/orders/<id>/: own orders only, newest first, without N+1 queries."""

import pytest

from orders.models import OrderStatus
from tests.conftest import ADMIN, ALICE, BOB, make_order, order_body, place

pytestmark = pytest.mark.django_db


def test_list_shows_own_orders_newest_first_with_lines_and_history(alice, bob):
    """Ensure a customer lists only their orders, newest first, each with lines and history."""
    first = place(alice).data
    second = place(alice, order_body(checkout=False)).data
    place(bob)

    response = alice.get("/api/orders/")

    assert response.status_code == 200
    assert response.data["count"] == 2
    assert [o["id"] for o in response.data["results"]] == [second["id"], first["id"]]
    assert response.data["results"][1]["lines"][0]["sku"] == "KB-001"
    assert response.data["results"][1]["history"][0]["note"] == "order received"


def test_list_is_paginated(alice):
    """Ensure the list pages with page_size and links to the next page."""
    for _ in range(3):
        make_order(customer_id=ALICE)

    response = alice.get("/api/orders/?page_size=2")

    assert response.data["count"] == 3
    assert len(response.data["results"]) == 2
    assert "page=2" in response.data["next"]


def test_list_query_count_does_not_grow_with_orders(alice, django_assert_max_num_queries):
    """Ensure listing 20 orders with their lines and history takes a fixed handful of queries."""
    for _ in range(20):
        make_order(customer_id=ALICE)

    with django_assert_max_num_queries(4):  # count, orders, lines, events
        response = alice.get("/api/orders/")

    assert len(response.data["results"]) == 20


def test_detail_query_count_is_fixed(alice, django_assert_max_num_queries):
    """Ensure one order with its lines and history takes three queries."""
    order = make_order(customer_id=ALICE)

    with django_assert_max_num_queries(3):
        response = alice.get(f"/api/orders/{order.pk}/")

    assert response.status_code == 200


def test_detail_has_lines_and_history(alice):
    """Ensure the detail shows the lines and the timeline entries with status, step, note and time."""
    order = place(alice).data

    response = alice.get(f"/api/orders/{order['id']}/")

    assert response.status_code == 200
    entry = response.data["history"][0]
    assert set(entry) == {"status", "step", "note", "at"}
    assert [e["step"] for e in response.data["history"]] == [
        "received",
        "reserved",
        "charged",
        "committed",
        "confirmed",
    ]


def test_another_customers_order_is_not_found(alice, bob):
    """Ensure a customer gets 404 for someone else's order, on read and on every write."""
    order = place(alice).data

    assert bob.get(f"/api/orders/{order['id']}/").status_code == 404
    assert (
        bob.patch(
            f"/api/orders/{order['id']}/", {"lines": [{"sku": "KB-001", "quantity": 1}]}, format="json"
        ).status_code
        == 404
    )
    assert bob.post(f"/api/orders/{order['id']}/cancel/").status_code == 404
    assert bob.post(f"/api/orders/{order['id']}/checkout/").status_code == 404
    assert alice.get(f"/api/orders/{order['id']}/").data["status"] == "CONFIRMED"


def test_anonymous_gets_401_and_services_403(anonymous, dashboard):
    """Ensure the API needs a user token: none is a 401, a service token a 403."""
    response = anonymous.get("/api/orders/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert anonymous.post("/api/orders/", order_body(), format="json").status_code == 401
    assert dashboard.get("/api/orders/").status_code == 403


def test_forged_token_is_refused(anonymous):
    """Ensure a token that is not signed by user_service is a 401."""
    anonymous.credentials(HTTP_AUTHORIZATION="Bearer not.a.jwt")
    assert anonymous.get("/api/orders/").status_code == 401


def test_staff_see_everybody_and_filter_by_customer(admin, alice, bob):
    """Ensure staff list all orders, one customer's with ?customer_id=, and read any order."""
    alice_order = place(alice).data
    place(bob)

    assert admin.get("/api/orders/").data["count"] == 2
    only_bob = admin.get(f"/api/orders/?customer_id={BOB}").data
    assert only_bob["count"] == 1 and only_bob["results"][0]["customer_id"] == BOB
    assert admin.get(f"/api/orders/{alice_order['id']}/").status_code == 200


def test_customers_cannot_use_the_staff_filter(alice, bob):
    """Ensure ?customer_id= does not show a customer anybody else's orders."""
    place(bob)

    assert alice.get(f"/api/orders/?customer_id={BOB}").data["count"] == 0


def test_staff_cannot_change_a_customers_order(admin, alice):
    """Ensure staff may read but not cancel somebody else's order (403)."""
    order = place(alice).data

    response = admin.post(f"/api/orders/{order['id']}/cancel/")

    assert response.status_code == 403
    assert alice.get(f"/api/orders/{order['id']}/").data["status"] == "CONFIRMED"


def test_status_filter(alice):
    """Ensure ?status= lists only the orders in that status."""
    make_order(customer_id=ALICE, status=OrderStatus.SHIPPED)
    make_order(customer_id=ALICE)

    response = alice.get("/api/orders/?status=SHIPPED")

    assert [o["status"] for o in response.data["results"]] == ["SHIPPED"]


def test_browsable_api_renders_html(alice):
    """Ensure a browser (Accept: text/html) gets the browsable API page for the list and for one order."""
    order = place(alice).data

    for path in ("/api/orders/", f"/api/orders/{order['id']}/"):
        response = alice.get(path, HTTP_ACCEPT="text/html")
        assert response.status_code == 200
        assert response["Content-Type"].startswith("text/html")
        assert b"KB-001" in response.content


def test_reconciliation_list_is_for_the_dashboard_only(dashboard, alice, admin):
    """Ensure the reconciliation rows answer the dashboard with the peers' ids, and refuse users."""
    order = place(alice).data
    place(alice, order_body(payment_method="pm_declined"))

    response = dashboard.get("/internal/reconciliation/orders/?status=CONFIRMED&page_size=1000")

    assert response.status_code == 200
    [row] = response.data["results"]
    assert row["id"] == order["id"] and row["reservation_id"] and row["charge_id"]
    assert {"status", "saga_step", "total_cents", "currency", "created_at", "updated_at"} <= set(row)
    assert alice.get("/internal/reconciliation/orders/").status_code == 403
    assert admin.get("/internal/reconciliation/orders/").status_code == 403


def test_staff_view_of_an_order_in_the_list_uses_their_id(admin):
    """Ensure a staff member's own filter by their id shows only orders placed by them."""
    make_order(customer_id=ADMIN)
    make_order(customer_id=ALICE)

    assert admin.get(f"/api/orders/?customer_id={ADMIN}").data["count"] == 1
