"""Forwarded headers do not steer the URLs a service builds, unless the operator names a proxy."""

from __future__ import annotations

import uuid

import pytest


@pytest.mark.parametrize(
    "header",
    [
        {"X-Forwarded-Proto": "https"},
        {"X-Forwarded-Host": "evil.example"},
        {"Forwarded": "host=evil.example;proto=https"},
        {"X-Forwarded-Ssl": "on", "X-Forwarded-Protocol": "ssl"},
    ],
)
def test_an_orders_location_ignores_forwarded_headers(lab, shopper, header):
    """Ensure the Location of a new order names the service as it was reached, whatever forwarded headers say."""
    response = shopper.api.session.post(
        shopper.api.url("order", "/api/orders/"),
        json={"lines": [{"sku": shopper.sku, "quantity": 1}], "payment_method": shopper.card, "checkout": False},
        headers={"Idempotency-Key": f"it-fwd-{uuid.uuid4().hex}", **header},
        timeout=30,
    )
    assert response.status_code == 201, response.text
    assert response.headers["Location"] == f"{lab.urls['order']}/api/orders/{response.json()['id']}/"
