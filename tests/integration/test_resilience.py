"""The resilience mechanisms of order_service's calls, switched at run time and watched from outside.

Payment and inventory are broken with real faults; what is observed is what a
student sees: order answers, the breaker's state on ``/_lab/resilience/``, and
the requests payment really received on ``/metrics``.
"""

from __future__ import annotations

import concurrent.futures
import time

from .conftest_lab import history_notes, metric_total, requests_outside_lab


def _requests_served(lab_admin, service: str) -> float:
    return requests_outside_lab(lab_admin.metrics(service))


def _breaker_seen_by_many_workers(lab, lab_admin, count: int = 12) -> list[tuple[str, int]]:
    """The payment breaker as ``count`` calls on fresh connections see it (spread over order's workers)."""
    seen = []
    for _ in range(count):
        response = lab_admin.api.call("GET", "order", "/_lab/resilience/", headers={"Connection": "close"})
        breaker = response.json()["breakers"]["payment"]
        seen.append((breaker["state"], breaker["fail_counter"]))
    return seen


def test_breaker_opens_fails_fast_then_closes_after_reset_timeout(lab, lab_admin, shopper):
    """Ensure fail_max failures open order→payment's breaker, then orders fail fast without calling payment;
    after reset_timeout it half-opens, fails again while payment is down, and closes once payment is back.

    The breaker opens with a long reset_timeout so that the fail-fast observations
    cannot race a half-open trial on a slow machine; reset_timeout is then set to
    2 s (the breaker keeps whole seconds), which applies at once to the open breaker.
    """
    lab_admin.set_switches(
        "order",
        breaker={"enabled": True, "fail_max": 3, "reset_timeout": 60},
        retries={"enabled": True, "attempts": 2, "backoff": 0.05},
        reset_breakers=True,
    )
    lab_admin.add_fault("payment", kind="outage")
    served_before_failures = _requests_served(lab_admin, "payment")

    failed = []
    for _ in range(3):
        failed.append(shopper.order(shopper.sku))
        if lab_admin.breaker("order", "payment")["state"] == "open":
            break
    for placed in failed:
        assert placed["status_code"] == 202 and placed["data"]["status"] == "PENDING", placed
        assert "payment unavailable" in history_notes(placed["data"]), placed
    assert _requests_served(lab_admin, "payment") > served_before_failures  # payment was really called so far

    seen = _breaker_seen_by_many_workers(lab, lab_admin)
    assert {state for state, _ in seen} == {"open"}, seen
    assert len(set(seen)) == 1, seen  # one shared breaker, whichever worker answers

    served_before = _requests_served(lab_admin, "payment")
    inventory_before = _requests_served(lab_admin, "inventory")
    orders_before = shopper.api.get("order", "/api/orders/").json()["count"]
    rejected_before = metric_total(
        lab_admin.metrics("order"), "lab_peer_calls_total", peer="payment", outcome="rejected"
    )
    fast = shopper.order(shopper.sku)
    # Refused before the saga's first step: 503 with the breaker's remaining open time, nothing reserved or saved.
    assert fast["status_code"] == 503, fast
    assert fast["data"]["code"] == "dependency_unavailable" and fast["data"]["peer"] == "payment", fast
    assert 1 <= int(fast["headers"]["Retry-After"]) <= 60, fast
    assert _requests_served(lab_admin, "payment") == served_before  # not one request reached payment
    assert _requests_served(lab_admin, "inventory") == inventory_before  # nor inventory: no lookup, no hold
    assert shopper.api.get("order", "/api/orders/").json()["count"] == orders_before
    assert (
        metric_total(lab_admin.metrics("order"), "lab_peer_calls_total", peer="payment", outcome="rejected")
        > rejected_before
    )

    # reset_timeout over, payment still down: the half-open trial call fails and the breaker opens again.
    lab_admin.set_switches("order", breaker={"reset_timeout": 2})
    opened_at = lab_admin.breaker("order", "payment")["opened_at"]
    time.sleep(2.2)
    served_before = _requests_served(lab_admin, "payment")
    trial = shopper.order(shopper.sku)
    assert trial["status_code"] == 202, trial
    assert _requests_served(lab_admin, "payment") > served_before  # the trial did call payment
    reopened = lab_admin.breaker("order", "payment")
    assert reopened["state"] == "open" and reopened["opened_at"] != opened_at, reopened

    # Payment back and reset_timeout over: the trial succeeds and the breaker closes.
    lab_admin.clear_faults("payment")
    time.sleep(2.2)
    recovered = shopper.order(shopper.sku)
    assert recovered["status_code"] == 201 and recovered["data"]["status"] == "CONFIRMED", history_notes(
        recovered["data"]
    )
    assert {state for state, _ in _breaker_seen_by_many_workers(lab, lab_admin)} == {"closed"}

    for placed in shopper.settle():  # the paused orders resume and complete
        assert placed["data"]["status"] == "CONFIRMED", placed


