"""Reads of the catalog: products with their stock, the ledger, reservations.

Every queryset here loads what its serializer needs in a fixed number of
queries (``select_related`` / ``prefetch_related``), whatever the page size.
"""

from __future__ import annotations

import uuid

from django.db.models import Prefetch, Q, QuerySet
from rest_framework.exceptions import NotFound

from .models import Product, Reservation, ReservationLine, StockMovement


def product_list(*, search: str = "", skus: list[str] | None = None, include_inactive: bool = False) -> QuerySet:
    """Products ordered by sku, with their stock joined in the same query."""
    products = Product.objects.select_related("stock").order_by("sku")
    if not include_inactive:
        products = products.filter(active=True)
    if skus:
        products = products.filter(sku__in=skus)
    if search:
        products = products.filter(
            Q(sku__icontains=search) | Q(name__icontains=search) | Q(description__icontains=search)
        )
    return products


def product_get(*, sku: str) -> Product:
    """One product (active or not) with its stock; 404 when the sku is unknown."""
    product = Product.objects.select_related("stock").filter(sku=sku.upper()).first()
    if product is None:
        raise NotFound(f"No product with sku {sku!r}.")
    return product


def movement_list(*, product: Product) -> QuerySet:
    """The ledger of one product, newest first, with each entry's reservation."""
    return StockMovement.objects.filter(product=product).select_related("reservation").order_by("-id")


def stock_reconciliation_list() -> QuerySet:
    """Every product (active or not) with its stock counters, by sku: what the audit checks."""
    return Product.objects.select_related("stock").order_by("sku")


def reservation_reconciliation_list(*, order_id: str | None = None, status: str | None = None) -> QuerySet:
    """Reservations, oldest first, with their lines and skus loaded in one more query."""
    lines = ReservationLine.objects.select_related("product").order_by("product__sku")
    reservations = Reservation.objects.prefetch_related(Prefetch("lines", queryset=lines)).order_by("created_at", "id")
    if order_id:
        reservations = reservations.filter(order_id=order_id)
    if status:
        reservations = reservations.filter(status=status)
    return reservations


def reservation_list_for_order(*, order_id: str) -> QuerySet:
    """The reservations of one order, oldest first, with their lines and products (a fixed number of queries)."""
    lines = ReservationLine.objects.select_related("product").order_by("product__sku")
    return (
        Reservation.objects.filter(order_id=order_id)
        .prefetch_related(Prefetch("lines", queryset=lines))
        .order_by("created_at", "id")
    )


def reservation_get(*, reservation_id: uuid.UUID) -> Reservation:
    """One reservation with its lines and their products; 404 when unknown."""
    lines = ReservationLine.objects.select_related("product").order_by("product__sku")
    reservation = (
        Reservation.objects.prefetch_related(Prefetch("lines", queryset=lines)).filter(pk=reservation_id).first()
    )
    if reservation is None:
        raise NotFound(f"No reservation {reservation_id}.")
    return reservation
