"""Lab 6, the saga and its compensations: its steps, checks, solves and questions (the text is lab.md).

Every figure comes from the lab itself: each order's history from order's API
(its step names say which compensation ran, and in which order), the money
from payment's ledger (``/api/ledger/?order_id=``, staff), the reservation's
status from inventory's reconciliation API (what the audit reads), the
product's stock from inventory's API, and the audit itself.
"""

from __future__ import annotations

import time

from chassis import parts
from labctl.labs.context import DECLINED_CARD, LabContext, parse_time
from labctl.labs.model import CheckError, Question, SolveError, Step, failed, fixed, passed

OUTAGE = parts.preset_fault("payment-outage")  # the Faults page's preset of that name
COMPENSATIONS = ("refunded", "released", "returned")
COMMIT_FAILED = ("Stock could not be committed", "Inventory unavailable while committing")
AUDIT_READS = 3  # a red audit is read again: one read of four services is not a snapshot


# --- what the checks read -------------------------------------------------------------------


def _steps(order: dict) -> list[str]:
    return [h.get("step", "") for h in order.get("history") or []]


def _compensations(order: dict) -> list[str]:
    """The compensation steps of the order's history, in the order they ran."""
    return [step for step in _steps(order) if step in COMPENSATIONS]


def _reservation(ctx: LabContext, order_id) -> dict | None:
    body = ctx.admin("GET", "inventory", "/internal/reconciliation/reservations/", params={"order_id": str(order_id)})
    found = body.get("results", []) if isinstance(body, dict) else body
    return found[-1] if found else None


def _money(ctx: LabContext, order_id) -> tuple[int, int]:
    """``(charged, still captured)`` in cents for the order, from payment's ledger."""
    entries = ctx.staff_json("payment", "/api/ledger/", order_id=str(order_id), page_size=100).get("results", [])
    entries = [e for e in entries if str(e.get("order_id")) == str(order_id)]
    charged = sum(e["amount_cents"] for e in entries if e.get("kind") == "CHARGE")
    return charged, sum(e["amount_cents"] for e in entries)


def _audit(ctx: LabContext) -> tuple[bool, str]:
    """Whether the audit is clean (read up to three times), and its first violations if not."""
    for attempt in range(AUDIT_READS):
        audit = ctx.audit()
        if audit["ok"]:
            return True, ""
        if attempt < AUDIT_READS - 1:
            ctx.sleep(1)
    broken = [v["message"] for c in audit["checks"] for v in c["violations"]]
    return False, "; ".join(broken[:3]) + (f" (and {len(broken) - 3} more)" if len(broken) > 3 else "")


def _audit_red(problems: str):
    return failed(
        f"The order is right, but the audit is red: {problems}. Open the Audit page; if another "
        "order is still in progress, wait a few seconds and check again.",
        audit_ok=False,
    )


def _outage_on(ctx: LabContext) -> dict | None:
    return next((f for f in ctx.faults("payment") if f.get("kind") in ("outage", "error")), None)


# --- 1. a declined card -----------------------------------------------------------------------


def _declined(ctx: LabContext) -> list[dict]:
    return [
        o
        for o in ctx.orders_since()
        if o.get("status") == "CANCELLED" and str(o.get("status_reason", "")).startswith("Payment declined")
    ]


def check_declined(ctx: LabContext):
    orders = _declined(ctx)
    if not orders:
        return failed(
            "No order of yours was cancelled for a declined card yet: on the Flows page run "
            "“Declined card” (card 4000 0000 0000 0002)."
        )
    order = orders[0]
    reservation = _reservation(ctx, order["id"])
    if reservation is None or reservation["status"] != "RELEASED":
        return failed(
            f"Order #{order['id']} is CANCELLED, but inventory's reservation for it is "
            f"{reservation['status'] if reservation else 'missing'}, not RELEASED."
        )
    charged, held = _money(ctx, order["id"])
    if held:
        return failed(f"Order #{order['id']} is CANCELLED but payment still holds {held} cents for it.")
    clean, problems = _audit(ctx)
    if not clean:
        return _audit_red(problems)
    sku = reservation["lines"][0]["sku"]
    product = ctx.product(sku)
    comps = _compensations(order)
    return passed(
        f"Order #{order['id']} reserved {sku}, payment declined the card, and the saga compensated: "
        f"{', '.join(comps) or 'nothing'} → CANCELLED “{order['status_reason']}”. The reservation is "
        f"{reservation['status']}, {product['available']} {sku} available, nothing charged, audit clean.",
        declined_order=order["id"],
        reason=order["status_reason"],
        compensations=", ".join(comps),
        reservation_status=reservation["status"],
        sku=sku,
        available=product["available"],
        charged_cents=charged,
        audit_ok=True,
    )


