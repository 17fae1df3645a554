"""Writes of the payment service: tokenising cards, charging, refunding, settling a charge by its key.

Charges and refunds are idempotent on their ``Idempotency-Key``: the key is
unique in the database, so two concurrent requests with the same key cannot
both write; the loser answers with the winner's result. A key reused with a
different body is a 409 (:mod:`chassis.idempotency` does the bookkeeping).

A charge whose answer order_service never got is settled by its key
(:func:`charge_settle`): whatever that key captured is refunded, and a key that
has captured nothing is voided, so that the charge request, should it still be
on its way, is refused when it arrives.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar
from uuid import UUID

from django.db import IntegrityError, OperationalError, transaction
from django.utils import timezone
from django.utils.crypto import get_random_string
from django.views.decorators.debug import sensitive_variables
from rest_framework.exceptions import ValidationError

from chassis.errors import Conflict, NotFound, Unavailable
from chassis.idempotency import IdempotentCreate, fingerprint

from . import cards
from .models import Charge, ChargeSettlement, LedgerEntry, PaymentMethod, Refund

log = logging.getLogger(__name__)

T = TypeVar("T")

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


@dataclass(frozen=True)
class SettleResult:
    settlement: ChargeSettlement
    replayed: bool


LOCK_ATTEMPTS = 3
# MySQL/MariaDB: 1205 lock wait timeout, 1213 deadlock (the transaction was rolled back).
_LOCK_CONFLICT_CODES = frozenset({1205, 1213})


def _is_lock_conflict(exc: OperationalError) -> bool:
    code = exc.args[0] if exc.args else None
    return code in _LOCK_CONFLICT_CODES or (isinstance(code, str) and "database is locked" in code)


def _atomic_replayed(work: Callable[[], T], *, what: str) -> T:
    """Run ``work`` in one transaction, replayed when the database aborted it for a lock conflict.

    A charge and a settlement of the same key each write their own row, then
    lock the other's: when they cross, the database aborts one of them as a
    deadlock, and that one is replayed (it then sees the winner's row). After
    ``LOCK_ATTEMPTS`` conflicts, a 503 ``payment_busy``.
    """
    for attempt in range(1, LOCK_ATTEMPTS + 1):
        try:
            with transaction.atomic():
                return work()
        except OperationalError as exc:
            if transaction.get_connection().in_atomic_block or not _is_lock_conflict(exc):
                raise
            log.warning("%s aborted by a lock conflict (attempt %d/%d): %s", what, attempt, LOCK_ATTEMPTS, exc)
            if attempt < LOCK_ATTEMPTS:
                time.sleep(random.uniform(0.005, 0.02) * attempt)
    raise Unavailable("Payment's rows are busy; try again shortly.", code="payment_busy")


def _refuse_if_voided(idempotency_key: str, *, lock: bool) -> None:
    """A 409 ``charge_voided`` when ``idempotency_key`` was settled with nothing charged under it.

    ``lock`` reads the settlement row with a lock, so a settlement not yet
    committed is waited for instead of missed.
    """
    settlements = ChargeSettlement.objects.filter(charge_key=idempotency_key)
    settlement = (settlements.select_for_update() if lock else settlements).first()
    if settlement is not None and settlement.outcome == ChargeSettlement.Outcome.VOIDED:
        raise Conflict(
            "This Idempotency-Key was settled before any charge arrived with it: nothing is charged.",
            code="charge_voided",
        )


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
        # A voided key is refused inside the write's transaction (below), which is the check that counts:
        # one read before it would only refuse the same charges a statement earlier.
        method = PaymentMethod.objects.filter(
            token=payment_method, customer_id=customer_id, removed_at__isnull=True
        ).first()
        if method is None:
            # A replay is answered even once its card is removed (no lookup was made before this one).
            replayed = once.replay()
            if replayed is not None:
                return replayed
            raise ValidationError({"payment_method": ["No usable payment method with this token for this customer."]})
        decline_code = DECLINE_CODES.get(method.outcome, "")

        def write() -> Charge:
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
            # Our row is written: a settlement of this key from now on waits for us and refunds it.
            # One written before us is seen here (the lock waits for it to commit): then we charge nothing.
            _refuse_if_voided(idempotency_key, lock=True)
            return charge

        return _atomic_replayed(write, what="charge")

    # No lookup first: the charge's row is the first write, and its unique key tells a replay.
    charge, replayed = once.run(create, look_first=False)
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


def charge_settle(*, charge_key: str, order_id: str, reason: str, idempotency_key: str) -> SettleResult:
    """Settle whatever the charge made with ``charge_key`` captured: refund it, or void the key. Idempotent.

    For a charge whose answer order_service never learnt (it timed out): after
    this, no money is held under ``charge_key``, and none ever will be.

    * A captured charge under the key: what remains of it is refunded (a
      Refund with ``idempotency_key``, and its ledger entry): ``REFUNDED``;
      already refunded in full: ``ALREADY_REFUNDED``; declined: ``NOT_CAPTURED``.
    * No charge under the key: ``VOIDED``. A charge request with that key
      still in flight (delayed by the network, a slow worker, an injected
      latency) is refused with a 409 ``charge_voided`` when it arrives.
    * A charge being written right now: the settlement waits for it to
      commit, then refunds it (or it waits for the settlement, then refuses).

    The settlement writes its row first, then locks the charge's; the charge
    writes its row first, then locks the settlement's: whichever runs second
    sees the other, and when both cross, the database aborts one as a deadlock
    and it is replayed. Settling a key again answers the first settlement.
    A charge under the key for another order is a 409 ``charge_key_mismatch``.
    """

    def replay() -> ChargeSettlement | None:
        return ChargeSettlement.objects.select_related("charge", "refund").filter(charge_key=charge_key).first()

    existing = replay()
    if existing is not None:
        return SettleResult(settlement=existing, replayed=True)

    def write() -> ChargeSettlement:
        settlement = ChargeSettlement.objects.create(
            charge_key=charge_key, order_id=order_id, outcome=ChargeSettlement.Outcome.VOIDED, reason=reason
        )
        charge = Charge.objects.select_for_update().filter(idempotency_key=charge_key).first()
        if charge is None:
            return settlement
        if charge.order_id != order_id:
            raise Conflict(
                f"The charge made with this key belongs to order {charge.order_id}, not {order_id}.",
                code="charge_key_mismatch",
            )
        settlement.charge = charge
        if charge.status != Charge.Status.CAPTURED:
            settlement.outcome = ChargeSettlement.Outcome.NOT_CAPTURED
        elif charge.refundable_cents == 0:
            settlement.outcome = ChargeSettlement.Outcome.ALREADY_REFUNDED
        else:
            settlement.refund = refund_create(
                charge_id=charge.pk, amount_cents=None, reason=reason, idempotency_key=idempotency_key
            ).refund
            settlement.outcome = ChargeSettlement.Outcome.REFUNDED
        settlement.save(update_fields=["charge", "refund", "outcome"])
        return settlement

    try:
        settlement = _atomic_replayed(write, what="settlement")
    except IntegrityError:
        # The same key settled concurrently, and that settlement committed first: answer with it.
        existing = replay()
        if existing is None:
            raise
        return SettleResult(settlement=existing, replayed=True)
    return SettleResult(settlement=settlement, replayed=False)
