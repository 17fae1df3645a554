from django.db import models


class Product(models.Model):
    """The catalog's fields, stock included, in one table."""

    sku = models.CharField(max_length=32, unique=True)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    price_cents = models.BigIntegerField()
    currency = models.CharField(max_length=3, default="EUR")
    active = models.BooleanField(default=True)
    available = models.IntegerField(default=0)

    class Meta:
        app_label = "benchsite"
        db_table = "bench_product"

    def __str__(self) -> str:
        return self.sku
