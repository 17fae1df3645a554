"""Products, their stock, reservations held for orders, and the stock ledger.

Stock is conserved, and the database itself refuses a row that is not:
``initial + restocked == available + reserved + sold`` for every product.
Every change of a stock row is paired, in the same transaction, with
``StockMovement`` rows (the ledger), which are only ever inserted.
"""

from __future__ import annotations

import uuid

from django.core.validators import MinValueValidator, RegexValidator
from django.db import models
from django.db.models import F
from django.db.models.lookups import Exact

SKU_PATTERN = r"^[A-Z0-9-]{3,32}$"
CURRENCY_PATTERN = r"^[A-Z]{3}$"


class Product(models.Model):
    """Something the shop sells. The sku never changes once created."""

    sku = models.CharField(
        max_length=32,
        unique=True,
        validators=[RegexValidator(SKU_PATTERN, "Use 3 to 32 characters among A-Z, 0-9 and '-'.")],
    )
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    price_cents = models.PositiveIntegerField()
    currency = models.CharField(
        max_length=3, default="EUR", validators=[RegexValidator(CURRENCY_PATTERN, "Use a 3-letter ISO code.")]
    )
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["sku"]

    def __str__(self) -> str:
        return self.sku


class Stock(models.Model):
    """The stock counters of one product; its primary key is the product's id.

    ``available`` can be reserved, ``reserved`` is held for orders not yet
    confirmed, ``sold`` left the shop. ``initial`` and ``restocked`` only grow,
    so the conservation check needs no history.
    """

    product = models.OneToOneField(Product, on_delete=models.PROTECT, primary_key=True, related_name="stock")
    available = models.PositiveIntegerField(default=0)
    reserved = models.PositiveIntegerField(default=0)
    sold = models.PositiveIntegerField(default=0)
    initial = models.PositiveIntegerField(default=0)
    restocked = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Exact(F("available") + F("reserved") + F("sold"), F("initial") + F("restocked")),
                name="stock_is_conserved",
                violation_error_message="initial + restocked must equal available + reserved + sold.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.product_id}: {self.available} available, {self.reserved} reserved, {self.sold} sold"


class Reservation(models.Model):
    """Stock held for one order until it is committed, released or expires."""

    class Status(models.TextChoices):
        HELD = "HELD"
        COMMITTED = "COMMITTED"
        RELEASED = "RELEASED"
        RETURNED = "RETURNED"
        EXPIRED = "EXPIRED"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    order_id = models.CharField(max_length=64, db_index=True)
    idempotency_key = models.CharField(max_length=128, unique=True)
    # A hash of (order_id, lines): tells a true replay from a reused key.
    request_fingerprint = models.CharField(max_length=64)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.HELD)
    expires_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [models.Index(fields=["status", "expires_at"], name="reservation_due_idx")]

    def __str__(self) -> str:
        return f"{self.id} ({self.status})"


class ReservationLine(models.Model):
    """One product of a reservation, with the price it had when reserved."""

    reservation = models.ForeignKey(Reservation, on_delete=models.CASCADE, related_name="lines")
    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="+")
    quantity = models.PositiveIntegerField(validators=[MinValueValidator(1)])
    unit_price_cents = models.PositiveIntegerField()
    currency = models.CharField(max_length=3)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["reservation", "product"], name="one_line_per_product"),
            models.CheckConstraint(condition=models.Q(quantity__gte=1), name="line_quantity_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.quantity} x product {self.product_id}"


class StockMovement(models.Model):
    """One entry of the stock ledger. Rows are inserted, never updated nor deleted."""

    class Kind(models.TextChoices):
        INITIAL = "INITIAL"  # → available (initial)
        RESTOCK = "RESTOCK"  # → available (restocked)
        RESERVE = "RESERVE"  # available → reserved
        RELEASE = "RELEASE"  # reserved → available
        COMMIT = "COMMIT"  # reserved → sold
        RETURN = "RETURN"  # sold → available
        EXPIRE = "EXPIRE"  # reserved → available, by the sweeper

    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="movements")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    quantity = models.PositiveIntegerField()
    reservation = models.ForeignKey(
        Reservation, on_delete=models.PROTECT, null=True, blank=True, related_name="movements"
    )
    note = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.CheckConstraint(condition=models.Q(quantity__gte=1), name="movement_quantity_positive")]

    def __str__(self) -> str:
        return f"{self.kind} {self.quantity} of product {self.product_id}"
