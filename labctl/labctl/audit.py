"""The audit: do the services, each looking only at its own data, agree?

It reads every service's reconciliation endpoint (never a database), joins the
rows by order id and checks the invariants of docs/architecture.md ("Invariants"):

1. each CONFIRMED (or later SHIPPED/DELIVERED) order has exactly one captured
   charge of its total, not refunded, and a COMMITTED reservation;
2. each CANCELLED order has no net charge and holds no stock;
3. stock is conserved: initial + restocked = available + reserved + sold,
   and what is reserved is exactly what HELD reservations hold;
4. no order is left non-terminal past the saga deadline;
5. no money or stock belongs to an order the order service does not know.

:func:`run_audit` returns ``{"ok", "checks": [{"name", "title", "ok",
"violations": [{"message", "ids"}]}], "counts"}``; ``labctl audit`` prints it
and exits non-zero on any violation, the dashboard draws it.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime

from .labapi import LabApi

SOLD_STATUSES = {"CONFIRMED", "SHIPPED", "DELIVERED"}
DEFAULT_DEADLINE_SECONDS = 120
# The checks an order charged more than once breaks (confirmed with two charges, cancelled with one left).
MONEY_CHECKS = ("confirmed_paid_and_committed", "cancelled_clean")


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def collect(api: LabApi) -> dict:
    return {
        "orders": api.all_pages("order", "/internal/reconciliation/orders/"),
        "stock": api.all_pages("inventory", "/internal/reconciliation/stock/"),
        "reservations": api.all_pages("inventory", "/internal/reconciliation/reservations/"),
        "charges": api.all_pages("payment", "/internal/reconciliation/charges/"),
    }


def check(data: dict, *, deadline_seconds: int = DEFAULT_DEADLINE_SECONDS, now: datetime | None = None) -> dict:
    """Check the invariants on collected rows (pure: no I/O)."""
    now = now or datetime.now(UTC)
    charges_by_order = defaultdict(list)
    for charge in data["charges"]:
        charges_by_order[str(charge["order_id"])].append(charge)
    reservations_by_order = defaultdict(list)
    for reservation in data["reservations"]:
        reservations_by_order[str(reservation["order_id"])].append(reservation)
    orders = {str(o["id"]): o for o in data["orders"]}

    def net(charges):
        return sum(c["amount_cents"] - c.get("refunded_cents", 0) for c in charges if c["status"] == "CAPTURED")

    confirmed, cancelled, stuck, orphans, stock = [], [], [], [], []
    for order_id, order in orders.items():
        charges = charges_by_order.get(order_id, [])
        captured = [c for c in charges if c["status"] == "CAPTURED"]
        # A capture refunded in full (the repair of an order charged twice) no longer holds the customer's money.
        holding = [c for c in captured if c["amount_cents"] - c.get("refunded_cents", 0) > 0]
        reservations = reservations_by_order.get(order_id, [])
        ids = {
            "order": order_id,
            "charges": [c["id"] for c in captured],
            "reservations": [r["id"] for r in reservations],
        }
        if order["status"] in SOLD_STATUSES:
            if len(holding) != 1:
                confirmed.append(
                    {
                        "message": f"order {order_id} is {order['status']} with {len(holding)} captured charges",
                        "ids": ids,
                    }
                )
            elif holding[0]["amount_cents"] != order["total_cents"] or holding[0].get("refunded_cents", 0):
                confirmed.append(
                    {
                        "message": f"order {order_id}: charge of {holding[0]['amount_cents']} "
                        f"(refunded {holding[0].get('refunded_cents', 0)}) for a total of {order['total_cents']}",
                        "ids": ids,
                    }
                )
            if [r["status"] for r in reservations] != ["COMMITTED"]:
                confirmed.append(
                    {
                        "message": f"order {order_id} is {order['status']} but its reservations are "
                        f"{[r['status'] for r in reservations] or 'missing'}",
                        "ids": ids,
                    }
                )
        elif order["status"] == "CANCELLED":
            if net(charges):
                cancelled.append(
                    {
                        "message": f"order {order_id} is CANCELLED but {net(charges)} cents are still captured",
                        "ids": ids,
                    }
                )
            held = [r for r in reservations if r["status"] in ("HELD", "COMMITTED")]
            if held:
                cancelled.append(
                    {
                        "message": f"order {order_id} is CANCELLED but holds stock "
                        f"({', '.join(r['status'] for r in held)})",
                        "ids": ids,
                    }
                )
        elif order.get("saga_step") not in (None, "", "none"):
            age = (now - _parse_time(order["updated_at"])).total_seconds()
            if age > deadline_seconds:
                stuck.append(
                    {
                        "message": f"order {order_id} is still {order['status']} at step {order['saga_step']} "
                        f"after {int(age)} s (deadline {deadline_seconds} s)",
                        "ids": ids,
                    }
                )

    for order_id, charges in charges_by_order.items():
        if order_id not in orders and net(charges):
            orphans.append(
                {
                    "message": f"{net(charges)} cents captured for unknown order {order_id}",
                    "ids": {"order": order_id, "charges": [c["id"] for c in charges]},
                }
            )
    for order_id, reservations in reservations_by_order.items():
        held = [r for r in reservations if r["status"] in ("HELD", "COMMITTED")]
        if order_id not in orders and held:
            orphans.append(
                {
                    "message": f"stock held for unknown order {order_id}",
                    "ids": {"order": order_id, "reservations": [r["id"] for r in held]},
                }
            )

    held_by_sku = defaultdict(int)
    for reservation in data["reservations"]:
        if reservation["status"] == "HELD":
            for line in reservation.get("lines", []):
                held_by_sku[line["sku"]] += line["quantity"]
    for row in data["stock"]:
        total_in = row["initial"] + row["restocked"]
        accounted = row["available"] + row["reserved"] + row["sold"]
        if total_in != accounted:
            stock.append(
                {
                    "message": f"{row['sku']}: initial {row['initial']} + restocked {row['restocked']} ≠ available "
                    f"{row['available']} + reserved {row['reserved']} + sold {row['sold']}",
                    "ids": {"sku": row["sku"]},
                }
            )
        if min(row["available"], row["reserved"], row["sold"]) < 0:
            stock.append({"message": f"{row['sku']} has a negative count", "ids": {"sku": row["sku"]}})
        if row["reserved"] != held_by_sku.get(row["sku"], 0):
            stock.append(
                {
                    "message": f"{row['sku']}: {row['reserved']} reserved but HELD reservations hold "
                    f"{held_by_sku.get(row['sku'], 0)}",
                    "ids": {"sku": row["sku"]},
                }
            )

    checks = [
        {
            "name": "confirmed_paid_and_committed",
            "title": "Each confirmed order has one captured charge of its total and committed stock",
            "violations": confirmed,
        },
        {
            "name": "cancelled_clean",
            "title": "Each cancelled order has no net charge and holds no stock",
            "violations": cancelled,
        },
        {
            "name": "stock_conserved",
            "title": "Stock is conserved (initial + restocks = available + reserved + sold)",
            "violations": stock,
        },
        {
            "name": "no_stuck_orders",
            "title": f"No order is left in progress past the saga deadline ({deadline_seconds} s)",
            "violations": stuck,
        },
        {"name": "no_orphans", "title": "No money or stock belongs to an unknown order", "violations": orphans},
    ]
    for item in checks:
        item["ok"] = not item["violations"]
    counts = {
        "orders": len(orders),
        "by_status": dict(sorted(_count(o["status"] for o in orders.values()).items())),
        "charges": len(data["charges"]),
        "reservations": len(data["reservations"]),
        "products": len(data["stock"]),
    }
    return {"ok": all(c["ok"] for c in checks), "checks": checks, "counts": counts}


def money_orders(result: dict) -> list[int]:
    """The ids of the orders a money check of ``result`` names: what order's ``/_lab/repair/`` can make right."""
    return sorted(
        {
            int(violation["ids"]["order"])
            for item in result["checks"]
            if item["name"] in MONEY_CHECKS
            for violation in item["violations"]
            if str(violation["ids"].get("order", "")).isdigit()
        }
    )


def _count(values) -> dict:
    out: dict = defaultdict(int)
    for value in values:
        out[value] += 1
    return out


def run_audit(api: LabApi | None = None, *, deadline_seconds: int = DEFAULT_DEADLINE_SECONDS) -> dict:
    """Collect from the running services and check. Raises ``LabApiError`` when a service cannot answer."""
    if api is None:
        from .config import Paths, find_root

        api = LabApi(Paths(find_root()))
    return check(collect(api), deadline_seconds=deadline_seconds)


def render(result: dict) -> str:
    lines = []
    counts = result["counts"]
    lines.append(
        f"Audit of {counts['orders']} orders {counts['by_status']}, {counts['charges']} charges, "
        f"{counts['reservations']} reservations, {counts['products']} products"
    )
    for item in result["checks"]:
        mark = "ok  " if item["ok"] else "FAIL"
        lines.append(f"  [{mark}] {item['title']}")
        for violation in item["violations"][:50]:
            lines.append(f"         - {violation['message']}")
        if len(item["violations"]) > 50:
            lines.append(f"         ... and {len(item['violations']) - 50} more")
    lines.append("All invariants hold." if result["ok"] else "Invariants are broken: see above.")
    return "\n".join(lines)
