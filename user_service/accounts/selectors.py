"""Every read of the user service."""

from __future__ import annotations

from django.db.models import Count, Q, QuerySet
from rest_framework.exceptions import NotFound

from .exceptions import AccountUnavailable
from .models import Address, User


def user_get_active(*, user_id: int) -> User:
    """The row behind a user token; a 401 when it was deleted or disabled since."""
    user = User.objects.filter(pk=user_id, is_active=True).first()
    if user is None:
        raise AccountUnavailable()
    return user


def user_list(*, search: str = "") -> QuerySet[User]:
    """Every user (for staff), with the count of their addresses, searchable by email or name."""
    users = User.objects.annotate(address_count=Count("addresses")).order_by("id")
    if search:
        users = users.filter(Q(email__icontains=search) | Q(name__icontains=search))
    return users


def address_list(*, user_id: int) -> QuerySet[Address]:
    return Address.objects.filter(user_id=user_id).order_by("id")


def address_get(*, user_id: int, address_id: int) -> Address:
    """One address of this user; another user's address is a 404, as if it did not exist."""
    address = Address.objects.filter(pk=address_id, user_id=user_id).first()
    if address is None:
        # DRF's NotFound, not Django's Http404: the chassis error handler gives Http404 the code "error".
        raise NotFound("No such address.")
    return address