def _checkouts(shopper, count: int) -> list[dict]:
    return [shopper.order(shopper.sku) for _ in range(count)]


def _inventory_unavailable(placed: dict) -> bool:
    data = placed["data"] if isinstance(placed["data"], dict) else {}
    text = f"{data.get('status_reason', '')} {data.get('message', '')} {history_notes(data)}".lower()
    return "inventory" in text and "unavailable" in text


def test_retries_hide_a_flaky_inventory_and_their_absence_shows_it(lab, lab_admin, shopper):
    """Ensure with a 30 % error fault on inventory, retries keep ≥ 90 % of checkouts CONFIRMED; without them
    failures show (CANCELLED or 503, with an inventory-unavailable reason).

    Five attempts make a call fail only when five draws in a row hit
    (0.3⁵ ≈ 0.24 %), so about 1 % of checkouts (three calls each) fail by chance:
    the 90 % bound holds with a wide margin. Three attempts would leave ~8 %.
    """
    lab_admin.set_switches(
        "order",
        retries={"enabled": True, "attempts": 5, "backoff": 0.02},
        breaker={"enabled": True, "fail_max": 5, "reset_timeout": 1},
        reset_breakers=True,
    )
    lab_admin.add_fault("inventory", kind="error", status=503, probability=0.3)

    with_retries = _checkouts(shopper, 20)
    confirmed = [p for p in with_retries if p["data"].get("status") == "CONFIRMED"]
    assert len(confirmed) >= 18, [
        (p["status_code"], p["data"].get("status"), p["data"].get("status_reason")) for p in with_retries
    ]
    assert metric_total(lab_admin.metrics("order"), "lab_retries_total", peer="inventory") > 0

    lab_admin.set_switches("order", retries={"enabled": False})
    without = _checkouts(shopper, 20)
    failed = [p for p in without if p["data"].get("status") != "CONFIRMED"]
    assert len(failed) >= 3, [(p["status_code"], p["data"].get("status")) for p in without]
    assert len(failed) > len(with_retries) - len(confirmed)
    # Each answer is one of three, drawn by the fault: an order that ended (201), one paused while
    # compensating (202 PENDING), or nothing written because inventory could not price it (503).
    first = [(p["status_code"], p["data"].get("status")) for p in shopper.placed]
    assert set(first) <= {(201, "CONFIRMED"), (201, "CANCELLED"), (202, "PENDING"), (503, None)}, first
    assert any(_inventory_unavailable(p) for p in failed), [p["data"] for p in failed]

    lab_admin.clear_faults("inventory")
    lab_admin.set_switches("order", retries={"enabled": True}, reset_breakers=True)
    # The first answer decides the end: a paused compensation finishes CANCELLED; a request that
    # wrote nothing is created by its replay, now faultless, and CONFIRMED.
    ends = {(201, "CONFIRMED"): "CONFIRMED", (201, "CANCELLED"): "CANCELLED", (202, "PENDING"): "CANCELLED"}
    ends[(503, None)] = "CONFIRMED"
    settled = [p["data"]["status"] for p in shopper.settle()]
    assert settled == [ends[answer] for answer in first], list(zip(first, settled, strict=True))


