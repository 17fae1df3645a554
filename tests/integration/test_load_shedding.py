"""Load shedding on real processes: a request that waited past its deadline is not run.

While inventory hangs, every request thread of the order service waits on it and
new checkouts queue in gunicorn. Their clients said (``X-Request-Deadline``) that
after one second the answer is of no use to them. When the hang lifts, those
queued checkouts must be answered 503 at once, not run: their customers have
given up, and charging them for orders they never saw confirmed is the bug.
"""

from __future__ import annotations

import concurrent.futures
import time
import uuid

from .conftest_lab import metric_total

HANG_SECONDS = 4.0


def test_checkouts_queued_past_their_deadline_are_shed_not_run(lab, lab_admin, shopper):
    """Ensure checkouts that waited in the queue past their deadline are 503 deadline_exceeded, saving nothing."""
    lab_admin.set_switches(
        "order",
        timeouts={"read": HANG_SECONDS},
        retries={"enabled": False},
        breaker={"enabled": False},
        bulkhead={"enabled": False},  # so that the hang takes every thread, as in the chaos run
    )
    # The hang clears itself while the hung checkouts still wait: the queued ones would then run.
    lab_admin.add_fault("order", kind="dependency", target="inventory", mode="hang", ttl_seconds=3)
    shed_before = metric_total(lab_admin.metrics("order"), "lab_requests_shed_total", reason="deadline")
    # Twice the 2 workers x 4 threads of the harness, so that every thread of both workers hangs.
    # They order a sku inventory does not know: whether their reservation is refused once the fault
    # cleared (400) or its answer is lost in the hang (the order kept PENDING, to be settled), they
    # reserve and charge nothing; their orders are told apart from the late ones' by that sku.
    hung, late = 16, 4

    def hung_checkout(_):
        body = {"lines": [{"sku": "NO-SUCH-SKU", "quantity": 1}], "payment_method": shopper.card}
        response = shopper.api.session.post(
            shopper.api.url("order", "/api/orders/"),
            json=body,
            headers={"Idempotency-Key": f"it-hung-{uuid.uuid4().hex}"},
            timeout=30,
        )
        return response.status_code

    def late_checkout(_):
        time.sleep(0.5)  # after the hung checkouts have taken every thread
        key = f"it-late-{uuid.uuid4().hex}"
        body = {"lines": [{"sku": shopper.sku, "quantity": 1}], "payment_method": shopper.card}
        response = shopper.api.session.post(
            shopper.api.url("order", "/api/orders/"),
            json=body,
            headers={"Idempotency-Key": key, "X-Request-Deadline": f"{time.time() + 1.0:.3f}"},
            timeout=30,  # the test waits to see the answer; the deadline says the customer would not
        )
        return response.status_code, response.json()

    with concurrent.futures.ThreadPoolExecutor(hung + late) as pool:
        hung_answers = pool.map(hung_checkout, range(hung))
        late_answers = list(pool.map(late_checkout, range(late)))
        hung_answers = list(hung_answers)

    assert 500 not in hung_answers, hung_answers
    assert [(status, body["code"]) for status, body in late_answers] == [(503, "deadline_exceeded")] * late
    shed = metric_total(lab_admin.metrics("order"), "lab_requests_shed_total", reason="deadline") - shed_before
    assert shed == late
    # Nothing was run for them: no order, no charge, the stock untouched.
    orders = shopper.api.get("order", "/api/orders/?page_size=50").json()["results"]
    assert not [o for o in orders if any(line["sku"] == shopper.sku for line in o["lines"])], orders
    assert shopper.api.get("payment", "/api/payments/").json()["count"] == 0
    assert shopper.api.get("inventory", f"/api/products/{shopper.sku}/").json()["available"] == 500
