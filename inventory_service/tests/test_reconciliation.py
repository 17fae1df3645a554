"""The audit's read-only view of stock and reservations (dashboard only)."""

import pytest

from catalog.services import reservation_commit, reservation_create
from chassis.testing import bearer, service_token

pytestmark = pytest.mark.django_db


@pytest.fixture
def dashboard() -> dict:
    return bearer(service_token(caller="dashboard", audience="inventory"))


def test_stock_rows_for_the_audit(client, dashboard, make_product):
    """Ensure every product, inactive ones too, is listed by sku with its five counters."""
    make_product("MS-001", stock=5)
    make_product("KB-001", stock=7, active=False)
    reservation, _ = reservation_create(
        order_id="9", idempotency_key="order-9-reserve", lines=[{"sku": "MS-001", "quantity": 2}]
    )
    reservation_commit(reservation_id=reservation.pk)

    response = client.get("/internal/reconciliation/stock/", **dashboard)

    assert response.status_code == 200
    assert response.json()["results"] == [
        {"sku": "KB-001", "initial": 7, "restocked": 0, "available": 7, "reserved": 0, "sold": 0},
        {"sku": "MS-001", "initial": 5, "restocked": 0, "available": 3, "reserved": 0, "sold": 2},
    ]


def test_reservation_rows_for_the_audit(client, dashboard, make_product, django_assert_max_num_queries):
    """Ensure reservations are listed oldest first with status, total and lines, filterable, without N+1."""
    make_product("KB-001", stock=100, price_cents=300)
    make_product("MS-001", stock=100, price_cents=50)
    for i in range(30):
        reservation_create(
            order_id=str(i),
            idempotency_key=f"order-{i}-reserve",
            lines=[{"sku": "KB-001", "quantity": 1}, {"sku": "MS-001", "quantity": 2}],
        )

    with django_assert_max_num_queries(3):
        response = client.get("/internal/reconciliation/reservations/", {"page_size": 1000}, **dashboard)

    body = response.json()
    assert body["count"] == 30 and len(body["results"]) == 30
    first = body["results"][0]
    assert (first["order_id"], first["status"], first["total_cents"]) == ("0", "HELD", 400)
    assert first["lines"] == [{"sku": "KB-001", "quantity": 1}, {"sku": "MS-001", "quantity": 2}]
    only = client.get("/internal/reconciliation/reservations/", {"order_id": "7"}, **dashboard).json()
    assert [r["order_id"] for r in only["results"]] == ["7"]
    assert client.get("/internal/reconciliation/reservations/", {"status": "NOPE"}, **dashboard).status_code == 400


@pytest.mark.parametrize("path", ["/internal/reconciliation/stock/", "/internal/reconciliation/reservations/"])
def test_reconciliation_is_for_the_dashboard_only(client, order_service, staff, path):
    """Ensure the audit views answer 401 without a token and 403 to users, staff and order_service."""
    assert client.get(path).status_code == 401
    assert client.get(path, **staff).status_code == 403
    assert client.get(path, **order_service).status_code == 403
