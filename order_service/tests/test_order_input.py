"""Bad input to the write endpoints: always a 400 in the chassis format, never a 500, nothing written."""

import pytest

from orders.models import Order, OrderEvent
from tests.conftest import new_key, order_body, place

pytestmark = pytest.mark.django_db

LINE = {"sku": "KB-001", "quantity": 1}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"payment_method": "pm_visa_4242"}, "lines"),
        (order_body(lines=[]), "lines"),
        (order_body(lines="KB-001"), "lines"),
        (order_body(lines={"sku": "KB-001"}), "lines"),
        (order_body(lines=[1, 2]), "lines"),
        (order_body(lines=[{"sku": "KB-001"}]), "lines"),
        (order_body(lines=[{"quantity": 1}]), "lines"),
        (order_body(lines=[{"sku": "KB-001", "quantity": 0}]), "lines"),
        (order_body(lines=[{"sku": "KB-001", "quantity": -1}]), "lines"),
        (order_body(lines=[{"sku": "KB-001", "quantity": 10**9}]), "lines"),
        (order_body(lines=[{"sku": "KB-001", "quantity": "abc"}]), "lines"),
        (order_body(lines=[{"sku": "KB-001", "quantity": 1.5}]), "lines"),
        (order_body(lines=[{"sku": "KB-001", "quantity": True}]), "lines"),
        (order_body(lines=[{"sku": "KB-001", "quantity": None}]), "lines"),
        (order_body(lines=[{"sku": "X" * 33, "quantity": 1}]), "lines"),
        (order_body(lines=[{"sku": "", "quantity": 1}]), "lines"),
        (order_body(lines=[{"sku": "KB,001", "quantity": 1}]), "lines"),
        (order_body(lines=[{"sku": ["KB-001"], "quantity": 1}]), "lines"),
        (order_body(lines=[LINE, LINE]), "lines"),
        (order_body(lines=[{"sku": f"SKU-{i}", "quantity": 1} for i in range(51)]), "lines"),
        (order_body(payment_method=None), "payment_method"),
        (order_body(payment_method="visa"), "payment_method"),
        (order_body(payment_method="pm_" + "x" * 62), "payment_method"),
        (order_body(payment_method=4242), "payment_method"),
        ({"lines": [LINE]}, "payment_method"),
        (order_body(checkout="maybe"), "checkout"),
        (order_body(shipping_address="1 Lab Street"), "shipping_address"),
        (order_body(shipping_address={"line1": "1 Lab Street"}), "shipping_address"),
        (
            order_body(
                shipping_address={"name": "A", "line1": "x" * 201, "city": "P", "postal_code": "1", "country": "FR"}
            ),
            "shipping_address",
        ),
        (
            order_body(
                shipping_address={"name": "A\x00", "line1": "1", "city": "P", "postal_code": "1", "country": "FR"}
            ),
            "shipping_address",
        ),
    ],
)
def test_invalid_bodies_are_refused_with_field_messages(alice, fake_inventory, body, field):
    """Ensure each malformed body answers 400 invalid naming the field, and writes no order."""
    response = place(alice, body)

    assert response.status_code == 400, response.data
    assert response.data["code"] == "invalid"
    assert field in response.data["fields"]
    assert response.data["request_id"]
    assert Order.objects.count() == 0
    assert fake_inventory.calls == []


DEEP = '{"lines": ' + "[" * 50000 + "]" * 50000 + "}"


@pytest.mark.parametrize("raw", ['{"lines": [', "not json at all", "[1, 2, 3]", '"a string"', "null", "", DEEP])
def test_malformed_json_is_a_400(alice, raw):
    """Ensure bodies that are not a JSON object answer 400 and write nothing."""
    response = alice.post("/api/orders/", raw, content_type="application/json", HTTP_IDEMPOTENCY_KEY=new_key())

    assert response.status_code == 400
    assert response.data["code"] in ("parse_error", "invalid")
    assert Order.objects.count() == 0


def test_form_encoded_body_is_refused(alice):
    """Ensure a non-JSON body answers 400, not a 500."""
    response = alice.post("/api/orders/", {"lines": "KB-001"}, HTTP_IDEMPOTENCY_KEY=new_key())

    assert response.status_code == 400
    assert Order.objects.count() == 0


def test_unsupported_media_type_is_a_415(alice):
    """Ensure a text/plain body answers 415 in the error format."""
    response = alice.post("/api/orders/", "hello", content_type="text/plain", HTTP_IDEMPOTENCY_KEY=new_key())

    assert response.status_code == 415
    assert response.data["code"] == "unsupported_media_type"


@pytest.mark.parametrize("key", [None, "", "short", "has spaces in it", "k" * 129, "clé-accentuée-1"])
def test_missing_or_malformed_idempotency_key_is_a_400(alice, key):
    """Ensure an order without a well-formed Idempotency-Key answers 400 and writes nothing."""
    headers = {} if key is None else {"HTTP_IDEMPOTENCY_KEY": key}
    response = alice.post("/api/orders/", order_body(), format="json", **headers)

    assert response.status_code == 400
    assert "Idempotency-Key" in response.data["fields"]
    assert Order.objects.count() == 0


