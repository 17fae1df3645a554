"""Django app config of the orders app: it adds the broker to /health/ and /metrics, and traces Celery."""

from django.apps import AppConfig


class OrdersConfig(AppConfig):
    name = "orders"
    verbose_name = "Orders"

    def ready(self):
        from chassis import health, metrics
        from config.celery import instrument_celery

        from . import broker

        health.CHECKS["broker"] = broker.check_broker
        metrics.register_live_gauge(
            "lab_celery_queue_depth",
            "Tasks waiting in the worker's queues (Redis broker only).",
            ["queue"],
            broker.queue_depth_samples,
        )
        # Publishing side: the trace context of the request travels in each task message.
        instrument_celery()
