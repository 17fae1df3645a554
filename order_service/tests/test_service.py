"""The service around the API: seed_lab, health, the OpenAPI schema, Swagger UI."""

import pytest
from django.core.management import call_command

from orders.models import Order, OrderEvent
from tests.conftest import ALICE, make_order

pytestmark = pytest.mark.django_db


def test_seed_lab_is_idempotent_and_says_what_it_did(capsys):
    """Ensure seed_lab prints one line, and running it twice changes nothing."""
    make_order(customer_id=ALICE)
    before = (Order.objects.count(), OrderEvent.objects.count())

    call_command("seed_lab")
    call_command("seed_lab")

    lines = capsys.readouterr().out.strip().splitlines()
    assert lines == [lines[0], lines[0]]
    assert lines[0].startswith("order: nothing to seed") and "1 order(s)" in lines[0]
    assert (Order.objects.count(), OrderEvent.objects.count()) == before


def test_health_reports_database_and_cache(client):
    """Ensure /health/ answers 200 with the database and cache checks."""
    response = client.get("/health/")

    assert response.status_code == 200
    body = response.json()
    assert body["service"] == "order"
    assert body["checks"]["database"]["status"] == "ok"


def test_schema_describes_every_order_route(client):
    """Ensure the OpenAPI schema lists the order routes and the Idempotency-Key header."""
    response = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")

    assert response.status_code == 200
    schema = response.json()
    for path in (
        "/api/orders/",
        "/api/orders/{order_id}/",
        "/api/orders/{order_id}/checkout/",
        "/api/orders/{order_id}/cancel/",
        "/internal/reconciliation/orders/",
    ):
        assert path in schema["paths"], path
    create = schema["paths"]["/api/orders/"]["post"]
    assert any(p["name"] == "Idempotency-Key" and p["in"] == "header" for p in create["parameters"])
    assert {"200", "201", "202", "400", "409", "503"} <= set(create["responses"])


def test_swagger_ui_is_served(client):
    """Ensure /api/docs/ serves the Swagger UI page."""
    response = client.get("/api/docs/")

    assert response.status_code == 200
    assert b"swagger" in response.content.lower()
