"""Input fields every service validates text with the same way: strings only, no control characters.

Bidirectional overrides and isolates let a name display as something else (in a staff list, on a
shipping label), so they count as control characters here.
"""

from __future__ import annotations

import unicodedata

from rest_framework import serializers

from .countries import COUNTRY_CODES


class _StringOnly:
    """Refuse numbers and booleans where a string is expected (DRF would turn 12 into "12")."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("not_a_string")
        return super().to_internal_value(data)


class StrictCharField(_StringOnly, serializers.CharField):
    default_error_messages = {"not_a_string": "Must be a string."}


class StrictEmailField(_StringOnly, serializers.EmailField):
    default_error_messages = {"not_a_string": "Must be a string."}


_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def no_control_characters(value: str) -> None:
    for char in value:
        if char in _BIDI_CONTROLS or unicodedata.category(char) == "Cc":
            raise serializers.ValidationError(f"Must not contain control characters (found U+{ord(char):04X}).")


class TextField(StrictCharField):
    """One line of human-readable text: a string, bounded, without control characters."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.validators.append(no_control_characters)


class CountryField(StrictCharField):
    """An ISO 3166-1 alpha-2 code, accepted in any case and stored in upper case."""

    def __init__(self, **kwargs):
        super().__init__(min_length=2, max_length=2, **kwargs)

    def to_internal_value(self, data):
        value = super().to_internal_value(data).upper()
        if value not in COUNTRY_CODES:
            raise serializers.ValidationError(
                f'"{value}" is not an ISO 3166-1 alpha-2 country code (such as FR, DE, US).'
            )
        return value
