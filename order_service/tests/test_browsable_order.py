"""Placing an order from the browsable API, logged in by its cookie (chassis.browsable)."""

import json
import re

import pytest
from rest_framework.test import APIClient

from chassis.browsable import COOKIE
from chassis.testing import user_token
from orders.models import Order
from tests.conftest import ALICE, order_body

pytestmark = pytest.mark.django_db


def _browser() -> tuple[APIClient, str, str]:
    """A client logged in by the browsable cookie (CSRF enforced), after loading the orders page.

    Returns the client, the page's CSRF token and the idempotency key the page generated.
    """
    client = APIClient(enforce_csrf_checks=True)
    client.cookies[COOKIE] = user_token(user_id=ALICE, email="alice@lab.local", name="Alice")
    page = client.get("/api/orders/", HTTP_ACCEPT="text/html")
    assert page.status_code == 200
    html = page.content.decode()
    csrf = json.loads(re.search(r'<script type="application/json" id="drf_csrf">(.*?)</script>', html, re.S)[1])
    key = re.search(r"<code>([0-9a-f-]{36})</code>", html)[1]
    assert f"&quot;idempotency_key&quot;: &quot;{key}&quot;" in html  # the same key, in the raw-data form
    return client, csrf["csrfToken"], key


def _post_from_page(client: APIClient, csrf: str, body: dict):
    """What the raw-data form's POST sends: JSON, Accept text/html, the CSRF header, no Idempotency-Key."""
    return client.post(
        "/api/orders/",
        json.dumps(body),
        content_type="application/json",
        HTTP_ACCEPT="text/html; q=1.0, */*",
        HTTP_X_CSRFTOKEN=csrf,
    )


def test_the_orders_page_offers_a_generated_key_and_a_prefilled_form():
    """Ensure the logged-in page shows the user, a fresh key per load and the example body with a seeded sku."""
    client, _csrf, key = _browser()
    html = client.get("/api/orders/", HTTP_ACCEPT="text/html").content.decode()

    assert "alice@lab.local" in html and "Log out" in html
    assert "KB-001" in html and "paste your card token" in html
    assert key not in html  # reloading generates a new key


def test_a_form_post_with_the_key_in_the_body_places_the_order_once(fake_payment):
    """Ensure the form's body key places the order (201) and sending it again replays it (200, same order)."""
    client, csrf, key = _browser()
    body = {"idempotency_key": key, **order_body()}

    first = _post_from_page(client, csrf, body)
    again = _post_from_page(client, csrf, body)

    assert first.status_code == 201, first.content[:2000]
    assert first["Content-Type"].startswith("text/html")
    assert first.data["status"] == "CONFIRMED" and first.data["customer_id"] == ALICE
    assert again.status_code == 200 and again["Idempotent-Replayed"] == "true"
    assert again.data["id"] == first.data["id"]
    assert Order.objects.get().idempotency_key == key
    assert len(fake_payment.captured()) == 1


def test_a_form_post_without_any_key_is_a_400_naming_the_field():
    """Ensure a form body without idempotency_key answers 400 on that field and writes nothing."""
    client, csrf, _key = _browser()

    response = _post_from_page(client, csrf, order_body())

    assert response.status_code == 400
    assert "idempotency_key" in response.data["fields"]
    assert Order.objects.count() == 0


def test_a_json_post_with_the_key_only_in_the_body_is_still_a_400(alice):
    """Ensure an API client (Bearer, JSON) must send the header: a body key is not taken, nothing is written."""
    response = alice.post("/api/orders/", {"idempotency_key": "a-body-key-0001", **order_body()}, format="json")

    assert response.status_code == 400
    assert "Idempotency-Key" in response.data["fields"]
    assert Order.objects.count() == 0


def test_the_cookie_alone_does_not_authenticate_a_json_post():
    """Ensure a JSON call carrying the login cookie (and a valid CSRF token) is anonymous: 401, nothing written."""
    client, csrf, key = _browser()

    response = client.post(
        "/api/orders/",
        json.dumps({"idempotency_key": key, **order_body()}),
        content_type="application/json",
        HTTP_ACCEPT="application/json",
        HTTP_X_CSRFTOKEN=csrf,
        HTTP_IDEMPOTENCY_KEY=key,
    )

    assert response.status_code == 401
    assert Order.objects.count() == 0
