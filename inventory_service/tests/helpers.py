"""Assertions shared by the tests."""

from __future__ import annotations

from collections import Counter, defaultdict

from django.db.models import Sum

from catalog.models import Product, Reservation, ReservationLine, Stock, StockMovement

Kind = StockMovement.Kind


def assert_stock_conserved() -> None:
    """Ensure every stock row is conserved and agrees with the ledger and with the reservations.

    * initial + restocked == available + reserved + sold;
    * each counter equals what the movements say it should be;
    * reserved == units of HELD reservations, sold == units of COMMITTED ones.
    """
    moved: dict[int, Counter] = defaultdict(Counter)
    for row in StockMovement.objects.values("product_id", "kind").annotate(total=Sum("quantity")):
        moved[row["product_id"]][row["kind"]] = row["total"]
    held, committed = Counter(), Counter()
    lines = ReservationLine.objects.values("product_id", "reservation__status").annotate(total=Sum("quantity"))
    for row in lines:
        if row["reservation__status"] == Reservation.Status.HELD:
            held[row["product_id"]] += row["total"]
        elif row["reservation__status"] == Reservation.Status.COMMITTED:
            committed[row["product_id"]] += row["total"]

    for stock in Stock.objects.all():
        m = moved[stock.product_id]
        where = f"product {stock.product_id}: {stock}"
        assert stock.initial + stock.restocked == stock.available + stock.reserved + stock.sold, where
        assert stock.initial == m[Kind.INITIAL], where
        assert stock.restocked == m[Kind.RESTOCK], where
        assert stock.reserved == m[Kind.RESERVE] - m[Kind.COMMIT] - m[Kind.RELEASE] - m[Kind.EXPIRE], where
        assert stock.sold == m[Kind.COMMIT] - m[Kind.RETURN], where
        assert stock.reserved == held[stock.product_id], where
        assert stock.sold == committed[stock.product_id], where


def stock_of(sku: str) -> Stock:
    return Stock.objects.get(product__sku=sku)


def snapshot() -> tuple:
    """Everything a refused request must leave unchanged."""
    return (
        list(Product.objects.order_by("id").values_list("sku", "name", "description", "price_cents", "active")),
        list(
            Stock.objects.order_by("product_id").values_list("product_id", "available", "reserved", "sold", "restocked")
        ),
        StockMovement.objects.count(),
        Reservation.objects.count(),
        list(ReservationLine.objects.values_list("id", flat=True)),
    )