def solve_declined(ctx: LabContext) -> None:
    response = ctx.new_customer(card=DECLINED_CARD).order(ctx.in_stock_sku())
    if response.status_code not in (200, 201):
        raise SolveError(f"order answered {response.status_code}: {response.text[:200]}")


# --- 2. a customer cancels a confirmed order --------------------------------------------------


def _cancelled_by_customer(ctx: LabContext) -> list[dict]:
    return [
        o
        for o in ctx.orders_since(ctx.since_passed("declined"))
        if o.get("status") == "CANCELLED"
        and o.get("status_reason") == "Cancelled by customer"
        and "confirmed" in _steps(o)
    ]


def check_cancel(ctx: LabContext):
    orders = _cancelled_by_customer(ctx)
    if not orders:
        return failed(
            "No confirmed order of yours has been cancelled by its customer since step 1: on the Flows "
            "page run “Cancel and refund” (or POST /api/orders/<id>/cancel/ as the customer)."
        )
    order = orders[0]
    reservation = _reservation(ctx, order["id"])
    charged, held = _money(ctx, order["id"])
    if reservation is None or reservation["status"] != "RETURNED":
        return failed(
            f"Order #{order['id']} is cancelled, but its reservation is "
            f"{reservation['status'] if reservation else 'missing'}, not RETURNED."
        )
    if not charged or held:
        return failed(
            f"Order #{order['id']} is cancelled, but payment's ledger shows {charged} cents charged and "
            f"{held} still captured (expected: charged, then refunded in full)."
        )
    clean, problems = _audit(ctx)
    if not clean:
        return _audit_red(problems)
    comps = _compensations(order)
    return passed(
        f"Order #{order['id']} was CONFIRMED, then cancelled by its customer: {', '.join(comps)} → "
        f"CANCELLED. Payment charged {charged} cents and refunded all of it; the reservation is "
        f"{reservation['status']} (the sold stock is back on the shelf); audit clean.",
        cancelled_order=order["id"],
        compensations=", ".join(comps),
        refunded_cents=charged,
        reservation_status=reservation["status"],
        audit_ok=True,
    )


def solve_cancel(ctx: LabContext) -> None:
    customer = ctx.lab_customer()
    response = customer.order(ctx.in_stock_sku())
    order = response.json() if response.status_code in (200, 201) else {}
    if order.get("status") != "CONFIRMED":
        raise SolveError(f"the order did not confirm ({response.status_code}): {response.text[:200]}")
    cancelled = customer.call("POST", "order", f"/api/orders/{order['id']}/cancel/")
    if cancelled.status_code != 200:
        raise SolveError(f"the cancel answered {cancelled.status_code}: {cancelled.text[:200]}")


# --- 3. a checkout stopped between its reservation and its charge -----------------------------


def _paused(ctx: LabContext) -> list[tuple[dict, dict]]:
    found = []
    for order in ctx.orders_since(ctx.since_passed("cancel")):
        if order.get("status") == "PENDING" and order.get("saga_step") == "charging" and "reserved" in _steps(order):
            reservation = _reservation(ctx, order["id"])
            if reservation is not None and reservation["status"] == "HELD":
                found.append((order, reservation))
    return found


def check_pause(ctx: LabContext):
    paused = _paused(ctx)
    if not paused:
        return failed(
            "No checkout of yours is waiting between its reservation and its charge: apply the "
            "“Payment outage” preset on the Faults page, then run “Checkout (sync)” on the Flows page."
        )
    order, reservation = paused[0]
    deadline = parse_time(order["created_at"]) + ctx.saga()["deadline_seconds"]
    left = max(0, round(deadline - ctx.clock()))
    try:
        audit = "clean" if _audit(ctx)[0] else "red"
    except CheckError:
        audit = "not readable while payment is down"  # the audit reads payment's charges too
    quantity = sum(line["quantity"] for line in reservation["lines"])
    path = f"/internal/reservations/{reservation['id']}/commit/"
    return passed(
        f"Order #{order['id']} is PENDING at step charging: inventory holds {quantity} unit(s) for it "
        f"(reservation {reservation['id']}, HELD), payment could not be asked. Now, within {left} s: add "
        f"to inventory an error fault, status 409, path prefix {path} — then clear payment's outage.",
        paused_order=order["id"],
        reservation_id=reservation["id"],
        held_units=quantity,
        commit_path=path,
        seconds_left=left,
        audit=audit,
    )


def solve_pause(ctx: LabContext) -> None:
    customer = ctx.lab_customer()  # before the outage: its card is saved now
    ctx.add_fault("payment", **OUTAGE)
    response = customer.order(ctx.in_stock_sku())
    if response.status_code != 202:
        raise SolveError(f"with payment down the order answered {response.status_code}: {response.text[:200]}")


