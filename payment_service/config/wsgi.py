"""WSGI entry point of the payment service: ``gunicorn config.wsgi:application`` (tracing installed first)."""

from chassis.wsgi import build_application

application = build_application()
