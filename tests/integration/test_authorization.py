"""Who may call what, checked over HTTP against the real services."""

import base64
import json
import time

import pytest

from .conftest import stock_of


def _b64(data) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_reading_another_users_order_is_404(new_customer, product):
    """Ensure a customer cannot see, cancel or modify someone else's order."""
    alice, mallory = new_customer("A"), new_customer("M")
    order = alice.order([{"sku": product(stock=3), "quantity": 1}], alice.add_card()).json()
    assert mallory.get("order", f"/api/orders/{order['id']}/").status_code == 404
    assert mallory.post("order", f"/api/orders/{order['id']}/cancel/").status_code == 404
    assert order["id"] not in [o["id"] for o in mallory.get("order", "/api/orders/").json()["results"]]


def test_another_users_payment_method_cannot_be_used(new_customer, product, anonymous):
    """Ensure an order paid with someone else's card token ends CANCELLED, charges nobody and holds no stock.

    order_service checks only the token's form; payment checks whose it is when
    the saga charges (docs/contracts.md: a 400 on ``payment_method``), so the
    order is created (201), its reservation released, and it ends CANCELLED.
    """
    alice, mallory = new_customer("A"), new_customer("M")
    card = alice.add_card()
    sku = product(stock=3)
    response = mallory.order([{"sku": sku, "quantity": 1}], card)
    assert response.status_code == 201, response.text
    order = response.json()
    assert order["status"] == "CANCELLED", order
    assert order["status_reason"].startswith("Payment refused"), order["status_reason"]
    assert "payment method" in order["status_reason"].lower(), order["status_reason"]
    stock = stock_of(anonymous, sku)
    assert (stock["available"], stock["reserved"], stock["sold"]) == (3, 0, 0), stock
    assert alice.get("payment", "/api/payments/").json()["count"] == 0
    assert mallory.get("payment", "/api/payments/").json()["count"] == 0


@pytest.mark.parametrize(
    "service,path",
    [
        ("inventory", "/internal/reservations/"),
        ("payment", "/internal/charges/"),
    ],
)
def test_user_token_at_internal_endpoint_is_403(customer, service, path):
    """Ensure a customer cannot call the endpoints reserved for order_service."""
    response = customer.post(service, path, json={}, headers={"Idempotency-Key": "attack-123456"})
    assert response.status_code == 403


def test_staff_token_at_internal_endpoint_is_403(admin):
    """Ensure even staff users cannot impersonate order_service."""
    assert (
        admin.post("payment", "/internal/charges/", json={}, headers={"Idempotency-Key": "attack-123456"}).status_code
        == 403
    )


def test_internal_endpoint_without_token_is_401(anonymous):
    """Ensure an anonymous call to an internal endpoint is refused."""
    assert anonymous.post("inventory", "/internal/reservations/", json={}).status_code == 401


def test_expired_and_tampered_tokens_are_401(customer):
    """Ensure an expired token and one with an edited payload are refused by every service."""
    header, payload, signature = customer.token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    tampered = f"{header}.{_b64({**claims, 'staff': True})}.{signature}"
    unsigned = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64({**claims, 'staff': True})}."
    for token in (tampered, unsigned):
        for service, path in (("user", "/api/users/me/"), ("order", "/api/orders/"), ("payment", "/api/payments/")):
            response = customer.session.get(customer.url(service, path), headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == 401, (service, response.text)
    expired = {**claims, "exp": int(time.time()) - 3600}
    response = customer.session.get(
        customer.url("order", "/api/orders/"), headers={"Authorization": f"Bearer {header}.{_b64(expired)}.{signature}"}
    )
    assert response.status_code == 401


def test_customer_cannot_use_staff_endpoints(customer):
    """Ensure staff-only endpoints refuse customers."""
    assert customer.get("user", "/api/users/").status_code == 403
    assert customer.post("inventory", "/api/products/", json={"sku": "NOPE-1"}).status_code == 403
    assert customer.get("payment", "/api/ledger/").status_code == 403


def test_logout_revokes_the_refresh_token(lab, customer):
    """Ensure a refresh token stops working once logged out."""
    import requests

    tokens = requests.post(
        f"{lab.urls['user']}/api/auth/login/", json={"email": customer.email, "password": customer.password}, timeout=10
    ).json()
    assert (
        requests.post(
            f"{lab.urls['user']}/api/auth/logout/", json={"refresh": tokens["refresh"]}, timeout=10
        ).status_code
        == 204
    )
    again = requests.post(f"{lab.urls['user']}/api/auth/refresh/", json={"refresh": tokens["refresh"]}, timeout=10)
    assert again.status_code == 401


def test_logged_in_users_keep_ordering_without_user_service(lab, customer, product):
    """Ensure tokens are verified locally: other services need no call to user_service."""
    sku, card = product(stock=3), customer.add_card()
    lab.freeze("user")
    try:
        response = customer.order([{"sku": sku, "quantity": 1}], card)
        assert response.status_code == 201 and response.json()["status"] == "CONFIRMED"
        assert customer.get("payment", "/api/payments/").status_code == 200
    finally:
        lab.thaw("user")


def _refused_soon(api, service: str, path: str) -> int:
    """The status a service answers once its copy of the revocations is fresh (read again within a second)."""
    status = api.get(service, path).status_code
    for _ in range(50):  # at most 5 s: bounded, generous beside the 0.5 s refresh
        if status == 401:
            break
        time.sleep(0.1)
        status = api.get(service, path).status_code
    return status


def test_logout_and_password_change_revoke_access_tokens_in_other_services(lab, new_customer):
    """Ensure an access token is refused by order and payment after logout, and after a password change."""
    import requests

    from .conftest import Api

    customer = new_customer("Revoked")

    def log_in(password: str) -> tuple[Api, dict]:
        answer = requests.post(
            f"{lab.urls['user']}/api/auth/login/", json={"email": customer.email, "password": password}, timeout=30
        )
        assert answer.status_code == 200, answer.text
        return Api(lab, answer.json()["access"]), answer.json()

    session, pair = log_in(customer.password)
    assert session.get("order", "/api/orders/").status_code == 200
    logout = requests.post(f"{lab.urls['user']}/api/auth/logout/", json={"refresh": pair["refresh"]}, timeout=30)
    assert logout.status_code == 204, logout.text
    assert _refused_soon(session, "order", "/api/orders/") == 401

    other, _ = log_in(customer.password)
    assert other.get("payment", "/api/payments/").status_code == 200
    changed = other.post(
        "user", "/api/users/me/password/", json={"old_password": customer.password, "new_password": "a-new-pass-77x"}
    )
    assert changed.status_code == 204, changed.text
    assert _refused_soon(other, "payment", "/api/payments/") == 401
    assert _refused_soon(other, "order", "/api/orders/") == 401

    fresh, _ = log_in("a-new-pass-77x")
    assert fresh.get("order", "/api/orders/").status_code == 200
