"""One product: GET /api/products/<sku>/."""

import pytest

pytestmark = pytest.mark.django_db


def test_detail_shows_stock_counters(client, make_product):
    """Ensure the detail has available, reserved, sold and the counters conservation is checked with."""
    make_product("KB-001", stock=12, price_cents=8900, name="Keyboard", description="Keyboards")

    response = client.get("/api/products/KB-001/")

    assert response.status_code == 200
    body = response.json()
    assert {k: body[k] for k in ("sku", "name", "price_cents", "currency", "active")} == {
        "sku": "KB-001",
        "name": "Keyboard",
        "price_cents": 8900,
        "currency": "EUR",
        "active": True,
    }
    assert (body["available"], body["reserved"], body["sold"], body["initial"], body["restocked"]) == (12, 0, 0, 12, 0)


def test_detail_of_inactive_product_is_shown(client, make_product):
    """Ensure a deactivated product can still be looked at (old orders link to it), flagged inactive."""
    make_product("KB-001", active=False)

    response = client.get("/api/products/KB-001/")

    assert response.status_code == 200
    assert response.json()["active"] is False


def test_detail_lookup_ignores_case(client, make_product):
    """Ensure /api/products/kb-001/ finds KB-001."""
    make_product("KB-001")

    assert client.get("/api/products/kb-001/").json()["sku"] == "KB-001"


@pytest.mark.parametrize("sku", ["ZZ-999", "x" * 300, "%20"])
def test_unknown_product_is_404_in_the_error_format(client, sku):
    """Ensure an unknown sku answers 404 with the chassis error body."""
    response = client.get(f"/api/products/{sku}/")

    assert response.status_code == 404
    body = response.json()
    assert body["code"] == "not_found"
    assert body["request_id"]


def test_detail_costs_one_query(client, make_product, django_assert_num_queries):
    """Ensure the detail loads the product and its stock in one query."""
    make_product("KB-001")

    with django_assert_num_queries(1):
        assert client.get("/api/products/KB-001/").status_code == 200
