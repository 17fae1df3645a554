"""Limits one customer meets: writes per second (429) and units per line and per order (400)."""

import pytest

from orders.models import Order
from tests.conftest import client_for, order_body, place

pytestmark = pytest.mark.django_db

# A customer of these tests alone: the write counts are per user, and other tests write as alice.
GREEDY = 4242


def test_writes_beyond_the_per_user_rate_are_429_with_retry_after(settings, fake_inventory, fake_payment):
    """Ensure a user's writes beyond WRITE_RATE_PER_USER answer 429 with Retry-After, and nothing is written."""
    settings.CHASSIS = {**settings.CHASSIS, "WRITE_RATE_PER_USER": "3/min"}
    greedy = client_for(GREEDY)

    answers = [place(greedy, order_body(checkout=False)).status_code for _ in range(5)]

    assert answers == [201, 201, 201, 429, 429]
    assert Order.objects.filter(customer_id=GREEDY).count() == 3
    refused = place(greedy, order_body(checkout=False))
    assert refused.status_code == 429
    assert refused.json()["code"] == "throttled"
    assert "too many writes from this account" in refused.json()["message"].lower()
    assert 0 < int(refused["Retry-After"]) <= 60


def test_the_write_rate_counts_each_user_apart_and_not_reads(settings, fake_inventory, fake_payment):
    """Ensure another customer still writes, and the throttled one still reads, once one is throttled."""
    settings.CHASSIS = {**settings.CHASSIS, "WRITE_RATE_PER_USER": "2/min"}
    greedy, other = client_for(GREEDY + 1), client_for(GREEDY + 2)
    assert [place(greedy, order_body(checkout=False)).status_code for _ in range(3)] == [201, 201, 429]

    assert place(other, order_body(checkout=False)).status_code == 201
    assert [greedy.get("/api/orders/").status_code for _ in range(5)] == [200] * 5


def test_calls_between_services_are_never_throttled(settings, fake_inventory, fake_payment):
    """Ensure a service token's writes are not counted: a saga must not be refused half-way."""
    from chassis.throttling import UserWriteThrottle

    settings.CHASSIS = {**settings.CHASSIS, "WRITE_RATE_PER_USER": "1/min"}

    class Request:
        method = "POST"

        class user:
            is_authenticated = True
            is_service = True
            id = None

    assert UserWriteThrottle().get_cache_key(Request(), None) is None


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([{"sku": "KB-001", "quantity": 11}], "At most 10 units of one product per order."),
        (
            [{"sku": f"SKU-{i}", "quantity": 10} for i in range(6)],
            "An order holds at most 50 units in all; these lines add up to 60.",
        ),
    ],
)
def test_too_many_units_is_a_400_naming_lines(alice, fake_inventory, fake_payment, lines, message):
    """Ensure a line above 10 units, or an order above 50 units, is a 400 on lines, and nothing is written."""
    response = place(alice, order_body(lines=lines))

    assert response.status_code == 400
    assert message in str(response.json()["fields"]["lines"])
    assert Order.objects.count() == 0
    assert fake_inventory.calls_to("reserve") == []


def test_a_draft_cannot_grow_beyond_the_caps(alice, fake_inventory, fake_payment):
    """Ensure modifying a draft meets the same per-line cap."""
    draft = place(alice, order_body(checkout=False)).json()

    response = alice.patch(
        f"/api/orders/{draft['id']}/", {"lines": [{"sku": "KB-001", "quantity": 1000}]}, format="json"
    )

    assert response.status_code == 400
    assert "lines" in response.json()["fields"]


def test_the_schema_lists_the_429_of_every_user_write(client):
    """Ensure the OpenAPI schema declares the write limit's 429 on the customer's writes."""
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()

    assert "429" in schema["paths"]["/api/orders/"]["post"]["responses"]
    assert "429" in schema["paths"]["/api/orders/{order_id}/"]["patch"]["responses"]
    assert "429" not in schema["paths"]["/api/orders/"]["get"]["responses"]
    quantity = schema["components"]["schemas"]["OrderLineInputRequest"]["properties"]["quantity"]
    assert quantity["maximum"] == 10
