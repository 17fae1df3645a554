"""The public catalog: GET /api/products/."""

import pytest

from catalog.models import Product

URL = "/api/products/"

pytestmark = pytest.mark.django_db


def skus(response) -> list[str]:
    return [item["sku"] for item in response.json()["results"]]


def test_list_shows_active_products_ordered_by_sku_with_available(client, make_product):
    """Ensure anyone sees active products only, ordered by sku, with the units available."""
    make_product("MS-001", stock=5, price_cents=2400)
    make_product("KB-001", stock=7)
    make_product("CB-001", stock=3, active=False)

    response = client.get(URL)

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 2
    assert skus(response) == ["KB-001", "MS-001"]
    assert body["results"][1] == {
        "sku": "MS-001",
        "name": "Product MS-001",
        "description": "",
        "price_cents": 2400,
        "currency": "EUR",
        "active": True,
        "available": 5,
    }


def test_staff_may_include_inactive_products(client, make_product, staff, customer):
    """Ensure ?include_inactive=1 lists inactive products for staff, and is ignored for customers."""
    make_product("KB-001")
    make_product("CB-001", active=False)

    assert skus(client.get(URL, {"include_inactive": "1"}, **staff)) == ["CB-001", "KB-001"]
    assert skus(client.get(URL, {"include_inactive": "1"}, **customer)) == ["KB-001"]
    assert skus(client.get(URL, {"include_inactive": "1"})) == ["KB-001"]


def test_search_matches_sku_name_and_description(client, make_product):
    """Ensure ?search= finds words in the sku, the name or the description, case-insensitively."""
    make_product("KB-001", name="Mechanical keyboard")
    make_product("CB-001", name="Cable", description="USB-C to USB-C, 1 m")
    make_product("MS-001", name="Mouse")

    assert skus(client.get(URL, {"search": "KEYBOARD"})) == ["KB-001"]
    assert skus(client.get(URL, {"search": "usb-c"})) == ["CB-001"]
    assert skus(client.get(URL, {"search": "ms-0"})) == ["MS-001"]
    assert skus(client.get(URL, {"search": "nothing like it"})) == []


def test_sku_lookup_is_exact_and_case_insensitive(client, make_product):
    """Ensure ?sku=A,B returns exactly those products, whatever the case and spacing."""
    for sku in ("KB-001", "KB-0011", "MS-001", "CB-001"):
        make_product(sku)

    assert skus(client.get(URL, {"sku": "ms-001, KB-001,,"})) == ["KB-001", "MS-001"]
    assert skus(client.get(URL, {"sku": "ZZ-999"})) == []


@pytest.mark.parametrize(
    "params, field",
    [
        ({"sku": ",".join(f"KB-{i:03}" for i in range(51))}, "sku"),
        ({"sku": "KB-001,not a sku"}, "sku"),
        ({"search": "x" * 101}, "search"),
        ({"include_inactive": "maybe"}, "include_inactive"),
    ],
)
def test_bad_query_parameters_are_400(client, params, field):
    """Ensure malformed query parameters answer 400 naming the parameter."""
    response = client.get(URL, params)

    assert response.status_code == 400
    assert response.json()["code"] == "invalid"
    assert field in response.json()["fields"]


def test_pagination(client, make_product):
    """Ensure the list is paginated with page and page_size (at most 100)."""
    for i in range(25):
        make_product(f"KB-{i:03}")

    first = client.get(URL).json()
    assert first["count"] == 25 and len(first["results"]) == 20 and first["next"] and first["previous"] is None
    second = client.get(URL, {"page": 2}).json()
    assert [p["sku"] for p in second["results"]] == [f"KB-{i:03}" for i in range(20, 25)]
    assert len(client.get(URL, {"page_size": 5}).json()["results"]) == 5
    assert len(client.get(URL, {"page_size": 1000}).json()["results"]) == 25
    assert client.get(URL, {"page": 99}).status_code == 404


def test_list_queries_do_not_grow_with_the_page(client, make_product, django_assert_max_num_queries):
    """Ensure a page of 50 products costs a count and one joined query, not one query per product."""
    for i in range(50):
        make_product(f"KB-{i:03}")

    with django_assert_max_num_queries(2):
        response = client.get(URL, {"page_size": 50})

    assert len(response.json()["results"]) == 50
    assert Product.objects.count() == 50


def test_browsable_api_renders_html(client, make_product):
    """Ensure a browser (Accept: text/html) gets the browsable API page."""
    make_product("KB-001")

    response = client.get(URL, HTTP_ACCEPT="text/html")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    assert b"KB-001" in response.content


def _database_fails(monkeypatch):
    """Every query of the catalog's selector fails as a database down would (the database fault's error)."""
    from django.db import OperationalError

    from catalog import selectors

    def down(**_kwargs):
        raise OperationalError("database down")

    monkeypatch.setattr(selectors, "product_list", down)


def test_fallback_serves_the_last_good_catalog_page_marked_stale(client, make_product, monkeypatch):
    """Ensure with the fallback switch on, a database failure serves the page last answered, marked stale."""
    from chassis.lab import resilience

    resilience.switches_reset()
    make_product("KB-001", stock=7)
    good = client.get(URL)
    assert good.status_code == 200 and "stale" not in good.json()
    _database_fails(monkeypatch)

    served = client.get(URL)

    assert served.status_code == 200
    assert served["X-Lab-Stale"] == "true"
    assert served.json()["stale"] is True
    assert skus(served) == ["KB-001"]


def test_without_the_fallback_a_database_failure_is_a_503(client, make_product, monkeypatch):
    """Ensure with the fallback switch off, the same failure answers 503 (no stale copy, no traceback)."""
    from chassis.lab import resilience

    resilience.switches_reset()
    make_product("KB-001", stock=7)
    assert client.get(URL).status_code == 200
    resilience.switches_update(changes={"fallback": {"enabled": False}})
    _database_fails(monkeypatch)

    try:
        refused = client.get(URL)
    finally:
        resilience.switches_reset()

    assert refused.status_code == 503
    assert "stale" not in refused.json()


def test_the_list_parameters_named_in_the_view_are_the_query_serializers():
    """Ensure the view's shortcut (no list parameter sent: their defaults) knows every parameter the list takes."""
    from catalog.serializers import ProductListQuery
    from catalog.views import LIST_PARAMS

    assert set(LIST_PARAMS) == set(ProductListQuery().fields)
