"""Fixtures: real signed tokens for every kind of caller, and product factories."""

from __future__ import annotations

import pytest

from catalog import services
from chassis.testing import bearer, service_token, user_token


@pytest.fixture
def customer() -> dict:
    """Headers of a logged-in customer."""
    return bearer(user_token(user_id=101, email="alice@lab.local"))


@pytest.fixture
def staff() -> dict:
    """Headers of a staff member."""
    return bearer(user_token(user_id=1, email="admin@lab.local", staff=True))


@pytest.fixture
def order_service() -> dict:
    """Headers of order_service calling inventory (the only caller of /internal/)."""
    return bearer(service_token(caller="order", audience="inventory"))


@pytest.fixture
def payment_service() -> dict:
    """Headers of payment_service calling inventory (not allowed on /internal/)."""
    return bearer(service_token(caller="payment", audience="inventory"))


@pytest.fixture
def dashboard_service() -> dict:
    """Headers of the dashboard (the lab admin) calling inventory."""
    return bearer(service_token(caller="dashboard", audience="inventory"))


@pytest.fixture
def make_product(db):
    """Create a product with its stock the way the API does."""

    def make(sku: str = "KB-001", *, stock: int = 10, price_cents: int = 1000, **fields):
        fields.setdefault("name", f"Product {sku}")
        return services.product_create(sku=sku, price_cents=price_cents, initial_stock=stock, **fields)

    return make


@pytest.fixture(autouse=True)
def generous_write_rate(settings):
    """The suite writes far faster than any customer; the write limit has tests of its own (test_throttling.py)."""
    settings.CHASSIS = {**settings.CHASSIS, "WRITE_RATE_PER_USER": "100000/s"}
