"""The SQL statements a checkout's steps cost inventory_service (issue 11's query budget).

Counted as ``lab_db_queries_total`` counts them (``chassis.testing.statements_counted``), in
real transactions (``transaction=True``), so the figures are those of the running service.
"""

import json

import pytest
from django.db import connection

from catalog.models import Reservation, StockMovement
from chassis.testing import statements_counted

from .helpers import stock_of

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/internal/reservations/"
LINES = [{"sku": "KB-001", "quantity": 2}, {"sku": "MS-001", "quantity": 1}]

# The reservation (its unique key tells a replay: no lookup first), the products, one conditional
# UPDATE taking the stock, its lines and its stock movements.
RESERVE = 5
# The lines with their products and reservation, one UPDATE of the reservation (HELD -> COMMITTED,
# its condition) and its stock rows (reserved -> sold) together, the movements.
COMMIT = 3


def post(client, headers, path, body, key):
    return client.post(path, json.dumps(body), content_type="application/json", HTTP_IDEMPOTENCY_KEY=key, **headers)


@pytest.fixture
def shop(make_product):
    make_product("KB-001", stock=10, price_cents=8900)
    make_product("MS-001", stock=5, price_cents=2400)
    connection.ensure_connection()  # a new connection's session setup is not the checkout's


def test_reserve_and_commit_stay_within_their_statements(client, order_service, shop):
    """Ensure a reservation costs 5 statements and its commit 3, with the same answers and movements as ever."""
    body = {"order_id": 7, "idempotency_key": "order-7-reserve", "lines": LINES}
    with statements_counted() as reserving:
        reserved = post(client, order_service, URL, body, "order-7-reserve")
    assert reserved.status_code == 201, reserved.json()
    reservation = reserved.json()
    with statements_counted() as committing:
        committed = post(client, order_service, f"{URL}{reservation['id']}/commit/", {}, "commit-7")
    assert committed.status_code == 200, committed.json()

    assert reserving.count == RESERVE, reserving.sql
    assert committing.count == COMMIT, committing.sql
    assert [(line["sku"], line["name"], line["unit_price_cents"]) for line in reservation["lines"]] == [
        ("KB-001", "Product KB-001", 8900),
        ("MS-001", "Product MS-001", 2400),
    ]
    assert (reservation["total_cents"], reservation["currency"], reservation["status"]) == (20200, "EUR", "HELD")
    assert committed.json() == {
        **reservation,
        "status": "COMMITTED",
        "updated_at": committed.json()["updated_at"],
    }
    assert Reservation.objects.get().status == "COMMITTED"
    assert sorted(StockMovement.objects.filter(reservation__isnull=False).values_list("kind", "quantity")) == [
        ("COMMIT", 1),
        ("COMMIT", 2),
        ("RESERVE", 1),
        ("RESERVE", 2),
    ]
    kb = stock_of("KB-001")
    assert (kb.available, kb.reserved, kb.sold) == (8, 0, 2)
