"""Who runs a saga now: the clock, the runners' names, and the lease on the order.

Only one runner works on an order at a time: it holds a lease
(``saga_lease_until``, with its name in ``saga_runner``) taken under a row
lock; another runner that finds a live lease leaves the order alone. A queued
task holds the lease of the order it will run, so nobody else starts it meanwhile.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from ..models import Order, SagaStep

clock = timezone.now  # injectable in tests: every lease and deadline reads the time here (as ``leases.clock()``)

IN_PROGRESS = tuple(step for step in SagaStep.values if step not in (SagaStep.NONE, SagaStep.DONE))


def request_runner() -> str:
    return f"request-{uuid.uuid4().hex}"


def task_runner() -> str:
    # Also the Celery task's id: a redelivered or retried task keeps it, and so keeps its lease.
    return f"task-{uuid.uuid4()}"


def is_task(runner: str) -> bool:
    return runner.startswith("task-")


def lease_end(*, held_by_worker: bool = False):
    """When a lease taken now runs out.

    A request, or a task still waiting in the broker, holds it for
    ``ORDER_SAGA_LEASE_SECONDS``; a task a worker has received holds it for the
    shorter ``ORDER_SAGA_TASK_LEASE_SECONDS``, renewed at every step, so that the
    sagas of a killed worker are recovered soon after, not minutes later.
    """
    seconds = settings.ORDER_SAGA_TASK_LEASE_SECONDS if held_by_worker else settings.ORDER_SAGA_LEASE_SECONDS
    return clock() + timedelta(seconds=seconds)


def lease_alive(order: Order) -> bool:
    return order.saga_lease_until is not None and order.saga_lease_until > clock()


def order_saga_claim(*, order_id: int, runner: str) -> bool:
    """Take the lease of an unfinished saga for ``runner``: free, expired, or already its own (a redelivered task)."""
    with transaction.atomic():
        order = Order.objects.select_for_update().get(pk=order_id)
        if order.saga_finished or (lease_alive(order) and order.saga_runner != runner):
            return False
        order.saga_lease_until = lease_end(held_by_worker=True)
        order.saga_runner = runner
        order.save(update_fields=["saga_lease_until", "saga_runner"])
    return True


def order_saga_received(*, order_id: int, runner: str, eta: datetime | None = None) -> None:
    """A worker has taken the task ``runner`` from the broker: its lease now lasts until ``eta`` plus the task lease.

    From here on, if that worker dies, the saga comes back within seconds
    (recovery) instead of after the long lease of a task waiting in the broker.
    """
    start = max(clock(), eta) if eta is not None else clock()
    Order.objects.filter(pk=order_id, saga_runner=runner, saga_step__in=IN_PROGRESS).update(
        saga_lease_until=start + timedelta(seconds=settings.ORDER_SAGA_TASK_LEASE_SECONDS)
    )


def order_saga_release(*, order_id: int, runner: str) -> None:
    """Give the lease back, if ``runner`` still holds it (another runner may have taken over since)."""
    Order.objects.filter(pk=order_id, saga_runner=runner).update(saga_lease_until=None)
