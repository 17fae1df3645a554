"""The checkout saga: reserve stock (inventory), charge (payment), commit the reservation (inventory).

* :mod:`.steps` — the steps, one per peer call, and the table the runner dispatches on;
* :mod:`.runner` — runs a saga from its ``saga_step`` to the end, resumes it, gives it up;
* :mod:`.progress` — the bookkeeping: each outcome recorded on the order with its timeline events;
* :mod:`.leases` — the clock, and the lease that lets one runner at a time work on an order;
* :mod:`.queue` — handing a saga to the Celery worker.

Where a checkout runs depends on the lab's saga mode (``orders.lab``): in the
request (``sync``), or queued for the Celery worker (``async``), which retries
a peer that is down until the order's ``saga_deadline`` and then compensates
(``orders.background``).

The time is read as ``leases.clock()``: tests replace ``orders.saga.leases.clock``.
"""

from .leases import (
    IN_PROGRESS,
    lease_alive,
    lease_end,
    order_saga_claim,
    order_saga_received,
    order_saga_release,
    request_runner,
    task_runner,
)
from .progress import SagaMoved, record_event, record_events, with_lines_and_history
from .queue import order_saga_enqueue, order_saga_wait, send_saga_task
from .runner import MAX_STEPS_PER_RUN, order_saga_give_up, order_saga_resume, order_saga_run
from .steps import CANCELLED_BY_CUSTOMER, SagaPolicy

__all__ = [
    "CANCELLED_BY_CUSTOMER",
    "IN_PROGRESS",
    "MAX_STEPS_PER_RUN",
    "SagaMoved",
    "SagaPolicy",
    "lease_alive",
    "lease_end",
    "order_saga_claim",
    "order_saga_enqueue",
    "order_saga_give_up",
    "order_saga_received",
    "order_saga_release",
    "order_saga_resume",
    "order_saga_run",
    "order_saga_wait",
    "record_event",
    "record_events",
    "request_runner",
    "send_saga_task",
    "with_lines_and_history",
    "task_runner",
]
