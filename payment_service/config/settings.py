"""Settings of the payment service.

Everything shared comes from :func:`chassis.settings.build` (environment first,
then ``$LAB_ROOT/var/env/payment.env``, then one-machine defaults); only what
is the payment service's own is added below.
"""

from pathlib import Path

from chassis.settings import build

BASE_DIR = Path(__file__).resolve().parent.parent

globals().update(
    build(
        service="payment",
        base_dir=BASE_DIR,
        apps=["payments"],
        title="Payment service",
        description=(
            "Tokenised cards, charges, refunds and an append-only ledger. "
            "Card numbers are checked (Luhn) and never stored: only a token, the brand and the last four digits. "
            "Test cards: 4242424242424242 approves, 4000000000000002 is declined, "
            "4000000000009995 fails for insufficient funds; any other Luhn-valid number approves."
        ),
    )
)
