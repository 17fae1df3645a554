"""Reads of the payment service. Every list is shaped for its serializer (no N+1)."""

from __future__ import annotations

from uuid import UUID

from django.db.models import Prefetch, QuerySet
from rest_framework.exceptions import NotFound

from .models import Charge, LedgerEntry, PaymentMethod, Refund


def payment_method_list(*, customer_id: int) -> QuerySet[PaymentMethod]:
    """The customer's usable (not removed) payment methods, newest first."""
    return PaymentMethod.objects.filter(customer_id=customer_id, removed_at__isnull=True)


def _charges() -> QuerySet[Charge]:
    return Charge.objects.select_related("payment_method").prefetch_related(
        Prefetch("refunds", queryset=Refund.objects.order_by("created_at", "id"))
    )


def charge_list(*, customer_id: int | None) -> QuerySet[Charge]:
    """Charges with their card and refunds: one customer's, or everybody's when ``customer_id`` is None."""
    charges = _charges()
    return charges if customer_id is None else charges.filter(customer_id=customer_id)


def charge_get(*, charge_id: UUID, customer_id: int | None) -> Charge:
    """One charge with its refunds; 404 when it does not exist or belongs to someone else."""
    try:
        return charge_list(customer_id=customer_id).get(pk=charge_id)
    except Charge.DoesNotExist:
        raise NotFound("No such payment.") from None


def charge_list_for_order(*, order_id: str) -> QuerySet[Charge]:
    """Every charge attempted for one order (captured or declined), oldest first."""
    return _charges().filter(order_id=order_id).order_by("created_at", "id")


def ledger_list(*, order_id: str | None = None) -> QuerySet[LedgerEntry]:
    """Ledger entries, newest first, optionally for one order."""
    entries = LedgerEntry.objects.select_related("charge")
    return entries if order_id is None else entries.filter(charge__order_id=order_id)


def charge_reconciliation_list() -> QuerySet[Charge]:
    """Every charge, oldest first, without its relations (the audit needs ids and amounts only)."""
    return Charge.objects.order_by("created_at", "id").only(
        "id", "order_id", "status", "amount_cents", "refunded_cents", "currency", "created_at"
    )