# --- 4. the commit fails after the charge: refund, then release --------------------------------


def _commit_failed(ctx: LabContext) -> list[dict]:
    return [
        o
        for o in ctx.orders_since(ctx.since_passed("cancel"))
        if o.get("status") == "CANCELLED" and str(o.get("status_reason", "")).startswith(COMMIT_FAILED)
    ]


def check_commit_fails(ctx: LabContext):
    orders = _commit_failed(ctx)
    if not orders:
        return failed(_why_not_yet(ctx))
    order = orders[0]
    reservation = _reservation(ctx, order["id"])
    charged, held = _money(ctx, order["id"])
    if reservation is None or reservation["status"] != "RELEASED":
        return failed(
            f"Order #{order['id']}'s commit failed, but its reservation is "
            f"{reservation['status'] if reservation else 'missing'}, not RELEASED yet: check again."
        )
    if not charged or held:
        return failed(
            f"Order #{order['id']}'s commit failed, but payment's ledger shows {charged} cents charged "
            f"and {held} still captured (expected: charged, then refunded in full)."
        )
    clean, problems = _audit(ctx)
    if not clean:
        return _audit_red(problems)
    comps = _compensations(order)
    return passed(
        f"Order #{order['id']} was charged {charged} cents, then inventory refused the commit; the saga "
        f"compensated in reverse order: {', '.join(comps)} → CANCELLED “{order['status_reason']}”. "
        f"The reservation is {reservation['status']}, nothing is still captured, audit clean.",
        commit_failed_order=order["id"],
        reason=order["status_reason"],
        compensations=", ".join(comps),
        refunded_cents=charged,
        reservation_status=reservation["status"],
        audit_ok=True,
    )


def _why_not_yet(ctx: LabContext) -> str:
    order_id = ctx.observed("pause").get("paused_order")
    if order_id is None:
        return "Pass step 3 first: it names the reservation whose commit you make fail."
    order = ctx.order(order_id)
    path = ctx.observed("pause").get("commit_path", "")
    if order["status"] == "CONFIRMED":
        return (
            f"Order #{order_id} was CONFIRMED: its commit went through before a fault on {path} was in place. "
            "Do step 3 again with a new checkout (the check names its reservation)."
        )
    if order["status"] == "CANCELLED":
        return (
            f"Order #{order_id} was cancelled for another reason (“{order['status_reason']}”): the worker gave "
            "up before payment was back. Do step 3 again with a new checkout, and be quicker."
        )
    faulted = any(f.get("kind") == "error" and f.get("path_prefix") == path for f in ctx.faults("inventory"))
    missing = []
    if not faulted:
        missing.append(f"inventory has no error fault on {path}")
    if _outage_on(ctx):
        missing.append("payment is still down (clear its outage)")
    return f"Order #{order_id} is still {order['status']} at step {order['saga_step']}" + (
        f": {'; '.join(missing)}."
        if missing
        else ": the worker resumes it within about 30 s of payment coming back; check again."
    )


def solve_commit_fails(ctx: LabContext) -> None:
    observed = ctx.observed("pause")
    if not observed.get("commit_path"):
        raise SolveError("step 3 has not passed: no paused order to make fail")
    ctx.add_fault("inventory", kind="error", status=409, path_prefix=observed["commit_path"])
    ctx.clear_faults("payment")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if ctx.order(observed["paused_order"])["status"] != "PENDING":
            return
        ctx.sleep(1)
    raise SolveError(f"order #{observed['paused_order']} was still PENDING 120 s after payment came back")


