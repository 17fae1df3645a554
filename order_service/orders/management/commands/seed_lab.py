"""``manage.py seed_lab``: the order service starts with no orders, so there is nothing to seed."""

from django.core.management.base import BaseCommand

from orders.models import Order


class Command(BaseCommand):
    help = "Seed the lab's data (orders come from checkouts only: nothing to seed). Idempotent."

    def handle(self, *args, **options):
        count = Order.objects.count()
        self.stdout.write(f"order: nothing to seed (orders come from checkouts); {count} order(s) in the database.")
