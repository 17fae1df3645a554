"""Lab 5, the circuit breaker: its steps, checks, solves and questions (the text is lab.md).

Every figure comes from the lab itself: the breaker's state and counters from
order_service's ``/_lab/resilience/``, each checkout's duration from its own
history (first entry to last), the rejected calls from order's ``/metrics``. A
checkout the open breaker turns away leaves no order (a 503 before its first
step): order_service's ``/_lab/resilience/`` notes the last one (``fail_fast``:
when, which peer, how many ms it took, its ``Retry-After``).
"""

from __future__ import annotations

import time

from labctl.labs.context import LabContext, parse_time, request_seconds
from labctl.labs.model import Question, SolveError, Step, failed, fixed, passed

OUTAGE = {"id": "preset-payment-outage", "kind": "outage", "ttl_seconds": 600}
PAUSED_BY_PAYMENT = "payment unavailable"
FAIL_FAST = "circuit open"


def _pause(order: dict) -> dict | None:
    """The history entry where the checkout stopped waiting: the saga paused (the worker may finish it later)."""
    return next((h for h in order.get("history") or [] if h.get("step") == "paused"), None)


def _pause_note(order: dict) -> str:
    pause = _pause(order)
    return pause.get("note", "") if pause else ""


def _paused_by_payment(orders: list[dict]) -> list[dict]:
    """The checkouts that paused on payment, whatever the worker did with them since (it resumes them)."""
    return [o for o in orders if PAUSED_BY_PAYMENT in _pause_note(o)]


def _ms(order: dict) -> int:
    return round(request_seconds(order) * 1000)


def _outage_on(ctx: LabContext) -> dict | None:
    return next((f for f in ctx.faults("payment") if f.get("kind") == "outage"), None)


# --- 1. payment goes down ----------------------------------------------------------------


def check_outage(ctx: LabContext):
    status, _ = ctx.health("payment")
    fault = _outage_on(ctx)
    if fault is None:
        return failed("payment_service has no outage fault yet: apply the “Payment outage” preset on the Faults page.")
    if status != 503:
        return failed(f"payment has an outage fault but its /health/ answered {status}; wait a second and check again.")
    return passed(
        f"payment_service answers 503 to everything (its /health/ too): fault {fault['id']}.",
        fault_id=fault["id"],
        payment_health=status,
    )


def solve_outage(ctx: LabContext) -> None:
    ctx.add_fault("payment", **OUTAGE)


# --- 2. checkouts while payment is down: the breaker opens --------------------------------


def _breaker_opened_since(ctx: LabContext, since: float) -> dict | None:
    breaker = ctx.breaker("order", "payment")
    opened = parse_time(breaker.get("opened_at"))
    if breaker["state"] != "closed" and opened is not None and opened >= since - 1:
        return breaker
    return None


def check_breaker_opens(ctx: LabContext):
    paused = _paused_by_payment(ctx.orders_since())
    breaker = _breaker_opened_since(ctx, ctx.passed_at("outage") or ctx.started_at)
    if not paused:
        return failed(
            "No checkout of yours has reached payment while it was down yet: run “Checkout (sync)” on the Flows page."
        )
    if breaker is None:
        state = ctx.breaker("order", "payment")
        return failed(
            f"{len(paused)} checkout(s) paused on payment, but the breaker on order → payment has not "
            f"opened yet ({state['state']}, {state['fail_counter']}/{state['fail_max']} failures): "
            "run a few more."
        )
    slow = [o for o in paused if FAIL_FAST not in _pause_note(o)]
    slowest = max(slow, key=_ms) if slow else paused[0]
    return passed(
        f"The breaker on order → payment opened after {breaker['fail_max']} failed calls; "
        f"{len(paused)} of your checkouts paused, the slowest took {_ms(slowest)} ms waiting for payment.",
        breaker_state=breaker["state"],
        fail_max=breaker["fail_max"],
        opened_at=breaker["opened_at"],
        paused_checkouts=len(paused),
        slowest_order=slowest["id"],
        slowest_ms=_ms(slowest),
    )


def _checkout_until(ctx: LabContext, done, *, most: int) -> None:
    customer = _customer(ctx)
    sku = ctx.in_stock_sku()
    for _ in range(most):
        customer.order(sku)
        if done():
            return
    raise SolveError(f"placed {most} checkouts and the expected effect did not show")


def _customer(ctx: LabContext):
    """The lab's customer; its card must have been saved before the outage (payment refuses cards while down)."""
    if "customer" not in ctx.state and _outage_on(ctx):
        raise SolveError("payment is down and no customer saved a card before: reset the lab and start again")
    return ctx.lab_customer()


