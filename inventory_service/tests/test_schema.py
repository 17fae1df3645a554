"""The OpenAPI schema and the browsable API of this service's own endpoints."""

import json

import pytest
from django.urls import include, path
from drf_spectacular.drainage import GENERATOR_STATS
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.validation import validate_schema

from catalog.serializers import SKU_LIST_PATTERN

pytestmark = pytest.mark.django_db

OWN_ROUTES = [path("api/", include("catalog.urls")), path("internal/", include("catalog.internal_urls"))]


def test_schema_of_the_catalog_generates_without_warnings():
    """Ensure drf-spectacular describes every catalog endpoint without a warning and the result is valid OpenAPI 3."""
    GENERATOR_STATS.reset()

    schema = SchemaGenerator(patterns=OWN_ROUTES).get_schema(request=None, public=True)

    validate_schema(schema)
    assert not GENERATOR_STATS._warn_cache and not GENERATOR_STATS._error_cache, dict(GENERATOR_STATS._warn_cache)
    assert set(schema["paths"]) == {
        "/api/products/",
        "/api/products/{sku}/",
        "/api/products/{sku}/restock/",
        "/api/products/{sku}/movements/",
        "/internal/reservations/",
        "/internal/reservations/{reservation_id}/",
        "/internal/reservations/{reservation_id}/commit/",
        "/internal/reservations/{reservation_id}/release/",
        "/internal/reservations/expire/",
        "/internal/reconciliation/stock/",
        "/internal/reconciliation/reservations/",
    }
    listed = schema["paths"]["/api/products/"]["get"]
    assert {p["name"] for p in listed["parameters"]} >= {"search", "sku", "include_inactive", "page", "page_size"}
    assert listed["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "PaginatedProductListOutputList"
    )


def test_schema_endpoint_answers(client):
    """Ensure GET /api/schema/ serves the schema."""
    response = client.get("/api/schema/", HTTP_ACCEPT="application/json")

    assert response.status_code == 200
    assert "/internal/reservations/" in json.loads(response.content)["paths"]


def test_browsable_api_offers_staff_a_prefilled_form(client, staff, make_product):
    """Ensure a staff member browsing a product gets an HTML page with the PATCH form filled with its values."""
    make_product("KB-001", name="Tenkeyless keyboard")

    response = client.get("/api/products/KB-001/", HTTP_ACCEPT="text/html", **staff)

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    page = response.content.decode()
    assert "PATCH" in page and "Tenkeyless keyboard" in page


def test_schema_says_what_a_sku_lookup_and_a_reservation_line_accept(client, make_product):
    """Ensure the sku list's and a reservation line's patterns are in the schema, and the list's holds as validated."""
    schema = json.loads(client.get("/api/schema/", HTTP_ACCEPT="application/json").content)
    sku = next(p for p in schema["paths"]["/api/products/"]["get"]["parameters"] if p["name"] == "sku")
    line = schema["components"]["schemas"]["ReservationLineInputRequest"]["properties"]["sku"]
    lines = schema["components"]["schemas"]["ReservationCreateInputRequest"]["properties"]["lines"]
    assert sku["schema"]["oneOf"][0]["pattern"] == SKU_LIST_PATTERN  # or blank: no filter
    assert line["pattern"] == "^[A-Za-z0-9-]{3,32}$"
    assert lines["minItems"] == 1 and lines["maxItems"] >= 1
    make_product("KB-001")

    found = client.get("/api/products/", {"sku": " kb-001 ,, KB-404"}).json()["results"]
    refused = client.get("/api/products/", {"sku": "KB-001;KB-002"})

    assert [p["sku"] for p in found] == ["KB-001"]
    assert refused.status_code == 400 and "sku" in refused.json()["fields"]
