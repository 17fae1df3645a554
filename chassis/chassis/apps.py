"""Django app config for the chassis (it has no models)."""

from django.apps import AppConfig


class ChassisConfig(AppConfig):
    name = "chassis"
    verbose_name = "Microservice chassis"

    def ready(self):
        from django.core.signals import request_finished

        from . import schema  # noqa: F401  registers the OpenAPI auth extension
        from .requestid import clear_request_id

        request_finished.connect(clear_request_id, dispatch_uid="chassis.clear_request_id")
