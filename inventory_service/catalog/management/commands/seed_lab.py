"""``manage.py seed_lab``: create the demo catalog. Idempotent.

Only missing products are created (with their initial stock); existing ones,
their prices and their stock are never touched, so running it on a lab in use
loses nothing.
"""

from django.core.management.base import BaseCommand

from catalog.models import Product
from catalog.seed import PRODUCTS
from catalog.services import product_create
from chassis.errors import InvalidRequest


class Command(BaseCommand):
    help = "Create the lab's demo catalog (missing products only)."

    def handle(self, *args, **options):
        existing = set(Product.objects.filter(sku__in=[row[0] for row in PRODUCTS]).values_list("sku", flat=True))
        created = 0
        # One transaction per product: an interrupted run is completed by the next one.
        for sku, name, description, price_cents, initial_stock in PRODUCTS:
            if sku in existing:
                continue
            try:
                product_create(
                    sku=sku, name=name, description=description, price_cents=price_cents, initial_stock=initial_stock
                )
                created += 1
            except InvalidRequest as exc:
                if not (exc.fields and "sku" in exc.fields):  # the sku was created meanwhile by a concurrent seed_lab
                    raise
        present = len(PRODUCTS) - created
        self.stdout.write(f"seed_lab: created {created} products, {present} already present.")
