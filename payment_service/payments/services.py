"""Writes of the payment service: tokenising cards, charging, refunding.

Charges and refunds are idempotent on their ``Idempotency-Key``: the key is
unique in the database, so two concurrent requests with the same key cannot
both write; the loser answers with the winner's result. A key reused with a
different body is a 409 (:mod:`chassis.idempotency` does the bookkeeping).
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from django.db import transaction
from django.utils import timezone
from django.utils.crypto import get_random_string
from django.views.decorators.debug import sensitive_variables
from rest_framework.exceptions import ValidationError

from chassis.errors import Conflict, NotFound
from chassis.idempotency import IdempotentCreate, fingerprint

from . import cards
from .models import Charge, LedgerEntry, PaymentMethod, Refund

TOKEN_PREFIX = "pm_"
TOKEN_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

DECLINE_CODES = {
    PaymentMethod.Outcome.DECLINE: "card_declined",
    PaymentMethod.Outcome.INSUFFICIENT_FUNDS: "insufficient_funds",
}


@dataclass(frozen=True)
class ChargeResult:
    charge: Charge
    replayed: bool


@dataclass(frozen=True)
class RefundResult:
    refund: Refund
    replayed: bool


@sensitive_variables("card_number")
def payment_method_create(*, customer_id: int, card_number: str, exp_month: int, exp_year: int) -> PaymentMethod:
    """Tokenise a card for a customer. ``card_number`` must already be normalised (digits, Luhn-valid).

    Only the token, brand, last four digits, expiry and the lab outcome are kept.
    """
    return PaymentMethod.objects.create(
        token=TOKEN_PREFIX + get_random_string(24, TOKEN_ALPHABET),
        customer_id=customer_id,
        brand=cards.brand_of(card_number),
        last4=card_number[-4:],
        exp_month=exp_month,
        exp_year=exp_year,
        outcome=cards.outcome_of(card_number),
    )


def payment_method_remove(*, customer_id: int, token: str) -> None:
    """Remove one of the customer's payment methods; 404 if it is not theirs or already removed.

    The row stays (soft removal) so past charges still show the card they used.
    """
    removed = PaymentMethod.objects.filter(token=token, customer_id=customer_id, removed_at__isnull=True).update(
        removed_at=timezone.now()
    )
    if not removed:
        raise NotFound("No such payment method.")


def charge_create(
    *,
    order_id: str,
    customer_id: int,
    payment_method: str,
    amount_cents: int,
    currency: str,
    idempotency_key: str,
) -> ChargeResult:
    """Charge a customer's payment method once per ``idempotency_key``.

    The card's lab outcome decides: CAPTURED (with a ledger CHARGE entry) or
    DECLINED (recorded with its ``decline_code``, no ledger entry). A replay
    with the same body returns the recorded charge; a different body is a 409.
    A payment method that does not exist, is removed or belongs to another
    customer is a 400 on ``payment_method`` and records nothing.
    """
    request_fingerprint = fingerprint(
        {
            "order_id": order_id,
            "customer_id": customer_id,
            "payment_method": payment_method,
            "amount_cents": amount_cents,
            "currency": currency,
        }
    )
    once = IdempotentCreate(
        lookup=lambda: Charge.objects.select_related("payment_method").filter(idempotency_key=idempotency_key).first(),
        request_fingerprint=request_fingerprint,
    )

    def create() -> Charge:
        method = PaymentMethod.objects.filter(
            token=payment_method, customer_id=customer_id, removed_at__isnull=True
        ).first()
        if method is None:
            raise ValidationError({"payment_method": ["No usable payment method with this token for this customer."]})
        decline_code = DECLINE_CODES.get(method.outcome, "")
        with transaction.atomic():
            charge = Charge.objects.create(
                order_id=order_id,
                customer_id=customer_id,
                payment_method=method,
                amount_cents=amount_cents,
                currency=currency,
                status=Charge.Status.DECLINED if decline_code else Charge.Status.CAPTURED,
                decline_code=decline_code,
                idempotency_key=idempotency_key,
                request_fingerprint=request_fingerprint,
            )
            if charge.status == Charge.Status.CAPTURED:
                LedgerEntry.objects.create(
                    kind=LedgerEntry.Kind.CHARGE,
                    charge=charge,
                    amount_cents=amount_cents,
                    currency=currency,
                    customer_id=customer_id,
                )
        return charge

    charge, replayed = once.run(create)
    return ChargeResult(charge=charge, replayed=replayed)


def refund_create(*, charge_id: UUID, amount_cents: int | None, reason: str, idempotency_key: str) -> RefundResult:
    """Refund part or all (``amount_cents`` None = what remains) of a captured charge, once per key.

    The charge row is locked while its ``refunded_cents`` grows, so concurrent
    refunds can never give back more than was captured. Writes the Refund and
    a negative ledger REFUND entry in the same transaction.
    """
    request_fingerprint = fingerprint({"charge_id": str(charge_id), "amount_cents": amount_cents, "reason": reason})
    once = IdempotentCreate(
        lookup=lambda: Refund.objects.select_related("charge").filter(idempotency_key=idempotency_key).first(),
        request_fingerprint=request_fingerprint,
    )

    def create() -> Refund:
        # An IntegrityError here: the same key was used concurrently on another charge and won the unique index.
        with transaction.atomic():
            charge = Charge.objects.select_for_update().filter(pk=charge_id).first()
            if charge is None:
                raise NotFound("No such charge.")
            # Another request with this key may have finished while we waited for the lock.
            earlier = once.replay()
            if earlier is not None:
                return earlier
            if charge.status != Charge.Status.CAPTURED:
                raise Conflict("Only a captured charge can be refunded.", code="charge_not_captured")
            remaining = charge.amount_cents - charge.refunded_cents
            amount = remaining if amount_cents is None else amount_cents
            if amount > remaining or remaining == 0:
                raise Conflict(
                    f"Only {remaining} cents of this charge can still be refunded.",
                    code="refund_exceeds_charge",
                    refundable_cents=remaining,
                )
            refund = Refund.objects.create(
                charge=charge,
                amount_cents=amount,
                reason=reason,
                idempotency_key=idempotency_key,
                request_fingerprint=request_fingerprint,
            )
            charge.refunded_cents += amount
            charge.save(update_fields=["refunded_cents"])
            LedgerEntry.objects.create(
                kind=LedgerEntry.Kind.REFUND,
                charge=charge,
                refund=refund,
                amount_cents=-amount,
                currency=charge.currency,
                customer_id=charge.customer_id,
            )
        return refund

    refund, replayed = once.run(create)
    return RefundResult(refund=refund, replayed=replayed)
