"""Fixtures of the payment service's tests: real signed tokens and ready-made cards and charges."""

from __future__ import annotations

import itertools
import json
from datetime import date

import pytest

from chassis.testing import bearer, service_token, user_token
from payments import services

ALICE = 101
BOB = 102
STAFF = 900

APPROVE_CARD = "4242424242424242"
DECLINE_CARD = "4000000000000002"
INSUFFICIENT_CARD = "4000000000009995"
AMEX_CARD = "378282246310005"
MASTERCARD_CARD = "5555555555554444"
NEXT_YEAR = date.today().year + 1

_keys = itertools.count(1)


def new_key(prefix: str = "key") -> str:
    return f"{prefix}-{next(_keys):06d}-test"


@pytest.fixture
def alice_auth() -> dict:
    return bearer(user_token(user_id=ALICE, email="alice@lab.local", name="Alice"))


@pytest.fixture
def bob_auth() -> dict:
    return bearer(user_token(user_id=BOB, email="bob@lab.local", name="Bob"))


@pytest.fixture
def staff_auth() -> dict:
    return bearer(user_token(user_id=STAFF, email="admin@lab.local", name="Admin", staff=True))


@pytest.fixture
def order_auth() -> dict:
    return bearer(service_token(caller="order", audience="payment"))


class Api:
    """The Django test client speaking JSON, with optional auth and Idempotency-Key."""

    def __init__(self, client):
        self.client = client

    def get(self, url, auth=None, **extra):
        return self.client.get(url, **(auth or {}), **extra)

    def post(self, url, body=None, auth=None, key=None, raw=None, **extra):
        if key:
            extra["HTTP_IDEMPOTENCY_KEY"] = key
        data = raw if raw is not None else json.dumps(body if body is not None else {})
        return self.client.post(url, data=data, content_type="application/json", **(auth or {}), **extra)

    def delete(self, url, auth=None, **extra):
        return self.client.delete(url, **(auth or {}), **extra)


@pytest.fixture
def api(client) -> Api:
    return Api(client)


def card_body(number: str = APPROVE_CARD, **overrides) -> dict:
    return {"card_number": number, "exp_month": 12, "exp_year": NEXT_YEAR, "cvc": "123", **overrides}


@pytest.fixture
def make_method():
    """Tokenise a card for a customer straight through the service layer."""

    def make(customer_id: int = ALICE, number: str = APPROVE_CARD):
        return services.payment_method_create(
            customer_id=customer_id, card_number=number, exp_month=12, exp_year=NEXT_YEAR
        )

    return make


def charge_body(method, *, order_id: str = "order-1", amount_cents: int = 2500, currency: str = "EUR", **overrides):
    return {
        "order_id": order_id,
        "customer_id": method.customer_id,
        "payment_method": method.token,
        "amount_cents": amount_cents,
        "currency": currency,
        **overrides,
    }


@pytest.fixture
def make_charge(make_method):
    """A charge recorded through the service layer (captured unless the card says otherwise)."""

    def make(*, customer_id: int = ALICE, number: str = APPROVE_CARD, amount_cents: int = 2500, order_id=None):
        method = make_method(customer_id, number)
        return services.charge_create(
            order_id=order_id or new_key("order"),
            customer_id=customer_id,
            payment_method=method.token,
            amount_cents=amount_cents,
            currency="EUR",
            idempotency_key=new_key("charge"),
        ).charge

    return make


@pytest.fixture(autouse=True)
def generous_write_rate(settings):
    """The suite writes far faster than any customer; the write limit has tests of its own (test_throttling.py)."""
    settings.CHASSIS = {**settings.CHASSIS, "WRITE_RATE_PER_USER": "100000/s"}
