"""The catalog app: products, stock levels, reservations and the stock ledger."""

from django.apps import AppConfig


class CatalogConfig(AppConfig):
    name = "catalog"
    verbose_name = "Catalog and stock"
    default_auto_field = "django.db.models.BigAutoField"
