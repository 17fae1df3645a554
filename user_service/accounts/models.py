"""Users, the refresh tokens issued to them, and their postal addresses.

This is the only user table of the lab: the other services know a user by the
integer id carried in the JWT (``sub``) and store it as a plain column.
"""

from django.contrib.auth.base_user import AbstractBaseUser, BaseUserManager
from django.contrib.auth.models import PermissionsMixin
from django.db import models
from django.utils import timezone

MAX_ADDRESSES_PER_USER = 20


def normalize_email(email: str) -> str:
    """The one spelling of an email the lab stores and looks up: trimmed, lower case."""
    return (email or "").strip().lower()


class UserManager(BaseUserManager):
    """Creates users keyed by email (also what ``manage.py createsuperuser`` calls)."""

    use_in_migrations = True

    def create_user(self, email: str, password: str | None = None, **extra):
        if not email:
            raise ValueError("Users need an email address.")
        user = self.model(email=normalize_email(email), **extra)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_superuser(self, email: str, password: str | None = None, **extra):
        extra.setdefault("is_staff", True)
        extra.setdefault("is_superuser", True)
        return self.create_user(email, password, **extra)

    def get_by_natural_key(self, username):
        return self.get(**{self.model.USERNAME_FIELD: normalize_email(username)})


class User(AbstractBaseUser, PermissionsMixin):
    """A customer (or a staff member) of the shop, who logs in with email and password."""

    email = models.EmailField(max_length=254, unique=True)
    name = models.CharField(max_length=150)
    is_active = models.BooleanField(default=True)
    is_staff = models.BooleanField(default=False)
    date_joined = models.DateTimeField(default=timezone.now)

    objects = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS = ["name"]

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.email


class RefreshToken(models.Model):
    """One refresh token issued at login or rotation, known by its ``jti``.

    A refresh token is accepted only while its row exists, is not revoked and
    has not expired; using it revokes it (rotation). ``revoked_at`` set on a
    token that is presented again means it leaked: every token of the user is
    then revoked.
    """

    jti = models.CharField(max_length=64, unique=True)
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="refresh_tokens")
    issued_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["user", "revoked_at"], name="refresh_user_revoked_idx")]

    def __str__(self) -> str:
        return f"refresh {self.jti} of user {self.user_id}"


class Address(models.Model):
    """A postal address of a user (at most ``MAX_ADDRESSES_PER_USER``)."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="addresses")
    label = models.CharField(max_length=50)
    line1 = models.CharField(max_length=200)
    line2 = models.CharField(max_length=200, blank=True, default="")
    city = models.CharField(max_length=100)
    postal_code = models.CharField(max_length=20)
    country = models.CharField(max_length=2, help_text="ISO 3166-1 alpha-2 code, upper case.")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.label}: {self.line1}, {self.city} ({self.country})"
