"""Card number rules: normalisation, Luhn, brand, test-card outcomes (no database)."""

import pytest

from payments import cards


@pytest.mark.parametrize(
    "raw, digits",
    [
        ("4242424242424242", "4242424242424242"),
        ("4242 4242 4242 4242", "4242424242424242"),
        ("4242-4242-4242-4242", "4242424242424242"),
    ],
)
def test_normalise_strips_spaces_and_dashes(raw, digits):
    """Ensure spaces and dashes between digits are ignored."""
    assert cards.normalise(raw) == digits


@pytest.mark.parametrize(
    "raw",
    [
        "4242424242424241",  # check digit wrong
        "4242x42424242424",  # letter
        "４２４２４２４２４２４２４２４２",  # full-width digits are not ASCII digits
        "42424242424",  # 11 digits
        "42424242424242424242",  # 20 digits
        " - ",
    ],
)
def test_normalise_refuses_bad_numbers_without_quoting_them(raw):
    """Ensure a bad number is refused and the message never contains it."""
    with pytest.raises(cards.InvalidCardNumber) as caught:
        cards.normalise(raw)
    assert raw.strip() not in str(caught.value) or not raw.strip()


@pytest.mark.parametrize(
    "number, brand",
    [
        ("4242424242424242", "visa"),
        ("5555555555554444", "mastercard"),
        ("2223003122003222", "mastercard"),
        ("378282246310005", "amex"),
        ("371449635398431", "amex"),
        ("6011111111111117", "discover"),
        ("6445644564456445", "discover"),
        ("3056930009020004", "unknown"),
    ],
)
def test_brand_from_prefix(number, brand):
    """Ensure the brand is read from the number's prefix."""
    assert cards.luhn_valid(number)
    assert cards.brand_of(number) == brand


def test_test_cards_outcomes():
    """Ensure the documented test cards decide the outcome and other numbers approve."""
    assert cards.outcome_of("4242424242424242") == "approve"
    assert cards.outcome_of("4000000000000002") == "decline"
    assert cards.outcome_of("4000000000009995") == "insufficient_funds"
    assert cards.outcome_of("5555555555554444") == "approve"
    assert all(cards.luhn_valid(number) for number in cards.TEST_CARDS)
