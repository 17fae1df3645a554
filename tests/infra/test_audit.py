"""The audit's checks on hand-made reconciliation rows: each invariant can fail."""

from datetime import UTC, datetime, timedelta

from labctl.audit import check

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def clean() -> dict:
    return {
        "orders": [
            {"id": "1", "status": "CONFIRMED", "saga_step": "done", "total_cents": 500, "updated_at": NOW.isoformat()},
            {"id": "2", "status": "CANCELLED", "saga_step": "done", "total_cents": 300, "updated_at": NOW.isoformat()},
            {
                "id": "3",
                "status": "PENDING",
                "saga_step": "none",
                "total_cents": 100,
                "updated_at": (NOW - timedelta(days=1)).isoformat(),
            },
        ],
        "charges": [
            {"id": "c1", "order_id": "1", "status": "CAPTURED", "amount_cents": 500, "refunded_cents": 0},
            {"id": "c2", "order_id": "2", "status": "CAPTURED", "amount_cents": 300, "refunded_cents": 300},
            {"id": "c3", "order_id": "2", "status": "DECLINED", "amount_cents": 300, "refunded_cents": 0},
        ],
        "reservations": [
            {"id": "r1", "order_id": "1", "status": "COMMITTED", "lines": [{"sku": "A", "quantity": 1}]},
            {"id": "r2", "order_id": "2", "status": "RETURNED", "lines": [{"sku": "A", "quantity": 1}]},
        ],
        "stock": [{"sku": "A", "initial": 10, "restocked": 2, "available": 11, "reserved": 0, "sold": 1}],
    }


def failing(result) -> set:
    return {c["name"] for c in result["checks"] if not c["ok"]}


def test_clean_data_passes():
    """Ensure consistent rows pass every check (a draft PENDING order is not stuck)."""
    result = check(clean(), now=NOW)
    assert result["ok"] and failing(result) == set()
    assert result["counts"]["by_status"] == {"CANCELLED": 1, "CONFIRMED": 1, "PENDING": 1}


def test_confirmed_order_charged_twice_fails():
    """Ensure a double capture is caught with the ids involved."""
    data = clean()
    data["charges"].append(
        {"id": "c9", "order_id": "1", "status": "CAPTURED", "amount_cents": 500, "refunded_cents": 0}
    )
    result = check(data, now=NOW)
    assert failing(result) == {"confirmed_paid_and_committed"}
    violation = result["checks"][0]["violations"][0]
    assert violation["ids"]["charges"] == ["c1", "c9"]


def test_confirmed_order_whose_second_charge_was_refunded_in_full_passes():
    """Ensure the repair of a double capture (the extra charge refunded in full) makes the order consistent again."""
    data = clean()
    extra = {"id": "c9", "order_id": "1", "status": "CAPTURED", "amount_cents": 500, "refunded_cents": 500}
    data["charges"].append(extra)
    assert check(data, now=NOW)["ok"]
    extra["refunded_cents"] = 499  # a cent still taken twice
    result = check(data, now=NOW)
    assert failing(result) == {"confirmed_paid_and_committed"}
    assert result["checks"][0]["violations"][0]["message"] == "order 1 is CONFIRMED with 2 captured charges"


def test_confirmed_order_with_wrong_amount_or_uncommitted_stock_fails():
    """Ensure amount mismatches and HELD stock on a confirmed order are caught."""
    data = clean()
    data["charges"][0]["amount_cents"] = 499
    data["reservations"][0]["status"] = "HELD"
    data["stock"][0].update(reserved=1, sold=0)
    result = check(data, now=NOW)
    assert len(result["checks"][0]["violations"]) == 2


def test_cancelled_order_with_net_charge_or_held_stock_fails():
    """Ensure a cancelled order that kept money or stock is caught."""
    data = clean()
    data["charges"][1]["refunded_cents"] = 100
    data["reservations"][1]["status"] = "COMMITTED"
    result = check(data, now=NOW)
    assert failing(result) == {"cancelled_clean"}
    assert len(result["checks"][1]["violations"]) == 2


def test_stock_not_conserved_fails():
    """Ensure a unit appearing or vanishing is caught, and reserved must match HELD reservations."""
    data = clean()
    data["stock"][0]["available"] = 12
    assert failing(check(data, now=NOW)) == {"stock_conserved"}
    data = clean()
    data["stock"][0].update(available=10, reserved=1)
    assert failing(check(data, now=NOW)) == {"stock_conserved"}


def test_order_stuck_past_the_deadline_fails():
    """Ensure an order whose saga started but never ended is caught after the deadline only."""
    data = clean()
    data["orders"][2].update(saga_step="charging", updated_at=(NOW - timedelta(seconds=100)).isoformat())
    assert check(data, now=NOW, deadline_seconds=120)["ok"]
    assert failing(check(data, now=NOW, deadline_seconds=60)) == {"no_stuck_orders"}


def test_money_or_stock_for_unknown_order_fails():
    """Ensure a capture or a held reservation for an order nobody knows is caught."""
    data = clean()
    data["charges"].append(
        {"id": "c7", "order_id": "77", "status": "CAPTURED", "amount_cents": 10, "refunded_cents": 0}
    )
    data["reservations"].append(
        {"id": "r7", "order_id": "78", "status": "HELD", "lines": [{"sku": "A", "quantity": 1}]}
    )
    data["stock"][0].update(available=10, reserved=1)
    result = check(data, now=NOW)
    assert failing(result) == {"no_orphans"}
    assert len(result["checks"][4]["violations"]) == 2