def test_patch_with_bad_input_changes_nothing(alice):
    """Ensure a PATCH with invalid lines answers 400 and leaves the draft and its timeline as they were."""
    draft = place(alice, order_body(checkout=False)).data
    events_before = OrderEvent.objects.count()

    for body in ({}, {"lines": []}, {"lines": [{"sku": "KB-001", "quantity": 0}]}, {"shipping_address": "x"}):
        response = alice.patch(f"/api/orders/{draft['id']}/", body, format="json")
        assert response.status_code == 400, body

    assert alice.get(f"/api/orders/{draft['id']}/").data["lines"] == draft["lines"]
    assert OrderEvent.objects.count() == events_before


@pytest.mark.parametrize("path", ["/api/orders/abc/", "/api/orders/99999999999999999999999/", "/api/orders/0/cancel/"])
def test_odd_order_ids_are_404(alice, path):
    """Ensure ids that are not orders answer 404 in the error format, whatever they look like."""
    response = alice.get(path) if "cancel" not in path else alice.post(path)

    assert response.status_code == 404
    assert response.json()["code"] in ("not_found",)


def test_list_filters_are_validated(alice, admin):
    """Ensure bad list filters answer 400 instead of a 500 or being silently ignored."""
    assert admin.get("/api/orders/?customer_id=abc").status_code == 400
    assert admin.get("/api/orders/?customer_id=99999999999999999999").status_code == 400
    assert alice.get("/api/orders/?status=LOST").status_code == 400
    assert alice.get("/api/orders/?page=abc").status_code == 400


def test_a_lookup_inventory_refuses_is_a_400_not_an_outage(alice, monkeypatch):
    """Ensure inventory's 400 on a draft's product lookup (the client's skus) is a 400 on `lines`, nothing saved."""
    from orders.clients import PeerRefused, inventory
    from orders.models import Order

    def refused(**kwargs):
        raise PeerRefused("inventory", 400, "invalid", "sku: Use 3 to 32 characters among A-Z, 0-9 and '-'.")

    monkeypatch.setattr(inventory, "inventory_products_lookup", refused)
    response = alice.post(
        "/api/orders/",
        {"lines": [{"sku": "ab", "quantity": 1}], "payment_method": "pm_visa_4242", "checkout": False},
        format="json",
        HTTP_IDEMPOTENCY_KEY="refused-lookup-01",
    )
    assert response.status_code == 400, response.data
    assert "refused these skus" in response.json()["fields"]["lines"][0]
    assert Order.objects.count() == 0


def test_lines_the_reservation_refuses_are_a_400_not_a_cancelled_order(alice, monkeypatch):
    """Ensure inventory's 400 on a checkout's reservation (the client's lines) is a 400 on `lines`, nothing saved."""
    from orders.clients import PeerRefused, inventory
    from orders.models import Order

    def refused(**kwargs):
        invalid = PeerRefused("inventory", 400, "invalid", "Invalid input.", {"lines": [{"sku": ["Use 3 to 32."]}]})
        raise inventory.LinesRefused(invalid, ["The inventory service refused these lines: Invalid input."])

    monkeypatch.setattr(inventory, "inventory_reserve", refused)
    response = alice.post(
        "/api/orders/",
        {"lines": [{"sku": "ab", "quantity": 1}], "payment_method": "pm_visa_4242"},
        format="json",
        HTTP_IDEMPOTENCY_KEY="refused-reserve-01",
    )
    assert response.status_code == 400, response.data
    assert response.json()["fields"]["lines"] == ["The inventory service refused these lines: Invalid input."]
    assert Order.objects.count() == 0


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("name", "Alice\u202eevil", "control characters"),  # a bidi override
        ("city", "Paris\u0007", "control characters"),
        ("line1", 12, "Must be a string"),
        ("country", "Narnia", "country code"),
        ("country", "ZZ", "country code"),
    ],
)
def test_a_shipping_address_is_validated_as_saved_addresses_are(alice, field, value, words):
    """Ensure the order's shipping address refuses what user_service refuses in an address, saving nothing."""
    address = {"name": "Alice", "line1": "1 rue X", "city": "Paris", "postal_code": "75001", "country": "FR"}
    response = place(alice, order_body(shipping_address={**address, field: value}))
    assert response.status_code == 400, response.data
    assert words in str(response.json()["fields"]), response.json()
    assert Order.objects.count() == 0


def test_a_shipping_address_country_is_stored_in_upper_case(alice):
    """Ensure a valid lower-case country code is accepted and kept as ISO writes it."""
    address = {"name": "Alice", "line1": "1 rue X", "city": "Paris", "postal_code": "75001", "country": "fr"}
    response = place(alice, order_body(shipping_address=address, checkout=False))
    assert response.status_code == 201, response.data
    assert Order.objects.get().shipping_address["country"] == "FR"
