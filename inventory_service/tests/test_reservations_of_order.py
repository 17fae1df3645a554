"""GET /internal/reservations/?order_id=: what inventory holds for one order (order_service's compensation asks)."""

import json

import pytest

from catalog.services import reservation_release

from .helpers import snapshot

pytestmark = pytest.mark.django_db

URL = "/internal/reservations/"


@pytest.fixture
def shop(make_product):
    make_product("KB-001", stock=10, price_cents=8900)
    make_product("MS-001", stock=5, price_cents=2400)


def reserve(client, headers, *, order_id, key, lines=None):
    body = {"order_id": order_id, "idempotency_key": key, "lines": lines or [{"sku": "KB-001", "quantity": 1}]}
    response = client.post(URL, json.dumps(body), content_type="application/json", **headers)
    assert response.status_code == 201, response.content
    return response.json()


def test_lists_the_reservations_of_one_order_whatever_their_status(client, order_service, shop):
    """Ensure the lookup answers every reservation of that order (held or released), oldest first, and no other."""
    first = reserve(client, order_service, order_id=7, key="order-7-reserve")
    reservation_release(reservation_id=first["id"])
    second = reserve(
        client, order_service, order_id=7, key="order-7-reserve-again", lines=[{"sku": "MS-001", "quantity": 2}]
    )
    reserve(client, order_service, order_id=8, key="order-8-reserve")

    response = client.get(URL, {"order_id": "7"}, **order_service)

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 2
    assert [(r["id"], r["status"]) for r in body["results"]] == [(first["id"], "RELEASED"), (second["id"], "HELD")]
    assert body["results"][1]["lines"] == [
        {"sku": "MS-001", "name": "Product MS-001", "quantity": 2, "unit_price_cents": 2400, "currency": "EUR"}
    ]
    assert body["results"][1]["total_cents"] == 4800


def test_an_order_without_reservations_gets_an_empty_list(client, order_service, shop):
    """Ensure an order inventory never heard of answers 200 with no results (not a 404)."""
    response = client.get(URL, {"order_id": "404"}, **order_service)

    assert response.status_code == 200
    assert (response.json()["count"], response.json()["results"]) == (0, [])


@pytest.mark.parametrize("query", [{}, {"order_id": ""}, {"order_id": "x" * 65}, {"order_id": "7; DROP"}])
def test_order_id_is_required_and_checked(client, order_service, query):
    """Ensure a missing or malformed order_id is a 400 naming the field."""
    response = client.get(URL, query, **order_service)

    assert response.status_code == 400
    assert "order_id" in response.json()["fields"]


def test_lookup_is_for_order_service_only(
    client, shop, order_service, customer, staff, payment_service, dashboard_service
):
    """Ensure nobody but order_service may list an order's reservations."""
    reserve(client, order_service, order_id=7, key="order-7-reserve")
    before = snapshot()

    assert client.get(URL, {"order_id": "7"}).status_code == 401
    for headers in (customer, staff, payment_service, dashboard_service):
        assert client.get(URL, {"order_id": "7"}, **headers).status_code == 403
    assert snapshot() == before


def test_lookup_uses_a_fixed_number_of_queries(client, order_service, make_product, django_assert_max_num_queries):
    """Ensure listing five reservations with several lines each costs a fixed number of queries, not one per row."""
    for i in range(4):
        make_product(f"KB-{i:03}", stock=50)
    for n in range(5):
        reserve(
            client,
            order_service,
            order_id=9,
            key=f"order-9-reserve-{n}",
            lines=[{"sku": f"KB-{i:03}", "quantity": 1} for i in range(4)],
        )

    with django_assert_max_num_queries(3):
        response = client.get(URL, {"order_id": "9"}, **order_service)

    assert response.status_code == 200 and response.json()["count"] == 5
