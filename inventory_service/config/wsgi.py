"""WSGI entry point of inventory_service: ``gunicorn config.wsgi:application``.

The chassis installs tracing before Django loads its middleware.
"""

from chassis.wsgi import build_application

application = build_application()