def solve_breaker_opens(ctx: LabContext) -> None:
    _checkout_until(ctx, lambda: _breaker_opened_since(ctx, ctx.passed_at("outage") or ctx.started_at), most=8)


# --- 3. fail fast -------------------------------------------------------------------------


def _fail_fast_refusal(ctx: LabContext) -> dict | None:
    """The last checkout order_service refused at once because payment's breaker was open, since it opened."""
    since = ctx.passed_at("breaker-opens") or ctx.started_at
    refusal = ctx.resilience("order").get("fail_fast") or {}
    if refusal.get("peer") == "payment" and float(refusal.get("at") or 0) >= since:
        return refusal
    return None


def check_fail_fast(ctx: LabContext):
    refusal = _fail_fast_refusal(ctx)
    if refusal is None:
        return failed(
            "No checkout of yours has been turned away by the open breaker since it opened: run "
            "“Checkout (sync)” again (if the breaker went half-open, the first one is its trial call "
            "— run another)."
        )
    rejected = ctx.metrics("order").total("lab_peer_calls_total", peer="payment", outcome="rejected")
    slowest = ctx.observed("breaker-opens").get("slowest_ms", 0)
    ms = max(1, round(float(refusal["ms"])))
    return passed(
        f"Your checkout was refused in {ms} ms with 503 and Retry-After: {refusal['retry_after']}: order_service "
        f"called neither inventory nor payment, reserved nothing and saved no order (with the breaker closed "
        f"a checkout waited {slowest} ms).",
        fail_fast_ms=ms,
        retry_after=refusal["retry_after"],
        rejected_calls=int(rejected),
    )


def solve_fail_fast(ctx: LabContext) -> None:
    _checkout_until(ctx, lambda: _fail_fast_refusal(ctx), most=3)


# --- 4. the breaker off -------------------------------------------------------------------


def _waited_orders(ctx: LabContext) -> list[dict]:
    since = ctx.passed_at("fail-fast") or ctx.started_at
    return [o for o in _paused_by_payment(ctx.orders_since(since)) if FAIL_FAST not in _pause_note(o)]


def check_breaker_off(ctx: LabContext):
    switches = ctx.resilience("order")["switches"]
    if switches["breaker"]["enabled"]:
        return failed("order_service's breaker is still on: untick “breaker” for order on the Resilience page.")
    waited = _waited_orders(ctx)
    if not waited:
        return failed("The breaker is off; now run “Checkout (sync)” again while payment is still down.")
    order = waited[0]
    fast = ctx.observed("fail-fast").get("fail_fast_ms", 0)
    return passed(
        f"With the breaker off, order #{order['id']} waited {_ms(order)} ms for a dead payment (fail-fast: {fast} ms).",
        breaker_off_order=order["id"],
        breaker_off_ms=_ms(order),
    )


def solve_breaker_off(ctx: LabContext) -> None:
    ctx.set_switches("order", breaker={"enabled": False})
    _checkout_until(ctx, lambda: _waited_orders(ctx), most=2)


# --- 5. recovery: half-open, then closed --------------------------------------------------


def _confirmed_since(ctx: LabContext, since: float) -> list[dict]:
    """Checkouts placed since ``since`` that confirmed in their own request (not resumed later by the worker)."""
    return [o for o in ctx.orders_since(since) if o.get("status") == "CONFIRMED" and _pause(o) is None]


def check_recover(ctx: LabContext):
    if _outage_on(ctx):
        return failed("payment is still down: clear its outage on the Faults page (“Clear all”).")
    if not ctx.resilience("order")["switches"]["breaker"]["enabled"]:
        return failed("Turn order's breaker back on (Resilience page) before you test the recovery.")
    breaker = ctx.breaker("order", "payment")
    earlier = [ctx.passed_at(key) for key in ("outage", "breaker-opens", "fail-fast", "breaker-off")]
    confirmed = _confirmed_since(ctx, max(filter(None, earlier), default=ctx.started_at))
    if breaker["state"] != "closed" or not confirmed:
        return failed(
            f"The breaker on order → payment is {breaker['state']} and no checkout of yours has been "
            f"confirmed since the outage: wait {breaker['reset_timeout']:g} s after it opened, then run "
            "“Checkout (sync)”.",
            breaker_state=breaker["state"],
        )
    order = confirmed[0]
    return passed(
        f"The breaker on order → payment is closed again (a trial call in half-open went through) and "
        f"your order #{order['id']} was confirmed in {_ms(order)} ms.",
        recovered_order=order["id"],
        recovered_ms=_ms(order),
        breaker_state=breaker["state"],
    )


