"""Fixtures for the cross-service tests: one running lab per test session."""

from __future__ import annotations

import itertools
import os
import uuid

import pytest
import requests

from .conftest_lab import lab_admin, shopper  # noqa: F401 — fixtures defined beside their helpers, registered here
from .harness import ROOT, start_lab

_counter = itertools.count(1)


@pytest.fixture(scope="session")
def lab():
    running = start_lab(ROOT / "var" / f"it-{os.getpid()}")
    yield running
    running.stop()
    for name in running.urls:
        errors = [line for line in running.log_tail(name, 2000).splitlines() if "Traceback" in line]
        assert not errors, f"{name} logged a traceback during the run; see {running.logs[name]}"


class Api:
    """A logged-in (or anonymous) HTTP client of the lab, one session per user."""

    def __init__(self, lab, token: str | None = None):
        self.lab = lab
        self.session = requests.Session()
        self.token = token
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def url(self, service: str, path: str) -> str:
        return f"{self.lab.urls[service]}{path}"

    def get(self, service, path, **kw):
        return self.session.get(self.url(service, path), timeout=30, **kw)

    def post(self, service, path, json=None, **kw):
        return self.session.post(self.url(service, path), json=json, timeout=60, **kw)

    def patch(self, service, path, json=None, **kw):
        return self.session.patch(self.url(service, path), json=json, timeout=30, **kw)

    def delete(self, service, path, **kw):
        return self.session.delete(self.url(service, path), timeout=30, **kw)

    def order(self, lines, payment_method, key=None, **extra):
        body = {"lines": lines, "payment_method": payment_method, **extra}
        return self.post(
            "order", "/api/orders/", json=body, headers={"Idempotency-Key": key or f"it-{uuid.uuid4().hex}"}
        )

    def add_card(self, number="4242424242424242"):
        response = self.post(
            "payment",
            "/api/payment-methods/",
            json={"card_number": number, "exp_month": 12, "exp_year": 2035, "cvc": "123"},
        )
        assert response.status_code == 201, response.text
        return response.json()["token"]


def login(lab, email: str, password: str) -> Api:
    response = requests.post(
        f"{lab.urls['user']}/api/auth/login/", json={"email": email, "password": password}, timeout=30
    )
    assert response.status_code == 200, response.text
    return Api(lab, response.json()["access"])


@pytest.fixture
def anonymous(lab):
    return Api(lab)


@pytest.fixture(scope="session")
def admin(lab):
    return login(lab, "admin@lab.local", os.environ.get("LAB_ADMIN_PASSWORD", "admin-lab-2024"))


@pytest.fixture
def new_customer(lab):
    """A function that registers and logs in a brand-new customer."""

    def make(name="Test Customer") -> Api:
        email = f"it-{os.getpid()}-{next(_counter)}-{uuid.uuid4().hex[:6]}@lab.local"
        password = "correct-horse-battery-9"
        response = requests.post(
            f"{lab.urls['user']}/api/auth/register/",
            json={"email": email, "password": password, "name": name},
            timeout=30,
        )
        assert response.status_code == 201, response.text
        api = login(lab, email, password)
        api.email = email
        api.password = password
        return api

    return make


@pytest.fixture
def customer(new_customer):
    return new_customer()


@pytest.fixture
def product(admin):
    """A function creating a fresh product with the given stock; returns its sku."""

    def make(stock=50, price_cents=1999) -> str:
        sku = f"IT-{uuid.uuid4().hex[:8].upper()}"
        response = admin.post(
            "inventory",
            "/api/products/",
            json={
                "sku": sku,
                "name": f"Integration item {sku}",
                "description": "made by a test",
                "price_cents": price_cents,
                "currency": "EUR",
                "initial_stock": stock,
            },
        )
        assert response.status_code == 201, response.text
        return sku

    return make


def stock_of(api: Api, sku: str) -> dict:
    response = api.get("inventory", f"/api/products/{sku}/")
    assert response.status_code == 200, response.text
    return response.json()
