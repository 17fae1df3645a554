"""Reservations past their deadline: reservations_expire and `manage.py expire_reservations`."""

import io
import json
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from catalog.models import Reservation, StockMovement
from catalog.services import reservation_commit, reservation_create, reservation_release, reservations_expire

from .helpers import assert_stock_conserved, snapshot, stock_of

pytestmark = pytest.mark.django_db


@pytest.fixture
def product(make_product):
    return make_product("KB-001", stock=10)


def hold(quantity, *, key, ttl=60, now=None):
    reservation, _ = reservation_create(
        order_id="1", idempotency_key=key, lines=[{"sku": "KB-001", "quantity": quantity}], ttl_seconds=ttl, now=now
    )
    return reservation


def test_expire_returns_held_units_past_their_deadline_only(product):
    """Ensure only HELD reservations past expires_at expire, with EXPIRE movements; the rest is untouched."""
    now = timezone.now()
    due = hold(2, key="due-reservation", ttl=60, now=now - timedelta(seconds=61))
    not_due = hold(3, key="not-due-reservation", ttl=60, now=now)
    committed = hold(1, key="committed-reservation", ttl=10, now=now - timedelta(hours=1))
    reservation_commit(reservation_id=committed.pk)

    assert reservations_expire(now=now) == 1

    statuses = dict(Reservation.objects.values_list("idempotency_key", "status"))
    assert statuses == {
        "due-reservation": "EXPIRED",
        "not-due-reservation": "HELD",
        "committed-reservation": "COMMITTED",
    }
    stock = stock_of("KB-001")
    assert (stock.available, stock.reserved, stock.sold) == (6, 3, 1)
    assert list(StockMovement.objects.filter(kind="EXPIRE").values_list("quantity", "reservation_id")) == [(2, due.pk)]
    assert not_due.pk
    assert_stock_conserved()


def test_expire_twice_changes_nothing_the_second_time(product):
    """Ensure expiring is idempotent."""
    now = timezone.now()
    hold(2, key="due-reservation", now=now - timedelta(hours=1))
    reservations_expire(now=now)
    before = snapshot()

    assert reservations_expire(now=now) == 0
    assert snapshot() == before


def test_expired_reservation_cannot_be_committed_and_release_is_a_no_op(client, product, order_service):
    """Ensure an EXPIRED reservation answers 409 to commit and 200 unchanged to release."""
    reservation = hold(2, key="due-reservation", now=timezone.now() - timedelta(hours=1))
    reservations_expire(now=timezone.now())
    before = snapshot()

    commit = client.post(f"/internal/reservations/{reservation.pk}/commit/", **order_service)
    release = client.post(f"/internal/reservations/{reservation.pk}/release/", **order_service)

    assert commit.status_code == 409 and commit.json()["code"] == "reservation_not_held"
    assert commit.json()["status"] == "EXPIRED"
    assert release.status_code == 200 and release.json()["status"] == "EXPIRED"
    assert snapshot() == before


def test_overdue_but_not_swept_reservation_can_still_be_committed(product):
    """Ensure a HELD reservation past expires_at is committed if the sweeper has not expired it (documented choice)."""
    reservation = hold(2, key="late-reservation", now=timezone.now() - timedelta(hours=1))

    assert reservation_commit(reservation_id=reservation.pk).status == "COMMITTED"
    assert reservations_expire(now=timezone.now()) == 0
    assert stock_of("KB-001").sold == 2
    assert_stock_conserved()


def test_released_reservation_is_not_expired(product):
    """Ensure the sweeper leaves released reservations alone."""
    reservation = hold(2, key="released-reservation", now=timezone.now() - timedelta(hours=1))
    reservation_release(reservation_id=reservation.pk)

    assert reservations_expire(now=timezone.now()) == 0
    assert Reservation.objects.get().status == "RELEASED"


def test_replay_of_an_expired_reservation_answers_it_as_it_is(client, product, order_service):
    """Ensure a replayed request for an expired reservation gets it back (EXPIRED), and reserves nothing."""
    reservation = hold(2, key="order-1-reserve", now=timezone.now() - timedelta(hours=1))
    reservations_expire(now=timezone.now())
    before = snapshot()

    response = client.post(
        "/internal/reservations/",
        json.dumps(
            {"order_id": "1", "idempotency_key": "order-1-reserve", "lines": [{"sku": "KB-001", "quantity": 2}]}
        ),
        content_type="application/json",
        **order_service,
    )

    assert response.status_code == 200
    assert (response.json()["id"], response.json()["status"]) == (str(reservation.pk), "EXPIRED")
    assert snapshot() == before


def test_expire_reservations_command(product):
    """Ensure the management command expires what is due and says how many."""
    hold(1, key="due-reservation-1", now=timezone.now() - timedelta(hours=1))
    hold(1, key="due-reservation-2", now=timezone.now() - timedelta(hours=1))
    out = io.StringIO()

    call_command("expire_reservations", stdout=out)

    assert out.getvalue().strip() == "expire_reservations: expired 2 reservation(s)."
    assert stock_of("KB-001").available == 10


# --- POST /internal/reservations/expire/ (order_service's scheduler) --------------------------


def test_expire_endpoint_expires_what_is_due_and_says_how_many(client, product, order_service):
    """Ensure the internal expire endpoint expires due reservations only and answers their count; twice is a no-op."""
    hold(2, key="due-reservation-1", now=timezone.now() - timedelta(hours=1))
    hold(1, key="due-reservation-2", now=timezone.now() - timedelta(hours=1))
    hold(3, key="fresh-reservation", ttl=600)

    first = client.post("/internal/reservations/expire/", **order_service)
    second = client.post("/internal/reservations/expire/", **order_service)

    assert (first.status_code, first.json()) == (200, {"expired": 2})
    assert (second.status_code, second.json()) == (200, {"expired": 0})
    assert dict(Reservation.objects.values_list("idempotency_key", "status")) == {
        "due-reservation-1": "EXPIRED",
        "due-reservation-2": "EXPIRED",
        "fresh-reservation": "HELD",
    }
    assert (stock_of("KB-001").available, stock_of("KB-001").reserved) == (7, 3)
    assert_stock_conserved()


def test_expire_endpoint_is_for_order_service_only(
    client, product, customer, staff, dashboard_service, payment_service
):
    """Ensure nobody but order_service may trigger the expiry, and a refusal expires nothing."""
    hold(2, key="due-reservation-1", now=timezone.now() - timedelta(hours=1))
    before = snapshot()

    assert client.post("/internal/reservations/expire/").status_code == 401
    for headers in (customer, staff, dashboard_service, payment_service):
        assert client.post("/internal/reservations/expire/", **headers).status_code == 403
    assert snapshot() == before


def test_expire_endpoint_refuses_other_methods(client, order_service):
    """Ensure GET on the expire endpoint is a 405 in the error format, not a silent sweep."""
    response = client.get("/internal/reservations/expire/", **order_service)

    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"
