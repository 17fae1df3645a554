"""Handing sagas to the Celery worker: queue a saga nobody runs, send its task, hold it while the task waits.

A queued task holds the lease of the order it will run (its task id is the
runner's name), so nobody else starts the saga meanwhile.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from functools import partial

from django.conf import settings
from django.db import transaction

from chassis.client import PeerUnavailable

from .. import lab
from ..models import Order
from . import leases
from .progress import forget_held, record_event

log = logging.getLogger("orders.saga")


def order_saga_enqueue(*, order_id: int, note: str) -> bool:
    """Hand a saga nobody runs to the worker: take its lease for a new task, record ``note``, queue the task.

    Returns False (and does nothing) when the saga has ended or someone holds
    its lease. An order that never had a deadline (its checkout ran in a
    request) gets one counted from its creation.
    """
    runner = leases.task_runner()
    with transaction.atomic():
        order = Order.objects.select_for_update().get(pk=order_id)
        if order.saga_finished or leases.lease_alive(order):
            return False
        order.saga_lease_until = leases.lease_end()
        order.saga_runner = runner
        if order.saga_deadline is None:
            order.saga_deadline = order.created_at + timedelta(seconds=lab.saga_settings()["deadline_seconds"])
        order.save(update_fields=["saga_lease_until", "saga_runner", "saga_deadline", "updated_at"])
        record_event(order, "queued", f"{note} (at step {order.saga_step})")
        send_saga_task(order_id=order_id, runner=runner)
    return True


def send_saga_task(*, order_id: int, runner: str, answered: Order | None = None) -> None:
    """Queue the worker's task for this order, named ``runner`` (the lease's holder), once the transaction commits.

    Called inside the transaction that hands the order to ``runner``: a
    transaction rolled back queues nothing, and the worker never runs an order
    it cannot see yet. If the broker cannot take the task, the lease is given
    back so that the recovery job queues the saga again as soon as the broker is back.
    ``answered``, the copy a request answers from (its lines and history as written), is then
    read again instead: its lease and history have changed.
    """
    transaction.on_commit(partial(_publish, order_id=order_id, runner=runner, answered=answered))


def _publish(*, order_id: int, runner: str, answered: Order | None = None) -> None:
    from ..tasks import order_saga_task  # tasks import this package

    try:
        order_saga_task.apply_async(args=[order_id], task_id=runner)
    except Exception as exc:  # noqa: BLE001 — whatever the transport raises, the order must not be lost
        log.warning(
            "order %s: the saga could not be queued (%s: %s); recovery will queue it again",
            order_id,
            type(exc).__name__,
            exc,
        )
        leases.order_saga_release(order_id=order_id, runner=runner)
        order = Order.objects.get(pk=order_id)
        record_event(order, "queue_failed", "the worker's queue is unreachable; the saga will be queued again")
        if answered is not None:
            forget_held(answered)


def order_saga_wait(*, order_id: int, runner: str, seconds: float, exc: PeerUnavailable) -> bool:
    """Keep the lease while ``runner`` waits ``seconds`` for a peer to come back; record the wait once per streak.

    Returns False when another runner took the order over meanwhile.
    """
    with transaction.atomic():
        order = Order.objects.select_for_update().get(pk=order_id)
        if order.saga_runner != runner or order.saga_finished:
            return False
        lease_seconds = seconds + settings.ORDER_SAGA_TASK_LEASE_SECONDS
        order.saga_lease_until = leases.clock() + timedelta(seconds=lease_seconds)
        order.save(update_fields=["saga_lease_until", "updated_at"])
        last = order.events.order_by("-id").first()
        if last is None or last.step != "waiting":
            record_event(
                order, "waiting", f"waiting: {exc.peer} unavailable ({exc.reason}); the worker retries with backoff"
            )
    return True
