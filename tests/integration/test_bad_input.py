"""Every public write endpoint refuses bad input with a 400 that names the field, and writes nothing."""

import uuid

import pytest

LONG = "x" * 5000
NOT_JSON = object()  # marker: send a malformed JSON body


def _send(api, method, service, path, body, headers=None):
    headers = dict(headers or {})
    if body is NOT_JSON:
        headers["Content-Type"] = "application/json"
        return api.session.request(method, api.url(service, path), data='{"oops": ', headers=headers, timeout=30)
    return api.session.request(method, api.url(service, path), json=body, headers=headers, timeout=30)


def _assert_400(response, context):
    assert response.status_code == 400, (context, response.status_code, response.text[:300])
    body = response.json()
    assert body["code"] in ("invalid", "parse_error"), body
    assert body["message"] and body["request_id"]


def _counts(customer, admin):
    return {
        "users": admin.get("user", "/api/users/").json()["count"],
        "products": admin.get("inventory", "/api/products/", params={"include_inactive": 1}).json()["count"],
        "cards": customer.get("payment", "/api/payment-methods/").json()["count"],
        "orders": customer.get("order", "/api/orders/").json()["count"],
        "addresses": customer.get("user", "/api/users/me/addresses/").json()["count"],
    }


def _common(valid: dict) -> list:
    """Malformed JSON, wrong top-level shapes, then each field missing or of a wrong type."""
    cases = [NOT_JSON, [], "text", None, 12]
    for field, value in valid.items():
        cases.append({k: v for k, v in valid.items() if k != field})
        wrong = [None, [], {"a": 1}] + ([LONG] if isinstance(value, str) else ["abc", -1, 10**13, 1.5])
        cases.extend({**valid, field: w} for w in wrong)
    return cases


def test_user_service_write_endpoints(lab, anonymous, customer, admin):
    """Ensure register, login, refresh, logout, profile, password and addresses refuse bad input."""
    before = _counts(customer, admin)
    register = {"email": f"bad-{uuid.uuid4().hex[:6]}@lab.local", "password": "correct-horse-battery-9", "name": "Bad"}
    cases = [("post", "/api/auth/register/", b, anonymous) for b in _common(register)]
    cases += [
        ("post", "/api/auth/register/", {**register, "email": "not-an-email"}, anonymous),
        ("post", "/api/auth/register/", {**register, "password": "123"}, anonymous),
        ("post", "/api/auth/register/", {**register, "password": "password"}, anonymous),
        ("post", "/api/auth/register/", {**register, "email": customer.email}, anonymous),
    ]
    cases += [
        ("post", "/api/auth/login/", b, anonymous)
        for b in (NOT_JSON, [], {}, {"email": "a@b.c"}, {"email": [], "password": {}})
    ]
    cases += [("post", "/api/auth/refresh/", b, anonymous) for b in (NOT_JSON, {}, {"refresh": None}, {"refresh": []})]
    cases += [("post", "/api/auth/logout/", b, anonymous) for b in (NOT_JSON, {}, {"refresh": 5})]
    cases += [
        ("patch", "/api/users/me/", b, customer) for b in (NOT_JSON, {"name": LONG}, {"name": None}, {"name": []})
    ]
    cases += [
        ("post", "/api/users/me/password/", b, customer)
        for b in (
            NOT_JSON,
            {},
            {"old_password": customer.password},
            {"old_password": customer.password, "new_password": "1"},
        )
    ]
    address = {"label": "Home", "line1": "1 rue de la Paix", "city": "Paris", "postal_code": "75002", "country": "FR"}
    cases += [("post", "/api/users/me/addresses/", b, customer) for b in _common(address)]
    cases += [("post", "/api/users/me/addresses/", {**address, "country": "XX"}, customer)]
    for method, path, body, who in cases:
        _assert_400(_send(who, method, "user", path, body), (path, body if body is not NOT_JSON else "not json"))
    assert _counts(customer, admin) == before


def test_inventory_write_endpoints(admin, customer):
    """Ensure product creation, update and restock refuse bad input."""
    before = _counts(customer, admin)
    create = {
        "sku": f"BAD-{uuid.uuid4().hex[:6].upper()}",
        "name": "Bad",
        "description": "d",
        "price_cents": 100,
        "currency": "EUR",
        "initial_stock": 1,
    }
    cases = [
        ("post", "/api/products/", b) for b in _common(create) if not (isinstance(b, dict) and "description" not in b)
    ]
    cases += [
        ("post", "/api/products/", {**create, "sku": "has spaces"}),
        ("post", "/api/products/", {**create, "price_cents": -5}),
        ("post", "/api/products/", {**create, "initial_stock": -1}),
        ("post", "/api/products/", {**create, "currency": "EURO"}),
        ("post", "/api/products/", {**create, "sku": "KB-001"}),
    ]
    sku = admin.get("inventory", "/api/products/").json()["results"][0]["sku"]
    cases += [
        ("patch", f"/api/products/{sku}/", b)
        for b in (NOT_JSON, {"price_cents": -1}, {"name": LONG}, {"active": "maybe"})
    ]
    cases += [
        ("post", f"/api/products/{sku}/restock/", b)
        for b in (NOT_JSON, {}, {"quantity": 0}, {"quantity": -3}, {"quantity": 10**12}, {"quantity": "lots"})
    ]
    stock_before = admin.get("inventory", f"/api/products/{sku}/").json()
    for method, path, body in cases:
        _assert_400(_send(admin, method, "inventory", path, body), (path, body if body is not NOT_JSON else "not json"))
    assert admin.get("inventory", f"/api/products/{sku}/").json() == stock_before
    assert _counts(customer, admin) == before


