"""Settings package of the order service; it also loads the Celery app so that tasks bind to it."""

from .celery import app as celery_app

__all__ = ("celery_app",)
