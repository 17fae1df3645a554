"""Input serializers (bounded, validating shapes only) and output serializers."""

from __future__ import annotations

from rest_framework import serializers

from chassis.fields import CountryField, StrictCharField, StrictEmailField, TextField

from .models import Address, User

EMAIL_MAX = 254
PASSWORD_MAX = 128
PASSWORD_MIN = 8  # as AUTH_PASSWORD_VALIDATORS' MinimumLengthValidator
NAME_MAX = 150
TOKEN_MAX = 2048


def _password_field(**kwargs) -> serializers.CharField:
    # Spaces are part of a password; the upper bound keeps hashing cheap to refuse.
    return StrictCharField(
        max_length=PASSWORD_MAX, trim_whitespace=False, write_only=True, style={"input_type": "password"}, **kwargs
    )


def _new_password_field(**kwargs) -> serializers.CharField:
    # Django's MinimumLengthValidator (8) refuses a shorter one too; here the schema shows it (minLength).
    return _password_field(
        min_length=PASSWORD_MIN,
        error_messages={
            "min_length": f"This password is too short. It must contain at least {PASSWORD_MIN} characters."
        },
        **kwargs,
    )


# --- auth ---------------------------------------------------------------------


class RegisterInput(serializers.Serializer):
    email = StrictEmailField(max_length=EMAIL_MAX)
    password = _new_password_field(
        help_text="At least 8 characters, not too common, not all digits, not like your email or name.",
    )
    name = TextField(max_length=NAME_MAX)


class LoginInput(serializers.Serializer):
    email = StrictEmailField(max_length=EMAIL_MAX)
    password = _password_field()


class RefreshInput(serializers.Serializer):
    refresh = StrictCharField(max_length=TOKEN_MAX, help_text="The refresh token from login or a previous refresh.")


class TokenPairOutput(serializers.Serializer):
    access = serializers.CharField(help_text="Send as `Authorization: Bearer <access>`.")
    refresh = serializers.CharField(help_text="Single use: trade it at /api/auth/refresh/ for a new pair.")
    token_type = serializers.CharField(help_text='Always "Bearer".')
    expires_in = serializers.IntegerField(help_text="Lifetime of the access token, in seconds.")


class UserCreatedOutput(serializers.ModelSerializer):
    class Meta:
        model = User
        fields = ["id", "email", "name"]
        read_only_fields = fields


# --- the logged-in user ---------------------------------------------------------


class MeOutput(serializers.ModelSerializer):
    class Meta:
        model = User
        fields = ["id", "email", "name", "is_staff", "date_joined"]
        read_only_fields = fields


class MeUpdateInput(serializers.Serializer):
    name = TextField(max_length=NAME_MAX)


class PasswordChangeInput(serializers.Serializer):
    old_password = _password_field()
    new_password = _new_password_field()


class AddressInput(serializers.Serializer):
    label = TextField(max_length=50, help_text='A name for this address, such as "Home".')
    line1 = TextField(max_length=200)
    line2 = TextField(max_length=200, required=False, allow_blank=True, default="")
    city = TextField(max_length=100)
    postal_code = TextField(max_length=20)
    country = CountryField(help_text="ISO 3166-1 alpha-2 code, such as FR.")


class AddressUpdateInput(AddressInput):
    """PATCH: any subset of the address fields, at least one."""

    schema_requires_one_of = True  # chassis.schema: an anyOf in the OpenAPI schema

    def validate(self, attrs):
        if not attrs:
            raise serializers.ValidationError(f"Send at least one of: {', '.join(self.fields)}.")
        return attrs


class AddressOutput(serializers.ModelSerializer):
    class Meta:
        model = Address
        fields = ["id", "label", "line1", "line2", "city", "postal_code", "country", "created_at"]
        read_only_fields = fields


# --- staff ------------------------------------------------------------------------


class UserSearchQuery(serializers.Serializer):
    search = StrictCharField(max_length=100, required=False, allow_blank=True, default="")


class UserListOutput(serializers.ModelSerializer):
    address_count = serializers.IntegerField(read_only=True)

    class Meta:
        model = User
        fields = ["id", "email", "name", "is_staff", "is_active", "date_joined", "last_login", "address_count"]
        read_only_fields = fields
