"""The WSGI application of a lab service, with tracing installed first.

A service's ``config/wsgi.py``::

    from chassis.wsgi import build_application
    application = build_application()
"""

import os


def build_application():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    from django.conf import settings

    from . import telemetry

    telemetry.setup(settings.SERVICE_NAME)
    from django.core.wsgi import get_wsgi_application

    return get_wsgi_application()
