"""Celery tasks of the order service: thin wrappers around ``orders.background``.

``orders.saga_run`` (queue ``saga``) runs a checkout saga in the background;
the three others (queue ``beat``) are the periodic jobs of ``CELERY_BEAT_SCHEDULE``.
Every task may run twice (a message is acknowledged only once its task has
finished, so a killed worker's message is delivered again): each is idempotent.
"""

from __future__ import annotations

from celery import shared_task

from . import background


@shared_task(bind=True, name="orders.saga_run", max_retries=None)
def order_saga_task(self, order_id: int) -> None:
    """Run the saga of ``order_id``; while a peer is down, retry with backoff (same task id, so same lease)."""
    countdown = background.order_saga_work(order_id=order_id, runner=self.request.id, attempt=self.request.retries)
    if countdown is not None:
        raise self.retry(countdown=countdown)


@shared_task(name="orders.sagas_recover")
def sagas_recover_task() -> int:
    return background.orders_recover_stalled()


@shared_task(name="orders.reservations_expire")
def reservations_expire_task() -> int | None:
    return background.reservations_expire_due()


@shared_task(name="orders.shipping_advance")
def shipping_advance_task() -> dict:
    return background.orders_advance_shipping()