def solve_recover(ctx: LabContext) -> None:
    ctx.set_switches("order", breaker={"enabled": True})
    ctx.clear_faults("payment")
    breaker = ctx.breaker("order", "payment")
    opened = parse_time(breaker.get("opened_at")) or 0
    wait = opened + float(breaker["reset_timeout"]) + 0.5 - ctx.clock()
    if breaker["state"] != "closed" and wait > 0:
        ctx.sleep(min(wait, 30))
    customer = _customer(ctx)
    sku = ctx.in_stock_sku()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        customer.order(sku)
        if ctx.breaker("order", "payment")["state"] == "closed":
            return
        ctx.sleep(1)
    raise SolveError("the breaker did not close within 20 s of payment coming back")


def prepare(ctx: LabContext) -> None:
    """Show me of the outage step: a customer saves a card first (payment refuses cards while it is down)."""
    _customer(ctx)
    solve_outage(ctx)


STEPS = [
    Step(
        "outage",
        "Take payment down",
        check_outage,
        prepare,
        hints=("On the Faults page, the preset “Payment outage” (it lasts 2 minutes; apply it again if it runs out).",),
        link="/faults/#preset-payment-outage",
        link_label="Faults: the Payment outage preset",
        terminal="labctl fault add payment outage --ttl 600",
    ),
    Step(
        "breaker-opens",
        "Check out while payment is down, until the breaker opens",
        check_breaker_opens,
        solve_breaker_opens,
        hints=(
            "Flows page → “Checkout (sync)” → Run; three or four runs open it.",
            "The Overview shows the breaker on the edge order → payment.",
        ),
        link="/flows/",
        link_label="Flows: Checkout (sync)",
        terminal="labctl resilience order   # breakers: payment open",
    ),
    Step(
        "fail-fast",
        "One more checkout with the breaker open",
        check_fail_fast,
        solve_fail_fast,
        hints=("Run “Checkout (sync)” again within 10 s of the breaker opening.",),
        link="/flows/",
        link_label="Flows: Checkout (sync)",
    ),
    Step(
        "breaker-off",
        "Turn the breaker off and check out again",
        check_breaker_off,
        solve_breaker_off,
        hints=("Resilience page → order_service → untick “breaker” → Save; then Flows → Checkout (sync).",),
        link="/resilience/#switches-order",
        link_label="Resilience: order's breaker",
        terminal="labctl resilience order --set breaker.enabled=false",
    ),
    Step(
        "recover",
        "Bring payment back: half-open, then closed",
        check_recover,
        solve_recover,
        hints=("Turn order's breaker back on, “Clear all” on the Faults page, wait 10 s, run Checkout (sync).",),
        link="/faults/",
        link_label="Faults: Clear all",
        terminal="labctl resilience order --set breaker.enabled=true && labctl fault clear --all",
    ),
]


def _speedup(ctx: LabContext, progress: dict) -> float:
    off = ctx.observed("breaker-off").get("breaker_off_ms")
    fast = ctx.observed("fail-fast").get("fail_fast_ms")
    if not off or fast is None:
        from labctl.labs.model import CheckError

        raise CheckError("pass the steps “fail-fast” and “breaker-off” first")
    return round(off / max(fast, 1), 1)


QUESTIONS = [
    Question(
        "speedup",
        "From your own figures (steps 3 and 4): how many times longer did the checkout with the "
        "breaker off wait than the fail-fast one? (breaker-off ms ÷ fail-fast ms)",
        _speedup,
        relative=0.15,
        tolerance=0.5,
        unit="×",
        explanation="The open breaker answers at once, without a call; with it off, every checkout pays the "
        "client's timeouts and retries against a dead peer.",
    ),
    Question(
        "half-open",
        "After the outage, the breaker let one trial call through to payment. In which state was it then?",
        fixed("half-open"),
        choices=("closed", "open", "half-open"),
        explanation="After reset_timeout an open breaker turns half-open: the next call is a trial; "
        "success closes it, a failure opens it again for another reset_timeout.",
    ),
    Question(
        "what-it-saves",
        "With payment down, what does the open breaker save?",
        fixed("the wait of every checkout and order's threads"),
        choices=("the customer's money", "the wait of every checkout and order's threads", "payment's database"),
        explanation="No money moves either way (the charge never happens); the breaker saves time and "
        "capacity: order stops spending a thread and a second on a peer known to be down.",
    ),
]
