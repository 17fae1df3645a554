"""Card numbers: normalisation, the Luhn check, the brand, and the lab's test cards.

Pure functions with no I/O. The number only ever lives in local variables of a
request; nothing here logs it, and callers keep only ``brand`` and ``last4``.
"""

from __future__ import annotations

import re

from django.views.decorators.debug import sensitive_variables

MIN_DIGITS = 12
MAX_DIGITS = 19

APPROVE = "approve"
DECLINE = "decline"
INSUFFICIENT_FUNDS = "insufficient_funds"

# The documented test cards; any other Luhn-valid number approves.
TEST_CARDS = {
    "4242424242424242": APPROVE,
    "4000000000000002": DECLINE,
    "4000000000009995": INSUFFICIENT_FUNDS,
}

_SEPARATORS = re.compile(r"[ \-]")
_DIGITS = re.compile(r"[0-9]+")


class InvalidCardNumber(ValueError):
    """The number is unusable; the message is safe to show (it never quotes the number)."""


@sensitive_variables("raw", "digits")
def normalise(raw: str) -> str:
    """The card's digits with spaces and dashes removed; ``InvalidCardNumber`` otherwise."""
    digits = _SEPARATORS.sub("", raw)
    if not digits:
        raise InvalidCardNumber("Enter the card number.")
    if not _DIGITS.fullmatch(digits):
        raise InvalidCardNumber("A card number contains digits only (spaces and dashes are allowed between them).")
    if not MIN_DIGITS <= len(digits) <= MAX_DIGITS:
        raise InvalidCardNumber(f"A card number has {MIN_DIGITS} to {MAX_DIGITS} digits.")
    if not luhn_valid(digits):
        raise InvalidCardNumber("This card number is not valid (check digit mismatch).")
    return digits


@sensitive_variables("digits")
def luhn_valid(digits: str) -> bool:
    """True when the string of ASCII digits passes the Luhn (mod 10) check."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if position % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


@sensitive_variables("digits")
def brand_of(digits: str) -> str:
    """``visa``, ``mastercard``, ``amex``, ``discover`` or ``unknown``, from the number's prefix."""
    if digits.startswith("4"):
        return "visa"
    if digits[:2] in ("34", "37"):
        return "amex"
    two, four = int(digits[:2]), int(digits[:4])
    if 51 <= two <= 55 or 2221 <= four <= 2720:
        return "mastercard"
    if digits.startswith(("6011", "65")) or 644 <= int(digits[:3]) <= 649:
        return "discover"
    return "unknown"


def cvc_length(brand: str) -> int:
    return 4 if brand == "amex" else 3


@sensitive_variables("digits")
def outcome_of(digits: str) -> str:
    """What charging this card will do in the lab: ``approve``, ``decline`` or ``insufficient_funds``."""
    return TEST_CARDS.get(digits, APPROVE)
