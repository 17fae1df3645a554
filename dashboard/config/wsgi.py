"""WSGI entry point of the dashboard: ``gunicorn config.wsgi:application``.

Tracing is installed after Django: the dashboard traces only the flows it
runs, and stores its own spans through the collector's models.
"""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

application = get_wsgi_application()

from console import tracing  # noqa: E402 — needs the apps loaded

tracing.install()
