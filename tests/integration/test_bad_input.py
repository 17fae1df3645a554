"""Input the order service lets through but inventory refuses is the client's mistake: a 400, not an outage."""

from __future__ import annotations

import uuid

import pytest


@pytest.mark.parametrize("sku", ["ab", "kb.001", "a_b_c"])
def test_a_sku_inventory_refuses_is_a_400_naming_the_lines(shopper, sku):
    """Ensure a sku of a shape inventory refuses is answered 400 on `lines`, with nothing saved."""
    response = shopper.api.session.post(
        shopper.api.url("order", "/api/orders/"),
        json={"lines": [{"sku": sku, "quantity": 1}], "payment_method": shopper.card},
        headers={"Idempotency-Key": f"it-bad-{uuid.uuid4().hex}"},
        timeout=30,
    )
    assert response.status_code == 400, response.text
    body = response.json()
    assert "lines" in body["fields"] and "refused" in body["fields"]["lines"][0], body
    assert shopper.api.get("order", "/api/orders/").json()["count"] == 0
