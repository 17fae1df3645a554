"""WSGI entry point of the order service: ``gunicorn config.wsgi:application`` (tracing installed first)."""

from chassis.wsgi import build_application

application = build_application()
