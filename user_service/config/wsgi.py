"""WSGI entry point of the user service: ``gunicorn config.wsgi:application``.

The chassis builds the application so that tracing is installed before Django
loads its middleware.
"""

from chassis.wsgi import build_application

application = build_application()
