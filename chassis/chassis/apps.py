"""Django app config for the chassis (it has no models)."""

from django.apps import AppConfig


class ChassisConfig(AppConfig):
    name = "chassis"
    verbose_name = "Microservice chassis"

    def ready(self):
        from . import schema  # noqa: F401  registers the OpenAPI auth extension
