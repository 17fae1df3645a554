"""``manage.py expire_reservations``: return the stock of HELD reservations past their deadline.

Safe to run at any time and from several places at once; a scheduler (Celery
beat) can call it periodically.
"""

from django.core.management.base import BaseCommand
from django.utils import timezone

from catalog.services import reservations_expire


class Command(BaseCommand):
    help = "Expire HELD reservations past expires_at (their units go back to available)."

    def handle(self, *args, **options):
        expired = reservations_expire(now=timezone.now())
        self.stdout.write(f"expire_reservations: expired {expired} reservation(s).")
