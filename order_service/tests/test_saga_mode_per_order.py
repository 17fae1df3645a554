"""The lab admin's choice of saga mode for one order (X-Lab-Saga-Mode), leaving the lab's mode alone."""

import pytest

from chassis.testing import service_token
from orders import lab
from orders.models import Order
from tests.conftest import new_key, order_body

pytestmark = pytest.mark.django_db


def _place(client, **headers):
    return client.post("/api/orders/", order_body(), format="json", HTTP_IDEMPOTENCY_KEY=new_key(), **headers)


def test_the_dashboard_may_run_one_checkout_async_while_the_lab_stays_sync(alice, queued, fake_inventory):
    """Ensure a customer's order sent with the dashboard's admin token runs async (202, queued), and only it."""
    assert lab.saga_settings()["mode"] == "sync"
    admin_token = service_token(caller="dashboard", audience="order")

    chosen = _place(alice, HTTP_X_LAB_SAGA_MODE="async", HTTP_X_LAB_ADMIN=admin_token)
    assert chosen.status_code == 202 and chosen.data["status"] == "PENDING", chosen.data
    assert queued.sent == [(chosen.data["id"], Order.objects.get(pk=chosen.data["id"]).saga_runner)]
    assert fake_inventory.calls_to("reserve") == []

    plain = _place(alice)
    assert plain.status_code == 201 and plain.data["status"] == "CONFIRMED"
    assert lab.saga_settings()["mode"] == "sync"


def test_staff_may_choose_for_their_own_order(admin, queued):
    """Ensure a staff user's own order honours the header without any other proof."""
    response = _place(admin, HTTP_X_LAB_SAGA_MODE="async")
    assert response.status_code == 202, response.data


@pytest.mark.parametrize(
    "extra, status, code",
    [
        ({}, 403, "not_lab_admin"),  # a customer alone may not choose
        ({"HTTP_X_LAB_ADMIN": "not-a-token"}, 403, "not_lab_admin"),
        ({"HTTP_X_LAB_ADMIN": "user-token"}, 403, "not_lab_admin"),  # a user's token is no admin's
        ({"HTTP_X_LAB_ADMIN": "payment-token"}, 403, "not_lab_admin"),  # another service's neither
    ],
)
def test_anyone_else_choosing_is_refused_and_nothing_is_saved(alice, extra, status, code):
    """Ensure the header without the lab admin's proof is a 403 naming why, with no order written."""
    from chassis.testing import user_token

    tokens = {
        "user-token": user_token(user_id=1001, staff=True),
        "payment-token": service_token(caller="payment", audience="order"),
    }
    extra = {k: tokens.get(v, v) for k, v in extra.items()}
    response = _place(alice, HTTP_X_LAB_SAGA_MODE="async", **extra)
    assert response.status_code == status, response.data
    assert response.json()["code"] == code
    assert Order.objects.count() == 0


def test_a_mode_that_is_neither_is_a_400(admin):
    """Ensure a bad value is refused with a clear message."""
    response = _place(admin, HTTP_X_LAB_SAGA_MODE="later")
    assert response.status_code == 400 and "'sync' or 'async'" in response.json()["message"]
    assert Order.objects.count() == 0
