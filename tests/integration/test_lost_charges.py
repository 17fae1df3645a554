"""A charge whose answer the order service stopped waiting for, on real processes.

Payment answers a charge after the order service's read timeout: the order
service cannot learn the outcome, so the saga compensates and the order ends
CANCELLED while the charge is still on its way. Its compensation settles the
charge at payment by its key; the charge that lands afterwards must not be
captured on the cancelled order (and the audit must say so if it were).
"""

from __future__ import annotations

from labctl import audit

from .conftest_lab import history_notes, metric_total, wait_until

CHARGES_ROUTE = "/internal/charges/"


def charge_posts_answered(lab_admin) -> float:
    """How many charge requests payment has answered so far (any status), from its /metrics."""
    return metric_total(lab_admin.metrics("payment"), "lab_http_requests_total", method="POST", route=CHARGES_ROUTE)


def audit_now(lab_admin) -> dict:
    return audit.check(audit.collect(lab_admin.api))


def test_a_charge_landing_after_the_order_gave_up_is_not_captured(lab, lab_admin, shopper):
    """Ensure a charge payment answers after order's read timeout ends with the order CANCELLED and nothing captured.

    Order waits 1 s for payment and sends each charge once; payment takes 4 s
    for a charge. The order is cancelled (its stock back) while the charge is
    still in payment's hands; once payment has answered that charge, it holds
    no money for the order and the audit is clean.
    """
    lab_admin.set_switches("order", spread=False, timeouts={"read": 1.0}, retries={"enabled": False})
    lab_admin.add_fault(
        "payment", kind="latency", delay_ms=4000, path_prefix=CHARGES_ROUTE, method="POST", ttl_seconds=60
    )
    answered_before = charge_posts_answered(lab_admin)

    placed = shopper.order(shopper.sku, quantity=2)

    order = placed["data"]
    assert placed["status_code"] == 201, order
    assert (order["status"], order["saga_step"]) == ("CANCELLED", "done"), history_notes(order)
    # The late charge reaches payment's view and is answered there: only then is the outcome known.
    wait_until(
        lambda: charge_posts_answered(lab_admin) >= answered_before + 1,
        timeout=30,
        message="payment answered the late charge",
    )
    charges = lab_admin.api.all_pages("payment", "/internal/reconciliation/charges/")
    mine = [row for row in charges if str(row["order_id"]) == str(order["id"])]
    assert [row for row in mine if row["status"] == "CAPTURED"] == [], mine
    result = audit_now(lab_admin)
    cancelled = next(check for check in result["checks"] if check["name"] == "cancelled_clean")
    assert [v for v in cancelled["violations"] if v["ids"]["order"] == str(order["id"])] == [], audit.render(result)
    assert "charge_voided" in [event["step"] for event in order["history"]], history_notes(order)
    stock = shopper.api.get("inventory", f"/api/products/{shopper.sku}/").json()
    assert (stock["available"], stock["reserved"], stock["sold"]) == (500, 0, 0)
