"""Stock under concurrent load, on the real database: never negative, never oversold, no 500.

Each worker thread has its own database connection and closes it when done.
"""

from __future__ import annotations

import json
import threading
from collections import Counter

import pytest
from django.db import OperationalError, connection
from django.test import Client

from catalog.models import Stock
from catalog.services import run_in_transaction
from chassis.errors import Unavailable, http_status_of

from .helpers import assert_stock_conserved, stock_of

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "mysql", reason="row locks are what is tested: needs MySQL/MariaDB"),
]

URL = "/internal/reservations/"


def run_threads(count: int, work) -> list:
    """Run ``work(i)`` in ``count`` threads released together; return their results in order."""
    barrier = threading.Barrier(count, timeout=30)
    results: list = [None] * count

    def target(i: int) -> None:
        try:
            barrier.wait()
            results[i] = work(i)
        except Exception as exc:  # noqa: BLE001 — reported to the test, which fails on it
            results[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=target, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a worker thread hung"
    return results


def post(headers: dict, url: str, body: dict | None = None):
    return Client().post(url, json.dumps(body or {}), content_type="application/json", **headers)


def test_thirty_buyers_for_ten_units(make_product, order_service):
    """Ensure 30 concurrent reservations of 1 unit of a product with 10 give exactly 10 successes and 20 refusals."""
    make_product("KB-001", stock=10)

    def buy(i: int) -> tuple[int, str]:
        response = post(
            order_service,
            URL,
            {
                "order_id": i,
                "idempotency_key": f"order-{i}-reserve",
                "lines": [{"sku": "KB-001", "quantity": 1}],
            },
        )
        return response.status_code, response.json().get("code", "")

    results = run_threads(30, buy)

    assert Counter(results) == Counter({(201, ""): 10, (409, "insufficient_stock"): 20}), results
    stock = stock_of("KB-001")
    assert (stock.available, stock.reserved, stock.sold) == (0, 10, 0)
    assert_stock_conserved()


def test_mixed_order_multi_line_checkouts_do_not_deadlock(make_product, order_service, staff):
    """Ensure concurrent multi-line reservations in opposite orders, commits, releases and restocks never answer 5xx.

    Lines arrive in every order; the service locks by product id, so nobody waits in a cycle.
    """
    skus = ["KB-001", "MS-001", "CB-001", "MN-001"]
    for sku in skus:
        make_product(sku, stock=15)

    def shop(i: int) -> list[int]:
        if i % 10 == 9:
            return [post(staff, f"/api/products/{skus[i % 4]}/restock/", {"quantity": 3}).status_code]
        order = skus[i % 4 :] + skus[: i % 4]
        lines = [{"sku": sku, "quantity": 1 + (i + n) % 2} for n, sku in enumerate(order if i % 2 else order[::-1])]
        reserved = post(order_service, URL, {"order_id": i, "idempotency_key": f"order-{i}-reserve", "lines": lines})
        statuses = [reserved.status_code]
        if reserved.status_code == 201:
            action = ("commit", "release", "commit/release")[i % 3]
            for step in action.split("/"):
                statuses.append(post(order_service, f"{URL}{reserved.json()['id']}/{step}/").status_code)
        return statuses

    results = run_threads(40, shop)

    flat = [status for statuses in results for status in statuses]
    assert not [r for r in results if isinstance(r, Exception)], results
    assert set(flat) <= {200, 201, 409}, results
    assert flat.count(201) >= 4  # some checkouts went through
    assert all(stock.reserved == 0 for stock in Stock.objects.all())
    assert_stock_conserved()


def test_a_real_deadlock_is_retried(make_product):
    """Ensure a transaction the database kills as a deadlock victim is replayed, and both sides succeed.

    Two transactions lock two stock rows in opposite orders (what the service
    itself never does) and wait for each other: MariaDB aborts one of them.
    """
    first, second = make_product("KB-001").pk, make_product("MS-001").pk
    both_hold_one = threading.Barrier(2, timeout=10)
    attempts = Counter()

    def lock(i: int) -> int:
        order = (first, second) if i == 0 else (second, first)

        def work() -> int:
            attempts[i] += 1
            list(Stock.objects.select_for_update().filter(pk=order[0]))
            if attempts[i] == 1:
                both_hold_one.wait()
            list(Stock.objects.select_for_update().filter(pk=order[1]))
            return attempts[i]

        return run_in_transaction(work)

    results = run_threads(2, lock)

    assert sorted(results) == [1, 2], results  # one went through at once, the deadlock victim on its replay


def test_lock_conflicts_that_persist_answer_503_not_500(db):
    """Ensure a transaction aborted for a deadlock on every attempt ends as 503 stock_busy; other errors propagate."""
    calls = Counter()

    def always_deadlocked():
        calls["deadlocked"] += 1
        raise OperationalError(1213, "Deadlock found when trying to get lock; try restarting transaction")

    def broken():
        calls["broken"] += 1
        raise OperationalError(2006, "MySQL server has gone away")

    with pytest.raises(Unavailable) as refused:
        run_in_transaction(always_deadlocked, attempts=3)
    assert (http_status_of(refused.value), refused.value.code, calls["deadlocked"]) == (503, "stock_busy", 3)

    with pytest.raises(OperationalError):
        run_in_transaction(broken)
    assert calls["broken"] == 1


def test_a_commit_racing_the_sweeper_and_a_release_has_one_winner(make_product, order_service):
    """Ensure overdue HELD reservations, each committed, released and swept at once, end one way each:
    COMMITTED (its units sold) or RELEASED / EXPIRED (back to available), with the movements to match."""
    from datetime import timedelta

    from django.utils import timezone

    from catalog.models import Reservation
    from catalog.services import reservation_create, reservations_expire

    for sku in ("KB-001", "MS-001"):
        make_product(sku, stock=40)
    overdue = timezone.now() - timedelta(hours=1)
    ids = [
        reservation_create(
            order_id=str(i),
            idempotency_key=f"order-{i}-reserve",
            lines=[{"sku": "KB-001", "quantity": 1 + i % 2}, {"sku": "MS-001", "quantity": 1}],
            ttl_seconds=60,
            now=overdue,
        )[0].pk
        for i in range(8)
    ]

    def race(i: int):
        reservation_id = ids[i // 3]
        if i % 3 == 0:
            return reservations_expire(now=timezone.now())
        step = "commit" if i % 3 == 1 else "release"
        return post(order_service, f"{URL}{reservation_id}/{step}/").status_code

    results = run_threads(24, race)

    assert not [r for r in results if isinstance(r, Exception)], results
    commits = [results[i] for i in range(1, 24, 3)]
    assert set(commits) <= {200, 409} and set(results[2::3]) == {200}, results
    statuses = dict(Reservation.objects.values_list("id", "status"))
    for reservation_id, commit in zip(ids, commits, strict=True):
        # A commit answered 200 won (a release after it returns the units: RETURNED); a 409 lost to the others.
        assert statuses[reservation_id] in (("COMMITTED", "RETURNED") if commit == 200 else ("RELEASED", "EXPIRED"))
    assert all(stock.reserved == 0 for stock in Stock.objects.all())
    assert_stock_conserved()