STEPS = [
    Step(
        "declined",
        "A declined card: the stock is released",
        check_declined,
        solve_declined,
        hints=(
            "Flows page → “Declined card” → Run.",
            "The flow's page shows the order's history: reserved, compensating, released, cancelled.",
        ),
        link="/flows/",
        link_label="Flows: Declined card",
        terminal='curl -s -X POST http://127.0.0.1:8002/api/orders/ -H "Authorization: Bearer $TOKEN" '
        "-H 'Content-Type: application/json' -H \"Idempotency-Key: $(uuidgen)\" "
        '-d \'{"lines": [{"sku": "KB-001", "quantity": 1}], "payment_method": "<declined card token>"}\'',
    ),
    Step(
        "cancel",
        "A customer cancels a confirmed order: refund and restock",
        check_cancel,
        solve_cancel,
        hints=(
            "Flows page → “Cancel and refund” → Run: it orders, waits for CONFIRMED, then cancels.",
            "Cancel within a minute of the confirmation: after that the simulated carrier ships the order, "
            "and a shipped order cannot be cancelled.",
        ),
        link="/flows/",
        link_label="Flows: Cancel and refund",
        terminal='curl -s -X POST http://127.0.0.1:8002/api/orders/<id>/cancel/ -H "Authorization: Bearer $TOKEN"',
    ),
    Step(
        "pause",
        "Stop a checkout between its reservation and its charge",
        check_pause,
        solve_pause,
        hints=(
            "Faults page → preset “Payment outage”; then Flows page → “Checkout (sync)”: it answers 202 PENDING, "
            "“paused: payment unavailable”.",
            "Then press Check here at once: the message names the reservation for step 4.",
        ),
        link="/faults/",
        link_label="Faults: Payment outage",
        terminal="labctl fault add payment outage --ttl 120",
    ),
    Step(
        "commit-fails",
        "Make the commit fail after the charge: refund, then release",
        check_commit_fails,
        solve_commit_fails,
        hints=(
            "Faults page → inventory → kind “error”, status 409, path prefix: the one step 3 named → Add.",
            "Then clear payment's outage (its Clear button); the worker resumes the order within about 30 s.",
            "The Audit page stays green throughout.",
        ),
        link="/faults/",
        link_label="Faults: an error on inventory",
        terminal="labctl fault add inventory error --status 409 --path-prefix /internal/reservations/<id>/commit/ "
        "&& labctl fault clear payment",
    ),
]


# --- questions --------------------------------------------------------------------------------


def _declined_compensation(ctx: LabContext, progress: dict) -> str:
    answer = ctx.figure("declined", "compensations")
    if answer not in COMPENSATION_CHOICES:
        raise CheckError(f"your declined order's compensations were “{answer}”, not one of this question's choices")
    return answer


def _first_compensation(ctx: LabContext, progress: dict) -> str:
    return ctx.figure("commit-fails", "compensations").split(", ")[0]


def _still_captured(ctx: LabContext, progress: dict) -> int:
    return _money(ctx, ctx.figure("commit-fails", "commit_failed_order"))[1]


COMPENSATION_CHOICES = ("refunded", "released", "returned", "refunded, released", "refunded, returned")

QUESTIONS = [
    Question(
        "declined-compensation",
        "Which compensation step(s) ran for your declined order (step 1), as its history names them?",
        _declined_compensation,
        choices=COMPENSATION_CHOICES,
        explanation="The card was declined, so no money moved: the only thing done was the reservation, and "
        "the only compensation is to release it.",
    ),
    Question(
        "first-compensation",
        "For your order whose commit failed (step 4), which compensation ran first?",
        _first_compensation,
        choices=("refunded", "released"),
        explanation="Compensations undo the forward steps in reverse order: the charge came after the "
        "reservation, so the refund comes before the release. The stock stays held until the "
        "money is back, and the order is declared CANCELLED only once both are undone.",
    ),
    Question(
        "still-captured",
        "How many cents does payment still hold for your order of step 4 (charges minus refunds, from its ledger)?",
        _still_captured,
        unit="",
        explanation="Payment's ledger has the charge and a refund of the same amount: nothing is held. The "
        "audit's “cancelled orders have no net charge” is this, for every order.",
    ),
    Question(
        "why-pause",
        "In step 3, with payment down, why did the saga pause instead of releasing the stock and cancelling?",
        fixed("it could not know whether the card had been charged"),
        choices=(
            "it could not know whether the card had been charged",
            "releasing stock needs payment",
            "the breaker forbids any compensation",
        ),
        explanation="A charge without an answer may have been captured. Cancelling now could keep a customer's "
        "money for an order that does not exist; so the saga keeps the stock held and asks payment "
        "again later (the worker), then decides.",
    ),
    Question(
        "why-order",
        "Why does the saga reserve the stock before it charges the card?",
        fixed("so nobody is charged for stock that is not there"),
        choices=(
            "so nobody is charged for stock that is not there",
            "because inventory answers faster",
            "because payment needs the reservation's id",
        ),
        explanation="A hold on stock costs nothing to undo and nobody sees it; a charge is money on a "
        "customer's card, and a refund shows on their statement. Doing the cheap step first means "
        "a sold-out product stops the saga before any money moves, and a declined card (step 1) "
        "only has a hold to release.",
    ),
    Question(
        "refused-or-unknown",
        "In step 4 inventory answered 409 to the commit. Why did the saga compensate at once instead of retrying?",
        fixed("a 409 is a definite refusal: retrying cannot change it"),
        choices=(
            "a 409 is a definite refusal: retrying cannot change it",
            "the breaker was open",
            "the saga's deadline had passed",
        ),
        explanation="A 4xx is an answer: the peer did not do it and will not. A 5xx or a timeout leaves the "
        "outcome unknown: the client retries it with the same key, and the worker keeps trying "
        "until the saga's deadline before it compensates.",
    ),
]
