"""Staff management of the catalog: create, edit, restock, ledger."""

import json

import pytest

from catalog.models import Product, StockMovement

from .helpers import assert_stock_conserved, snapshot, stock_of

pytestmark = pytest.mark.django_db

LIST = "/api/products/"
VALID = {"sku": "KB-001", "name": "Keyboard", "price_cents": 8900, "currency": "EUR", "initial_stock": 40}


def post(client, url, data, headers, **extra):
    body = data if isinstance(data, (str, bytes)) else json.dumps(data)
    return client.post(url, body, content_type="application/json", **headers, **extra)


def patch(client, url, data, headers):
    body = data if isinstance(data, (str, bytes)) else json.dumps(data)
    return client.patch(url, body, content_type="application/json", **headers)


# --- create -----------------------------------------------------------------------------


def test_staff_creates_a_product_with_initial_stock(client, staff):
    """Ensure staff create a product, its stock and an INITIAL movement; the answer is the detail."""
    response = post(client, LIST, {**VALID, "description": "Keyboards", "currency": "USD"}, staff)

    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["sku"], body["currency"], body["available"], body["initial"], body["active"]) == (
        "KB-001",
        "USD",
        40,
        40,
        True,
    )
    assert list(StockMovement.objects.values_list("kind", "quantity")) == [("INITIAL", 40)]
    assert_stock_conserved()


def test_create_without_initial_stock_writes_no_movement(client, staff):
    """Ensure a product created with no stock has a zero stock row and an empty ledger."""
    response = post(client, LIST, {**VALID, "sku": "KB-002", "initial_stock": 0}, staff)

    assert response.status_code == 201
    assert response.json()["available"] == 0
    assert StockMovement.objects.count() == 0
    assert stock_of("KB-002").initial == 0


def test_duplicate_sku_is_400(client, staff, make_product):
    """Ensure a sku is never created twice (400 on the sku field); the existing product is untouched."""
    make_product("KB-001", stock=5)
    before = snapshot()

    response = post(client, LIST, VALID, staff)

    assert response.status_code == 400
    assert response.json()["code"] == "invalid"
    assert "sku" in response.json()["fields"]
    assert snapshot() == before


@pytest.mark.parametrize(
    "body, field",
    [
        ({k: v for k, v in VALID.items() if k != "sku"}, "sku"),
        ({k: v for k, v in VALID.items() if k != "name"}, "name"),
        ({k: v for k, v in VALID.items() if k != "price_cents"}, "price_cents"),
        ({k: v for k, v in VALID.items() if k != "currency"}, "currency"),
        ({k: v for k, v in VALID.items() if k != "initial_stock"}, "initial_stock"),
        ({**VALID, "sku": "kb-001"}, "sku"),
        ({**VALID, "sku": "KB"}, "sku"),
        ({**VALID, "sku": "K" * 33}, "sku"),
        ({**VALID, "sku": "KB 001"}, "sku"),
        ({**VALID, "sku": 123}, "sku"),
        ({**VALID, "name": ""}, "name"),
        ({**VALID, "name": "n" * 201}, "name"),
        ({**VALID, "name": ["a"]}, "name"),
        ({**VALID, "name": "bad\x00name"}, "name"),
        ({**VALID, "description": "d" * 2001}, "description"),
        ({**VALID, "price_cents": 0}, "price_cents"),
        ({**VALID, "price_cents": -5}, "price_cents"),
        ({**VALID, "price_cents": 10**9 + 1}, "price_cents"),
        ({**VALID, "price_cents": "12.5"}, "price_cents"),
        ({**VALID, "price_cents": 12.5}, "price_cents"),
        ({**VALID, "price_cents": True}, "price_cents"),
        ({**VALID, "price_cents": 10**30}, "price_cents"),
        ({**VALID, "currency": "euro"}, "currency"),
        ({**VALID, "currency": "eur"}, "currency"),
        ({**VALID, "active": "perhaps"}, "active"),
        ({**VALID, "active": 0}, "active"),  # a JSON boolean only, as the schema says
        ({**VALID, "active": "true"}, "active"),
        ({**VALID, "initial_stock": -1}, "initial_stock"),
        ({**VALID, "initial_stock": 1_000_001}, "initial_stock"),
        ({**VALID, "initial_stock": None}, "initial_stock"),
    ],
)
def test_invalid_create_is_400_and_writes_nothing(client, staff, body, field):
    """Ensure each invalid field answers 400 naming it, and nothing is created."""
    response = post(client, LIST, body, staff)

    assert response.status_code == 400, response.content
    assert response.json()["code"] == "invalid"
    assert field in response.json()["fields"]
    assert Product.objects.count() == 0 and StockMovement.objects.count() == 0


@pytest.mark.parametrize("raw", ["{not json", "[]", "null", '"text"', "42", ""])
def test_malformed_create_body_is_400(client, staff, raw):
    """Ensure a body that is not a JSON object answers 400, never 500, and writes nothing."""
    response = post(client, LIST, raw, staff)

    assert response.status_code == 400, response.content
    assert response.json()["code"] in ("parse_error", "invalid")
    assert Product.objects.count() == 0