@pytest.mark.parametrize(
    "card",
    [
        {"card_number": "4242424242424241", "exp_month": 12, "exp_year": 2035, "cvc": "123"},  # Luhn fails
        {"card_number": "4242", "exp_month": 12, "exp_year": 2035, "cvc": "123"},
        {"card_number": "4242424242424242", "exp_month": 13, "exp_year": 2035, "cvc": "123"},
        {"card_number": "4242424242424242", "exp_month": 1, "exp_year": 2001, "cvc": "123"},
        {"card_number": "4242424242424242", "exp_month": 12, "exp_year": 2035, "cvc": "12"},
        {"card_number": "4242abcd42424242", "exp_month": 12, "exp_year": 2035, "cvc": "123"},
        {"card_number": "4" * 40, "exp_month": 12, "exp_year": 2035, "cvc": "123"},
        {"exp_month": 12, "exp_year": 2035, "cvc": "123"},
        NOT_JSON,
    ],
)
def test_invalid_cards_are_refused_without_echoing_the_number(customer, admin, card):
    """Ensure invalid cards are a 400 that never repeats the card number, and no method is stored."""
    before = _counts(customer, admin)
    response = _send(customer, "post", "payment", "/api/payment-methods/", card)
    _assert_400(response, card if card is not NOT_JSON else "not json")
    if isinstance(card, dict) and card.get("card_number"):
        assert card["card_number"] not in response.text
    assert _counts(customer, admin) == before


def test_order_write_endpoints(customer, admin, product):
    """Ensure order creation and modification refuse bad input and create no order."""
    sku, card = product(stock=5), customer.add_card()
    before = _counts(customer, admin)
    valid = {"lines": [{"sku": sku, "quantity": 1}], "payment_method": card}
    bodies = [
        NOT_JSON,
        [],
        {},
        {"lines": []},
        {"lines": None, "payment_method": card},
        {"lines": [{"sku": sku}], "payment_method": card},
        {"lines": "KB-001", "payment_method": card},
        {"lines": [{"sku": "NOPE-404", "quantity": 1}], "payment_method": card},
        {"lines": [{"sku": LONG, "quantity": 1}], "payment_method": card},
        {**valid, "payment_method": LONG},
        {**valid, "payment_method": None},
        {"lines": [{"sku": sku, "quantity": 1}] * 51, "payment_method": card},
    ]
    bodies += [
        {"lines": [{"sku": sku, "quantity": q}], "payment_method": card} for q in (0, -1, 10**9, "abc", 1.5, None)
    ]
    for body in bodies:
        _assert_400(
            _send(customer, "post", "order", "/api/orders/", body, {"Idempotency-Key": f"bad-{uuid.uuid4().hex}"}),
            body if body is not NOT_JSON else "not json",
        )
    missing_key = _send(customer, "post", "order", "/api/orders/", valid)
    _assert_400(missing_key, "no Idempotency-Key")
    assert "Idempotency-Key" in missing_key.json()["fields"]
    assert _counts(customer, admin) == before

    draft = customer.order(valid["lines"], card, checkout=False)
    assert draft.status_code == 201 and draft.json()["status"] == "PENDING", draft.text
    path = f"/api/orders/{draft.json()['id']}/"
    for body in (
        NOT_JSON,
        {"lines": []},
        {"lines": [{"sku": sku, "quantity": 0}]},
        {"lines": [{"sku": "NOPE-404", "quantity": 1}]},
    ):
        _assert_400(_send(customer, "patch", "order", path, body), body if body is not NOT_JSON else "not json")
    assert customer.get("order", path).json()["lines"][0]["quantity"] == 1


def test_unknown_routes_and_methods_answer_json_everywhere(lab, anonymous):
    """Ensure no service answers HTML or 500 to a wrong URL or method."""
    for service in lab.urls:
        response = anonymous.get(service, "/definitely/not/here/")
        assert response.status_code == 404 and response.json()["code"] == "not_found"
        health = anonymous.session.delete(anonymous.url(service, "/health/"), timeout=10)
        assert health.status_code == 405, (service, health.status_code)
