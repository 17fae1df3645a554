"""`manage.py seed_lab`: the demo catalog."""

import io

import pytest
from django.core.management import call_command

from catalog.models import Product, StockMovement
from catalog.seed import PRODUCTS

from .helpers import assert_stock_conserved, snapshot, stock_of

pytestmark = pytest.mark.django_db


def seed() -> str:
    out = io.StringIO()
    call_command("seed_lab", stdout=out)
    return out.getvalue().strip()


def test_seed_creates_the_catalog_with_stock():
    """Ensure the seed creates at least 24 valid products with 20..200 units each, in one line of output."""
    assert seed() == f"seed_lab: created {len(PRODUCTS)} products, 0 already present."

    assert Product.objects.count() == len(PRODUCTS) >= 24
    assert len({p.sku.split("-")[0] for p in Product.objects.all()}) >= 4
    for product in Product.objects.select_related("stock"):
        product.full_clean()
        assert 20 <= product.stock.initial <= 200 and product.stock.available == product.stock.initial
    assert StockMovement.objects.filter(kind="INITIAL").count() == len(PRODUCTS)
    assert_stock_conserved()


def test_seed_twice_changes_nothing_and_never_resets_stock(client, staff):
    """Ensure a second seed creates nothing, and keeps the stock and prices of products in use."""
    seed()
    client.post("/api/products/KB-001/restock/", {"quantity": 5}, content_type="application/json", **staff)
    client.patch("/api/products/MS-001/", {"price_cents": 1}, content_type="application/json", **staff)
    before = snapshot()

    assert seed() == f"seed_lab: created 0 products, {len(PRODUCTS)} already present."
    assert snapshot() == before
    assert stock_of("KB-001").restocked == 5


def test_seed_completes_a_partial_catalog():
    """Ensure products missing from an interrupted seed are created, and only those."""
    seed()
    StockMovement.objects.filter(product__sku="AU-001").delete()
    stock_of("AU-001").delete()
    Product.objects.filter(sku="AU-001").delete()

    assert seed() == f"seed_lab: created 1 products, {len(PRODUCTS) - 1} already present."
    assert_stock_conserved()