@pytest.mark.parametrize(
    "method, url",
    [
        ("post", LIST),
        ("patch", "/api/products/KB-001/"),
        ("post", "/api/products/KB-001/restock/"),
        ("get", "/api/products/KB-001/movements/"),
    ],
)
def test_staff_endpoints_refuse_anonymous_customers_and_services(
    client, make_product, customer, order_service, method, url
):
    """Ensure staff endpoints answer 401 without a token and 403 to customers and services, changing nothing."""
    make_product("KB-001")
    before = snapshot()
    body = json.dumps({"quantity": 5, "name": "x", **VALID})
    call = getattr(client, method)
    kwargs = {"content_type": "application/json"} if method != "get" else {}
    data = body if method != "get" else None

    anonymous = call(url, data, **kwargs)
    assert anonymous.status_code == 401
    assert anonymous["WWW-Authenticate"].startswith("Bearer")
    assert call(url, data, **kwargs, **customer).status_code == 403
    assert call(url, data, **kwargs, **order_service).status_code == 403
    assert call(url, data, **kwargs, HTTP_AUTHORIZATION="Bearer not-a-token").status_code == 401
    assert snapshot() == before


# --- update -----------------------------------------------------------------------------


def test_staff_update_name_description_price_and_active(client, staff, make_product):
    """Ensure PATCH changes the given fields only, and leaves stock alone."""
    make_product("KB-001", stock=9, name="Old", description="Old description", price_cents=100)

    response = patch(client, "/api/products/KB-001/", {"name": "New", "price_cents": 250, "active": False}, staff)

    assert response.status_code == 200, response.json()
    product = Product.objects.get(sku="KB-001")
    assert (product.name, product.description, product.price_cents, product.active) == (
        "New",
        "Old description",
        250,
        False,
    )
    assert response.json()["available"] == 9


@pytest.mark.parametrize(
    "body, field",
    [
        ({"sku": "KB-002"}, "sku"),
        ({"currency": "USD"}, "currency"),
        ({"pirce_cents": 5}, "pirce_cents"),
        ({"price_cents": 0}, "price_cents"),
        ({"price_cents": 10**9 + 1}, "price_cents"),
        ({"name": ""}, "name"),
        ({"name": "n" * 201}, "name"),
        ({"description": None}, "description"),
        ({"active": "yes please"}, "active"),
    ],
)
def test_invalid_update_is_400_and_changes_nothing(client, staff, make_product, body, field):
    """Ensure an invalid, unknown or immutable field answers 400 naming it, and nothing changes."""
    make_product("KB-001")
    before = snapshot()

    response = patch(client, "/api/products/KB-001/", body, staff)

    assert response.status_code == 400
    assert field in response.json()["fields"]
    assert snapshot() == before


def test_update_of_unknown_product_is_404(client, staff):
    """Ensure PATCH of an unknown sku answers 404."""
    assert patch(client, "/api/products/ZZ-999/", {"name": "x"}, staff).status_code == 404


# --- restock ----------------------------------------------------------------------------


def test_restock_adds_available_units_and_a_movement(client, staff, make_product):
    """Ensure a restock raises available and restocked and writes a RESTOCK movement with its note."""
    make_product("KB-001", stock=10)

    response = post(client, "/api/products/KB-001/restock/", {"quantity": 15, "note": "pallet 7"}, staff)

    assert response.status_code == 200
    assert (response.json()["available"], response.json()["restocked"]) == (25, 15)
    movement = StockMovement.objects.latest("id")
    assert (movement.kind, movement.quantity, movement.note) == ("RESTOCK", 15, "pallet 7")
    assert_stock_conserved()


@pytest.mark.parametrize(
    "body, field",
    [
        ({}, "quantity"),
        ({"quantity": 0}, "quantity"),
        ({"quantity": 100_001}, "quantity"),
        ({"quantity": "ten"}, "quantity"),
        ({"quantity": 5, "note": "n" * 201}, "note"),
    ],
)
def test_invalid_restock_is_400(client, staff, make_product, body, field):
    """Ensure a restock outside 1..100000 or with a long note answers 400 and changes nothing."""
    make_product("KB-001")
    before = snapshot()

    response = post(client, "/api/products/KB-001/restock/", body, staff)

    assert response.status_code == 400
    assert field in response.json()["fields"]
    assert snapshot() == before


def test_restock_of_unknown_product_is_404(client, staff):
    """Ensure restocking an unknown sku answers 404."""
    assert post(client, "/api/products/ZZ-999/restock/", {"quantity": 1}, staff).status_code == 404


# --- ledger -----------------------------------------------------------------------------


def test_movements_list_newest_first_without_n_plus_one(client, staff, make_product, django_assert_max_num_queries):
    """Ensure the ledger lists a product's movements newest first, in a fixed number of queries."""
    make_product("KB-001", stock=10)
    make_product("MS-001", stock=10)
    for quantity in range(1, 31):
        post(client, "/api/products/KB-001/restock/", {"quantity": quantity}, staff)

    with django_assert_max_num_queries(3):
        response = client.get("/api/products/KB-001/movements/", {"page_size": 50}, **staff)

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 31
    assert [m["quantity"] for m in body["results"][:2]] == [30, 29]
    assert body["results"][-1]["kind"] == "INITIAL"
    assert body["results"][0]["reservation_id"] is None and body["results"][0]["order_id"] is None
