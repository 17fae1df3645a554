"""The Celery application of the order service: the asynchronous saga and the periodic jobs.

Run from ``order_service/``::

    celery -A config worker --loglevel INFO --pool threads --concurrency 4 --hostname worker@%h --queues saga,beat
    celery -A config beat --loglevel INFO --schedule $LAB_ROOT/var/run/celerybeat-schedule

Its configuration is the ``CELERY_*`` part of ``config/settings.py`` (broker,
late acknowledgement, queues, beat schedule). Every task carries the request id
of whoever queued it (so the worker's log lines and its calls to peers show
the same id) and, with tracing on, the W3C trace context: one checkout is one
trace, from the HTTP request through the worker to inventory and payment.
"""

from __future__ import annotations

import os

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("order")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

REQUEST_ID_HEADER = "lab_request_id"


@signals.before_task_publish.connect(weak=False)
def _send_request_id(headers=None, **_kwargs) -> None:
    from chassis.requestid import get_request_id

    request_id = get_request_id()
    if headers is not None and request_id != "-":
        headers.setdefault(REQUEST_ID_HEADER, request_id)


@signals.task_prerun.connect(weak=False)
def _bind_request_id(task=None, **_kwargs) -> None:
    from chassis.requestid import bind_request_id

    # A task queued outside any request (a beat tick) gets an id of its own.
    bind_request_id(getattr(task.request, REQUEST_ID_HEADER, None) if task is not None else None)


@signals.task_postrun.connect(weak=False)
def _clear_request_id(**_kwargs) -> None:
    from chassis.requestid import clear_request_id

    clear_request_id()


@signals.task_received.connect(weak=False)
def _saga_task_received(request=None, **_kwargs) -> None:
    """A saga task reached this worker: shorten its order's lease (see ``saga.order_saga_received``)."""
    if request is None or request.name != "orders.saga_run" or not request.args:
        return
    import logging

    from celery.utils.time import maybe_iso8601

    from orders import saga

    try:
        eta = maybe_iso8601(request.eta) if request.eta else None
        saga.order_saga_received(order_id=int(request.args[0]), runner=request.id, eta=eta)
    except Exception as exc:  # noqa: BLE001 — the consumer must go on; the long lease still holds
        logging.getLogger("orders.background").warning("lease of task %s not shortened: %s", request.id, exc)


@signals.worker_process_init.connect(weak=False)
def _trace_worker_process(**_kwargs) -> None:
    """Tracing starts in each pool process, after the fork (the span exporter runs a thread)."""
    _start_tracing()


@signals.worker_init.connect(weak=False)
def _trace_threaded_worker(sender=None, **_kwargs) -> None:
    """A pool that does not fork (``--pool threads``, as the lab runs it) runs its tasks here: trace from here.

    A prefork pool must not: a tracer started before the fork would leave its children an exporter thread
    that no longer runs. They start their own (above).
    """
    from celery import concurrency
    from celery.concurrency.prefork import TaskPool as PreforkPool

    pool = concurrency.get_implementation(sender.pool_cls) if sender is not None else None
    if isinstance(pool, type) and not issubclass(pool, PreforkPool):
        _start_tracing()


def _start_tracing() -> None:
    from chassis import telemetry

    if telemetry.setup("worker", instrument_django=False):
        instrument_celery()


def instrument_celery() -> None:
    """Carry the trace context in every task message (publishing side) and continue it when the task runs."""
    from chassis import telemetry

    if not telemetry.enabled():
        return
    from opentelemetry.instrumentation.celery import CeleryInstrumentor

    instrumentor = CeleryInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument()
