"""Writes the Celery worker runs: the asynchronous saga, and the periodic jobs beat triggers.

* :func:`order_saga_work` runs one attempt of a queued saga. A peer that is
  down is retried with capped exponential backoff (with jitter) until the
  order's ``saga_deadline``; then the saga gives up and compensates. The
  compensation itself has no deadline: it waits for the peers, so an order
  is never declared CANCELLED while money or stock may still be held for it.
* :func:`orders_recover_stalled` queues again every saga nobody runs: its
  lease expired because a request or a worker died mid-saga, or a task was lost.
* :func:`orders_advance_shipping` moves CONFIRMED orders to SHIPPED, then
  DELIVERED, as a (simulated) carrier would.
* :func:`reservations_expire_due` asks inventory to expire stale holds.

Time and randomness are injectable (``saga.leases.clock``, ``rng``) so the
backoff and the deadline are tested without waiting.
"""

from __future__ import annotations

import logging
import random
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q

from chassis.client import PeerUnavailable

from . import saga
from .clients import PeerRefused, inventory
from .models import Order, OrderEvent, OrderStatus, SagaStep
from .saga import leases

log = logging.getLogger("orders.background")

rng = random.Random()  # seedable in tests
MAX_BACKOFF_EXPONENT = 20


def retry_countdown(*, attempt: int, now: datetime, deadline: datetime | None, compensating: bool) -> float | None:
    """Seconds to wait before attempt ``attempt + 1``, or None when the saga must give up now.

    The wait is ``base * 2**attempt`` capped at the maximum, half of it random
    (so sagas stalled by one outage do not all come back at the same instant).
    A forward step never waits past its deadline: the last attempt is made at
    the deadline, and a failure after it means giving up. A compensation never gives up.
    """
    base = settings.ORDER_SAGA_RETRY_BACKOFF_SECONDS
    cap = settings.ORDER_SAGA_RETRY_BACKOFF_MAX_SECONDS
    delay = min(cap, base * 2 ** min(attempt, MAX_BACKOFF_EXPONENT))
    delay = delay / 2 + rng.uniform(0, delay / 2)
    if compensating or deadline is None:
        return delay
    left = (deadline - now).total_seconds()
    if left <= 0:
        return None
    return min(delay, left)


def order_saga_work(*, order_id: int, runner: str, attempt: int = 0) -> float | None:
    """Run the saga of ``order_id`` as the worker task ``runner``; return seconds until the next attempt, or None.

    None means there is nothing left for this task: the saga ended, or another
    runner holds it. A number means a peer is down: the task keeps the lease
    (so the recovery job leaves the order alone) and is retried after that long.
    """
    if not saga.order_saga_claim(order_id=order_id, runner=runner):
        log.info("order %s: saga ended or run by someone else; nothing to do", order_id)
        return None
    # A failure before the deadline waits; one after it gives up, and the compensation runs at once.
    for _ in range(2):
        try:
            saga.order_saga_run(order_id=order_id, on_unavailable="raise", runner=runner, keep_lease=True)
        except PeerUnavailable as exc:
            order = Order.objects.get(pk=order_id)
            if order.saga_runner != runner or order.saga_finished:
                saga.order_saga_release(order_id=order_id, runner=runner)
                return None
            compensating = order.saga_step == SagaStep.COMPENSATING
            countdown = retry_countdown(
                attempt=attempt, now=leases.clock(), deadline=order.saga_deadline, compensating=compensating
            )
            if countdown is None:
                log.warning(
                    "order %s: deadline passed with %s down at step %s; compensating",
                    order_id,
                    exc.peer,
                    order.saga_step,
                )
                try:
                    saga.order_saga_give_up(order_id=order_id, expect=order.saga_step, peer=exc.peer)
                except saga.SagaMoved:
                    return None
                continue
            if not saga.order_saga_wait(order_id=order_id, runner=runner, seconds=countdown, exc=exc):
                saga.order_saga_release(order_id=order_id, runner=runner)
                return None
            log.info(
                "order %s: %s unavailable at step %s (%s); next attempt in %.1f s",
                order_id,
                exc.peer,
                order.saga_step,
                exc.reason,
                countdown,
            )
            return countdown
        saga.order_saga_release(order_id=order_id, runner=runner)
        return None
    saga.order_saga_release(order_id=order_id, runner=runner)
    return None


def orders_recover_stalled(*, limit: int = 200) -> int:
    """Queue again every unfinished saga whose lease has expired; return how many were queued.

    Such a saga was left by a request or a worker that died mid-way, or by a
    task that was lost; a saga waiting for a retry holds its lease and is left alone.
    """
    now = leases.clock()
    stalled = (
        Order.objects.filter(saga_step__in=saga.IN_PROGRESS)
        .filter(Q(saga_lease_until__isnull=True) | Q(saga_lease_until__lte=now))
        .order_by("updated_at")
        .values_list("pk", flat=True)[:limit]
    )
    queued = 0
    for order_id in list(stalled):
        if saga.order_saga_enqueue(order_id=order_id, note="recovered: nobody was running this saga"):
            queued += 1
    if queued:
        log.info("recovery queued %d stalled saga(s) again", queued)
    return queued


_SHIPPING = (
    # from, to, history step, note
    (OrderStatus.SHIPPED, OrderStatus.DELIVERED, "delivered", "delivered (simulated carrier)"),
    (OrderStatus.CONFIRMED, OrderStatus.SHIPPED, "shipped", "shipped (simulated carrier)"),
)


def orders_advance_shipping(*, limit: int = 200) -> dict[str, int]:
    """Move orders along the simulated carrier: CONFIRMED → SHIPPED → DELIVERED.

    An order moves one step once it has been in its status for
    ``ORDER_SHIPPING_AFTER_SECONDS`` (``updated_at``), and only when no
    cancellation is running on it. Returns how many moved, by new status.
    """
    cutoff = leases.clock() - timedelta(seconds=settings.ORDER_SHIPPING_AFTER_SECONDS)
    moved = {}
    for source, target, step, note in _SHIPPING:
        due = (
            Order.objects.filter(status=source, saga_step=SagaStep.DONE, updated_at__lte=cutoff)
            .order_by("updated_at")
            .values_list("pk", flat=True)[:limit]
        )
        moved[target] = sum(_move(order_id, source, target, step, note, cutoff) for order_id in list(due))
    if any(moved.values()):
        log.info("shipping: %s", ", ".join(f"{count} {status}" for status, count in moved.items() if count))
    return moved


def _move(order_id: int, source: str, target: str, step: str, note: str, cutoff: datetime) -> bool:
    with transaction.atomic():
        order = Order.objects.select_for_update().get(pk=order_id)
        # A cancellation may have started since the list was read.
        if order.status != source or order.saga_step != SagaStep.DONE or order.updated_at > cutoff:
            return False
        order.status = target
        order.save(update_fields=["status", "updated_at"])
        OrderEvent.objects.create(order=order, status=target, step=step, note=note)
    return True


def reservations_expire_due() -> int | None:
    """Have inventory expire its stale holds; how many it expired, or None when it could not be asked."""
    try:
        expired = inventory.inventory_reservations_expire()
    except (PeerUnavailable, PeerRefused) as exc:
        log.warning("reservation expiry skipped: %s", exc)
        return None
    if expired:
        log.info("inventory expired %d stale reservation(s)", expired)
    return expired
