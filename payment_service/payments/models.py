"""Payment data: tokenised cards, charges, refunds and the append-only ledger.

Money is integer cents. ``customer_id`` is the user id issued by user_service;
this service keeps no user table. Card numbers and CVCs are never stored: a
payment method keeps a random token, the brand, the last four digits, the
expiry, and the lab outcome decided when the card was tokenised.
"""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q


class PaymentMethod(models.Model):
    class Brand(models.TextChoices):
        VISA = "visa"
        MASTERCARD = "mastercard"
        AMEX = "amex"
        DISCOVER = "discover"
        UNKNOWN = "unknown"

    class Outcome(models.TextChoices):
        APPROVE = "approve"
        DECLINE = "decline"
        INSUFFICIENT_FUNDS = "insufficient_funds"

    token = models.CharField(max_length=32, unique=True)
    customer_id = models.BigIntegerField(db_index=True)
    brand = models.CharField(max_length=16, choices=Brand.choices)
    last4 = models.CharField(max_length=4)
    exp_month = models.PositiveSmallIntegerField()
    exp_year = models.PositiveSmallIntegerField()
    outcome = models.CharField(max_length=24, choices=Outcome.choices)
    created_at = models.DateTimeField(auto_now_add=True)
    # Removal is soft: past charges keep pointing at the card they were made with.
    removed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["customer_id", "removed_at"], name="pm_customer_active")]

    def __str__(self) -> str:
        return f"{self.brand} •••• {self.last4} ({self.token})"


class Charge(models.Model):
    class Status(models.TextChoices):
        CAPTURED = "CAPTURED"
        DECLINED = "DECLINED"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    order_id = models.CharField(max_length=64, db_index=True)
    customer_id = models.BigIntegerField(db_index=True)
    payment_method = models.ForeignKey(PaymentMethod, on_delete=models.PROTECT, related_name="charges")
    amount_cents = models.BigIntegerField()
    currency = models.CharField(max_length=3)
    status = models.CharField(max_length=16, choices=Status.choices)
    decline_code = models.CharField(max_length=32, blank=True, default="")
    idempotency_key = models.CharField(max_length=128, unique=True)
    request_fingerprint = models.CharField(max_length=64)
    refunded_cents = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=Q(amount_cents__gt=0), name="charge_amount_positive"),
            models.CheckConstraint(
                condition=Q(refunded_cents__gte=0, refunded_cents__lte=models.F("amount_cents")),
                name="charge_refunded_within_amount",
            ),
        ]

    def __str__(self) -> str:
        return f"charge {self.id} {self.status} {self.amount_cents} {self.currency}"

    @property
    def refundable_cents(self) -> int:
        return self.amount_cents - self.refunded_cents if self.status == self.Status.CAPTURED else 0


class Refund(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    charge = models.ForeignKey(Charge, on_delete=models.PROTECT, related_name="refunds")
    amount_cents = models.BigIntegerField()
    reason = models.CharField(max_length=200)
    idempotency_key = models.CharField(max_length=128, unique=True)
    request_fingerprint = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [models.CheckConstraint(condition=Q(amount_cents__gt=0), name="refund_amount_positive")]

    def __str__(self) -> str:
        return f"refund {self.id} of {self.amount_cents} on {self.charge_id}"


class ChargeSettlement(models.Model):
    """How a charge whose answer order_service never learnt was settled, by the charge's ``Idempotency-Key``.

    One row per key (``charge_key``), written by ``POST /internal/settlements/``:

    * ``VOIDED``: nothing had been charged under the key. The key is spent: a
      charge that arrives later with it (a request still in flight) is refused
      with a 409 ``charge_voided`` and charges nothing.
    * ``REFUNDED``: the key had captured; what remained of the charge was refunded (``refund``).
    * ``NOT_CAPTURED``: the charge under the key was declined: nothing to give back.
    * ``ALREADY_REFUNDED``: the charge under the key had been refunded in full already.

    A settlement and a charge with the same key never both win: each writes its
    own row first, then reads the other's with a lock (see ``services.charge_settle``).
    """

    class Outcome(models.TextChoices):
        VOIDED = "VOIDED"
        REFUNDED = "REFUNDED"
        NOT_CAPTURED = "NOT_CAPTURED"
        ALREADY_REFUNDED = "ALREADY_REFUNDED"

    charge_key = models.CharField(max_length=128, unique=True)
    order_id = models.CharField(max_length=64, db_index=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    charge = models.ForeignKey(Charge, null=True, blank=True, on_delete=models.PROTECT, related_name="settlements")
    refund = models.OneToOneField(Refund, null=True, blank=True, on_delete=models.PROTECT, related_name="settlement")
    reason = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"settlement of {self.charge_key}: {self.outcome}"


class AppendOnlyError(RuntimeError):
    """Raised on any attempt to change or remove a ledger entry."""


class LedgerQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise AppendOnlyError("Ledger entries cannot be updated; append a correcting entry instead.")

    def delete(self):
        raise AppendOnlyError("Ledger entries cannot be deleted; append a correcting entry instead.")


class LedgerEntry(models.Model):
    """One money movement: ``+amount`` when a charge is captured, ``-amount`` per refund.

    Append-only: rows are inserted, never updated or deleted, so the sum of a
    charge's entries is always what the customer has actually paid.
    """

    class Kind(models.TextChoices):
        CHARGE = "CHARGE"
        REFUND = "REFUND"

    kind = models.CharField(max_length=8, choices=Kind.choices)
    charge = models.ForeignKey(Charge, on_delete=models.PROTECT, related_name="ledger_entries")
    refund = models.OneToOneField(Refund, null=True, blank=True, on_delete=models.PROTECT, related_name="ledger_entry")
    amount_cents = models.BigIntegerField()
    currency = models.CharField(max_length=3)
    customer_id = models.BigIntegerField(db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = LedgerQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "ledger entries"
        constraints = [
            models.CheckConstraint(
                condition=(
                    Q(kind="CHARGE", amount_cents__gt=0, refund__isnull=True)
                    | Q(kind="REFUND", amount_cents__lt=0, refund__isnull=False)
                ),
                name="ledger_sign_matches_kind",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.amount_cents:+d} {self.currency} (charge {self.charge_id})"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise AppendOnlyError("Ledger entries cannot be updated; append a correcting entry instead.")
        kwargs["force_insert"] = True
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AppendOnlyError("Ledger entries cannot be deleted; append a correcting entry instead.")
