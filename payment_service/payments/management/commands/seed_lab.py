"""``manage.py seed_lab``: the payment service has nothing to seed; it prints the test cards.

Cards are tokenised by customers themselves, so there is no data to create and
running the command again changes nothing.
"""

from django.core.management.base import BaseCommand

from payments.cards import APPROVE, DECLINE, INSUFFICIENT_FUNDS, TEST_CARDS

OUTCOME_LABELS = {APPROVE: "approves", DECLINE: "card_declined", INSUFFICIENT_FUNDS: "insufficient_funds"}


class Command(BaseCommand):
    help = "Print the lab's test cards (the payment service has no data to seed)."

    def handle(self, *args, **options):
        cards = ", ".join(f"{number} {OUTCOME_LABELS[outcome]}" for number, outcome in TEST_CARDS.items())
        self.stdout.write(f"payment: nothing to seed; test cards: {cards} (any other Luhn-valid number approves)")
