"""Reads of the orders app: who may see which orders, fetched without N+1 queries."""

from __future__ import annotations

from django.db.models import QuerySet
from rest_framework.exceptions import NotFound

from chassis.auth import LabUser

from .models import Order


def order_list(*, user: LabUser, customer_id: int | None = None, status: str | None = None) -> QuerySet[Order]:
    """The orders ``user`` may see, newest first: their own; staff see all (or one customer's)."""
    if user.is_staff:
        orders = Order.objects.all() if customer_id is None else Order.objects.filter(customer_id=customer_id)
    else:
        orders = Order.objects.filter(customer_id=user.id)
    if status:
        orders = orders.filter(status=status)
    return orders.prefetch_related("lines", "events").order_by("-created_at", "-id")


def order_as_answered(*, order: Order, user: LabUser) -> Order:
    """``order`` as it is when its writer holds its lines and history (a checkout just done), else read for ``user``.

    Only the order's own customer (or staff) is answered from memory, as :func:`order_get_for_user` would.
    """
    held = getattr(order, "_prefetched_objects_cache", {})
    if "lines" in held and "events" in held and (order.customer_id == user.id or user.is_staff):
        return order
    return order_get_for_user(order_id=order.pk, user=user)


def order_get_for_user(*, order_id: int, user: LabUser) -> Order:
    """One order with its lines and history; another customer's order is a 404 (staff see all)."""
    order = Order.objects.prefetch_related("lines", "events").filter(pk=order_id).first()
    if order is None or (order.customer_id != user.id and not user.is_staff):
        raise NotFound("No such order.")
    return order


def order_list_for_reconciliation(*, status: str | None = None) -> QuerySet[Order]:
    """Every order with the peers' ids it holds, for the lab's consistency audit."""
    orders = Order.objects.all()
    if status:
        orders = orders.filter(status=status)
    return orders.order_by("-created_at", "-id")
