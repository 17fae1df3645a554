"""The repair after an unsafe run: refund the charges payment captured for an order but the saga never recorded.

The saga keeps one charge per order (its ``charge_id``); a charge captured
under any other key only exists when the lab's unsafe switch
``unsafe.charge_retry_new_key`` sent a lost charge again (chassis.lab.resilience).
The audit names such orders; :func:`order_extra_charges_refund` refunds every
captured charge of theirs that is not the one the saga kept — what a
reconciliation job does once the audit has found them.
"""

from __future__ import annotations

import logging

from chassis.client import PeerUnavailable
from chassis.errors import Unavailable

from ..clients import PeerRefused, payment
from ..models import Order

log = logging.getLogger("orders.saga")

REPAIR_REASON = "Charged more than once: refunded by the repair"


def order_extra_charges_refund(*, order_ids: list[int]) -> list[dict]:
    """For each order of ``order_ids`` that exists: refund its captured charges other than the one the saga kept.

    Returns one ``{"order_id", "kept", "refunded", "refused"}`` per order (charge ids).
    A second repair of the same order refunds nothing more: each refund's key
    names the charge. Payment down: :class:`~chassis.errors.Unavailable` (503).
    """
    results = []
    for order in Order.objects.filter(pk__in=order_ids).order_by("pk"):
        try:
            charges = payment.payment_charges_for_order(order_id=order.pk)
        except (PeerUnavailable, PeerRefused) as exc:
            raise Unavailable(f"payment could not list order {order.pk}'s charges: {exc}") from exc
        refunded, refused = [], []
        for charge in charges:
            if not charge.captured or charge.id == order.charge_id:
                continue
            try:
                payment.payment_refund(
                    charge_id=charge.id,
                    amount_cents=charge.amount_cents,
                    reason=REPAIR_REASON,
                    idempotency_key=f"order-{order.pk}-repair-{charge.id}",
                )
                refunded.append(charge.id)
            except PeerRefused as exc:  # already refunded in full (a repair with another key): nothing to undo
                log.info("order %s: repair refund of %s refused: %s", order.pk, charge.id, exc.message)
                refused.append(charge.id)
            except PeerUnavailable as exc:
                raise Unavailable(f"payment could not refund charge {charge.id}: {exc}") from exc
        results.append(
            {"order_id": order.pk, "kept": order.charge_id or None, "refunded": refunded, "refused": refused}
        )
    return results