def test_bulkhead_turns_away_calls_beyond_its_size(lab, lab_admin, shopper):
    """Ensure with a bulkhead of 1 and slow reservations, concurrent checkouts beyond it are refused at once (503)."""
    lab_admin.set_switches(
        "order", bulkhead={"enabled": True, "max_concurrent": 1}, retries={"enabled": False}, reset_breakers=True
    )
    lab_admin.add_fault("inventory", kind="latency", delay_ms=1500, path_prefix="/internal/reservations/")

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: shopper.order(shopper.sku), range(6)))

    refused = [a for a in answers if a["status_code"] == 503]
    assert refused, [(a["status_code"], a["data"]) for a in answers]
    assert all(a["data"]["code"] == "dependency_unavailable" for a in refused), refused
    assert metric_total(lab_admin.metrics("order"), "lab_peer_calls_total", peer="inventory", outcome="rejected") > 0
    assert any(a["status_code"] == 201 for a in answers)


def test_default_bulkhead_keeps_order_responsive_while_inventory_hangs(lab, lab_admin, shopper):
    """Ensure the default bulkhead (half of each worker's 4 threads, per peer) engages when inventory hangs:
    checkouts beyond it are refused at once (503, no order kept), and listing orders, which needs no
    peer, is answered while the checkouts that got through are still waiting on inventory.

    Those reached the reservation (there is no product lookup before it), so they end PENDING with
    their stock to look up once inventory answers again (202), not refused.

    With a bulkhead at or above the thread count (the old default of 16), every thread of the
    order service waits on inventory, no call is refused, and the listing waits behind them.
    """
    seen = {lab_admin.resilience("order")["switches"]["bulkhead"]["max_concurrent"] for _ in range(6)}
    assert seen == {2}, seen  # 2 workers x 4 threads in the harness: 2 calls per peer per worker
    lab_admin.set_switches("order", timeouts={"read": 4.0}, retries={"enabled": False}, breaker={"enabled": False})
    lab_admin.add_fault("order", kind="dependency", target="inventory", mode="hang")

    def inventory_calls(outcome: str) -> float:
        return metric_total(lab_admin.metrics("order"), "lab_peer_calls_total", peer="inventory", outcome=outcome)

    rejected_before, unavailable_before = inventory_calls("rejected"), inventory_calls("unavailable")
    checkouts, listings = 12, 4
    finished: dict[str, list[float]] = {"checkout": [], "listing": []}

    def checkout(_):
        placed = shopper.order(shopper.sku, timeout=30)
        finished["checkout"].append(time.monotonic())
        return placed

    def listing(_):
        time.sleep(0.5)  # after the checkouts have taken what they can
        response = shopper.api.get("order", "/api/orders/", headers={"Connection": "close"})
        finished["listing"].append(time.monotonic())
        return response.status_code

    with concurrent.futures.ThreadPoolExecutor(checkouts + listings) as pool:
        placed = pool.map(checkout, range(checkouts))
        listed = pool.map(listing, range(listings))
        answers, statuses = list(placed), list(listed)

    summary = [(a["status_code"], a["data"].get("status") or a["data"].get("code")) for a in answers]
    turned_away = [a for a in answers if a["status_code"] == 503]
    waited = [a for a in answers if a["status_code"] != 503]
    # Reservations let through to the hanging inventory: at most 2 per worker process, 4 across the 2 workers.
    assert 1 <= len(waited) <= 4, summary
    assert all(a["data"]["code"] == "dependency_unavailable" for a in turned_away), summary
    assert all(a["status_code"] == 202 and a["data"]["status"] == "PENDING" for a in waited), summary
    assert inventory_calls("rejected") - rejected_before >= len(turned_away)
    assert inventory_calls("unavailable") - unavailable_before >= len(waited)
    assert statuses == [200] * listings
    # Every listing was answered before any checkout that waited on inventory came back.
    waited_back = sorted(finished["checkout"])[-len(waited) :]
    assert max(finished["listing"]) < min(waited_back), (finished, [a["seconds"] for a in answers])

    lab_admin.clear_faults("order")
    # Each 503 saved nothing; the orders that waited are kept, nothing charged.
    assert shopper.api.get("order", "/api/orders/").json()["count"] == len(waited)
    assert shopper.api.get("payment", "/api/payments/").json()["count"] == 0
