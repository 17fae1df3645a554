"""payment_service, as order_service sees it: charges, refunds, and settling a charge whose answer was lost.

Paths and bodies follow docs/contracts.md (payment_service section).
"""

from __future__ import annotations

from dataclasses import dataclass

from chassis.client import PeerUnavailable, ServiceClient

from . import PeerRefused, as_list, refusal, unreadable

PEER = "payment"
_client = ServiceClient(PEER)

CAPTURED = "CAPTURED"


@dataclass(frozen=True)
class Charge:
    id: str
    status: str
    amount_cents: int

    @property
    def captured(self) -> bool:
        return self.status == CAPTURED


@dataclass(frozen=True)
class Refund:
    id: str
    amount_cents: int


@dataclass(frozen=True)
class Settlement:
    """What payment did with whatever a charge key captured: ``VOIDED``, ``REFUNDED``, ``NOT_CAPTURED``..."""

    outcome: str
    charge_id: str
    refund_id: str
    refunded_cents: int

    @property
    def refunded(self) -> bool:
        return self.outcome == "REFUNDED"


class CardDeclined(Exception):
    """Payment refused the card (402): ``code`` is ``card_declined``, ``insufficient_funds``..."""

    def __init__(self, code: str, message: str = ""):
        self.code = code
        self.message = message or code
        super().__init__(f"{code}: {self.message}")


def payment_charge(
    *, order_id: int, customer_id: int, payment_method: str, amount_cents: int, currency: str, idempotency_key: str
) -> Charge:
    """Capture ``amount_cents``; a replay with the same key returns the first answer."""
    response = _client.post(
        "/internal/charges/",
        json={
            "order_id": order_id,
            "customer_id": customer_id,
            "payment_method": payment_method,
            "amount_cents": amount_cents,
            "currency": currency,
        },
        idempotency_key=idempotency_key,
    )
    if response.status == 402:
        data = response.data if isinstance(response.data, dict) else {}
        raise CardDeclined(str(data.get("code") or "card_declined")[:64], str(data.get("message") or "")[:200])
    if response.status not in (200, 201):
        raise refusal(PEER, response)
    charge = _charge(response.data, response)
    if not charge.captured:
        raise CardDeclined(charge.status.lower()[:64] or "not_captured", f"The charge ended {charge.status}.")
    return charge


def payment_charges_for_order(*, order_id: int) -> list[Charge]:
    """Every charge payment holds for ``order_id``, to learn the outcome of a lost answer."""
    response = _client.get("/internal/charges/", params={"order_id": order_id})
    if response.status != 200:
        raise refusal(PEER, response)
    try:
        items = as_list(response.data)
    except ValueError as exc:
        raise unreadable(PEER, "charges lookup", response) from exc
    return [_charge(item, response) for item in items]


def payment_refund(*, charge_id: str, amount_cents: int, reason: str, idempotency_key: str) -> Refund:
    """Refund ``amount_cents`` of a captured charge; a replay with the same key returns the first refund."""
    response = _client.post(
        f"/internal/charges/{charge_id}/refunds/",
        json={"amount_cents": amount_cents, "reason": reason[:200]},
        idempotency_key=idempotency_key,
    )
    if response.status not in (200, 201):
        raise refusal(PEER, response)
    data = response.data
    try:
        return Refund(id=str(data["id"]), amount_cents=int(data.get("amount_cents", amount_cents)))
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise unreadable(PEER, "refund", response) from exc


def payment_settle(*, order_id: int, charge_key: str, reason: str, idempotency_key: str) -> Settlement:
    """Settle what the charge sent with ``charge_key`` captured: refund it, or void the key so nothing is charged.

    After a lost answer this is the only safe way to end: a charge request
    still on its way when the key is voided is refused when it reaches payment.
    Settling a key again answers the first settlement.
    """
    response = _client.post(
        "/internal/settlements/",
        json={"charge_key": charge_key, "order_id": str(order_id), "reason": reason[:200]},
        idempotency_key=idempotency_key,
    )
    if response.status not in (200, 201):
        raise refusal(PEER, response)
    data = response.data
    try:
        return Settlement(
            outcome=str(data["outcome"]),
            charge_id=str(data.get("charge") or ""),
            refund_id=str(data.get("refund") or ""),
            refunded_cents=int(data.get("refunded_cents") or 0),
        )
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise unreadable(PEER, "settlement", response) from exc


def _charge(data, response) -> Charge:
    try:
        return Charge(
            id=str(data["id"]), status=str(data.get("status", "")).upper(), amount_cents=int(data["amount_cents"])
        )
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise unreadable(PEER, "charge", response) from exc


__all__ = [
    "CardDeclined",
    "Charge",
    "PeerRefused",
    "PeerUnavailable",
    "Refund",
    "Settlement",
    "payment_charge",
    "payment_charges_for_order",
    "payment_refund",
    "payment_settle",
]
