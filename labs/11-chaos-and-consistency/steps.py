"""Lab 11, chaos and consistency: its steps, checks, solves and questions (the text is lab.md).

Every figure comes from the lab itself: the chaos runs from their own files
(``var/loadtests/<run>/summary.json`` and its audit, as the Load page shows
them), each order's history from order's API (a charge whose answer was lost
is noted "learnt from payment after its answer was lost"), the charges of an
order from payment's ledger, and the audit across the four services.
"""

from __future__ import annotations

from chassis import parts
from labctl.audit import MONEY_CHECKS
from labctl.labs.context import LabContext, parse_time
from labctl.labs.model import CheckError, Question, SolveError, Step, failed, fixed, passed

SCENARIO = "chaos_timeline"
ANSWERS_LOST = parts.preset_fault("payment-answers-lost")  # the Faults page's preset of that name
UNSAFE = "charge_retry_new_key"
# What the solves run: small enough for two cores, long enough for every phase of the timeline.
CHAOS_USERS, CHAOS_DURATION = 4, "30s"
LOST_NOTE = "after its answer was lost"


# --- what the checks read -------------------------------------------------------------------


def _no_run_yet(ctx: LabContext, since: float, what: str) -> str:
    live = ctx.running_run(SCENARIO, since)
    if live:
        return (
            f"Chaos run {live['run_id']} is still {live['state']}: its page (Load → the run) says Finished once it "
            "has settled its orders and run its audit, about a minute in all; then check again."
        )
    return what


def _run_orders(ctx: LabContext, run: dict) -> list[dict]:
    """The orders created while the run ran (its users', and anyone else's meanwhile)."""
    started = parse_time(run["started_at"]) or 0
    finished = parse_time(run.get("finished_at") or (run.get("summary") or {}).get("finished_at")) or ctx.clock()
    return [o for o in ctx.orders_since(started) if (parse_time(o.get("created_at")) or 0) <= finished]


def _lost_answer(order: dict) -> bool:
    return any(h.get("step") == "charged" and LOST_NOTE in (h.get("note") or "") for h in order.get("history") or [])


def _charges(ctx: LabContext, order_id) -> tuple[int, int]:
    """``(captured charges, cents still held)`` for the order, from payment's ledger."""
    entries = ctx.staff_json("payment", "/api/ledger/", order_id=str(order_id), page_size=100).get("results", [])
    entries = [e for e in entries if str(e.get("order_id")) == str(order_id)]
    return sum(1 for e in entries if e.get("kind") == "CHARGE"), sum(e["amount_cents"] for e in entries)


def _money_violations(audit: dict) -> list[dict]:
    """The audit's violations about money, each with its check's title and the order it names."""
    found = []
    for check in audit["checks"]:
        if check["name"] in MONEY_CHECKS:
            for violation in check["violations"]:
                found.append({**violation, "title": check["title"], "order": str(violation["ids"].get("order"))})
    return found


def _unsafe_on(ctx: LabContext) -> bool:
    return bool((ctx.resilience("order")["switches"].get("unsafe") or {}).get(UNSAFE))


# --- 1. chaos with payment's answers lost: the defences hold ----------------------------------


def check_chaos(ctx: LabContext):
    run = ctx.finished_run(SCENARIO, ctx.started_at)
    if run is None:
        return failed(
            _no_run_yet(
                ctx,
                ctx.started_at,
                "No chaos run of yours has finished since you started this lab: on the Faults page apply "
                "“Payment's answers lost”, then on the Load page run chaos_timeline (4 users, spawn rate 2, "
                "duration 30s).",
            )
        )
    orders = _run_orders(ctx, run)
    lost = [o for o in orders if _lost_answer(o)]
    if not lost:
        return failed(
            f"Chaos run {run['run_id']} finished, but no order of it had its charge's answer lost: apply "
            "“Payment's answers lost” on the Faults page first (it lasts 5 minutes), then run the chaos again."
        )
    twice = [o["id"] for o in lost if _charges(ctx, o["id"])[0] != 1]
    if twice:
        return failed(f"Orders {twice} were charged more than once: is the unsafe switch on? Reset this lab.")
    run_audit = run["summary"].get("audit") or {}
    audit = ctx.audit()
    if not audit["ok"] or not run_audit.get("ok"):
        broken = [v["message"] for c in audit["checks"] for v in c["violations"]][:3]
        return failed(f"The audit is red after run {run['run_id']}: {'; '.join(broken) or run_audit.get('error')}.")
    totals = run["summary"]["totals"]
    return passed(
        f"Chaos run {run['run_id']}: {len(orders)} orders placed through an outage, a slow inventory and "
        f"{len(lost)} charges whose answer was lost; each of those was charged exactly once (the retry carried "
        f"the same key, and the saga asked payment what it had captured). The audit is green.",
        chaos_run=run["run_id"],
        orders=len(orders),
        lost_answers=len(lost),
        explained_failures=totals["expected_outcomes"]["explained"],
        audit_ok=True,
    )


def solve_chaos(ctx: LabContext) -> None:
    ctx.add_fault("payment", **ANSWERS_LOST)
    ctx.run_load(SCENARIO, users=CHAOS_USERS, duration=CHAOS_DURATION)


# --- 2. the unsafe switch ---------------------------------------------------------------------


def check_unsafe_on(ctx: LabContext):
    if not _unsafe_on(ctx):
        return failed(
            "order's unsafe switch is off: on the Resilience page tick “UNSAFE: retry a lost charge with a new "
            "idempotency key” and press Apply to order."
        )
    return passed(
        "order's unsafe switch is ON: a charge whose answer was lost is now sent again under a new key.",
        unsafe_switch=f"order unsafe.{UNSAFE}",
    )


def solve_unsafe_on(ctx: LabContext) -> None:
    ctx.set_switches("order", unsafe={UNSAFE: True})


# --- 3. the same chaos without the defence ------------------------------------------------------


def check_unsafe_chaos(ctx: LabContext):
    since = ctx.since_passed("unsafe-on")
    run = ctx.finished_run(SCENARIO, since)
    if run is None:
        return failed(
            _no_run_yet(
                ctx,
                since,
                "No chaos run has finished since you turned the unsafe switch on: apply “Payment's answers "
                "lost” again (the first run cleared it) and run chaos_timeline again from the Load page.",
            )
        )
    ids = {str(o["id"]) for o in _run_orders(ctx, run)}
    audit = ctx.audit()
    named = [v for v in _money_violations(audit) if v["order"] in ids]
    if not named:
        state = "green" if audit["ok"] else "red, but about none of this run's orders"
        return failed(
            f"Chaos run {run['run_id']} finished and the audit is {state}: was the unsafe switch on, and "
            "“Payment's answers lost” applied, during the run? Check step 2, apply the preset and run again."
        )
    orders = sorted({int(v["order"]) for v in named})
    extra = 0
    for order_id in orders:
        captured, held = _charges(ctx, order_id)
        order = ctx.order(order_id)
        extra += held - (order["total_cents"] if order["status"] != "CANCELLED" else 0)
    return passed(
        f"The audit is red: {len(orders)} orders of run {run['run_id']} were charged more than once "
        f"({', '.join(f'#{o}' for o in orders[:10])}{'…' if len(orders) > 10 else ''}), {extra} cents taken "
        f"that no order accounts for. First violation: {named[0]['message']}.",
        unsafe_run=run["run_id"],
        charged_twice=", ".join(str(o) for o in orders),
        charged_twice_count=len(orders),
        extra_cents=extra,
        broken_invariant=named[0]["title"],
        audit_ok=False,
    )


def solve_unsafe_chaos(ctx: LabContext) -> None:
    if not _unsafe_on(ctx):
        raise SolveError("the unsafe switch is off: do step 2 first")
    ctx.add_fault("payment", **ANSWERS_LOST)
    ctx.run_load(SCENARIO, users=CHAOS_USERS, duration=CHAOS_DURATION)


# --- 4. the defence back: a lost answer, one charge -------------------------------------------


def check_safe_again(ctx: LabContext):
    if _unsafe_on(ctx):
        return failed("The unsafe switch is still on: untick it on the Resilience page and Apply to order.")
    since = ctx.since_passed("unsafe-chaos")
    lost = [o for o in ctx.orders_since(since) if _lost_answer(o) and o.get("status") == "CONFIRMED"]
    if not lost:
        return failed(
            "No checkout since step 3 had its charge's answer lost: apply “Payment's answers lost” on the "
            "Faults page, run “Checkout (sync)” on the Flows page, clear payment's fault, then check again."
        )
    order = lost[0]
    captured, held = _charges(ctx, order["id"])
    if captured != 1:
        return failed(
            f"Order #{order['id']} lost its charge's answer and payment holds {captured} charges for it: was the "
            "unsafe switch still on when it was placed? Check again after a new checkout."
        )
    return passed(
        f"Order #{order['id']}: payment's answer was lost, the client retried under the same key, the saga "
        f"asked payment what it held and confirmed the order with exactly one charge of {held} cents.",
        safe_order=order["id"],
        captured_charges=captured,
        charged_cents=held,
    )


def solve_safe_again(ctx: LabContext) -> None:
    ctx.set_switches("order", unsafe={UNSAFE: False})
    customer = ctx.lab_customer()
    ctx.add_fault("payment", **ANSWERS_LOST)
    try:
        response = customer.order(ctx.in_stock_sku())
    finally:
        ctx.clear_faults("payment")
    if response.status_code not in (200, 201):
        raise SolveError(f"the checkout answered {response.status_code}: {response.text[:200]}")


STEPS = [
    Step(
        "chaos",
        "Chaos with payment's answers lost: the audit stays green",
        check_chaos,
        solve_chaos,
        hints=(
            "Faults page → preset “Payment's answers lost” (payment charges, then answers 503).",
            "Load page → scenario chaos_timeline, 4 users, spawn rate 2, duration 30s → Start; keep the Audit "
            "page open in another tab while it runs.",
            "The run ends with its own audit (about a minute in all): then press Check.",
        ),
        link="/faults/#preset-payment-answers-lost",
        link_label="Faults: Payment's answers lost, then Load",
        terminal="labctl fault add payment error --status 503 --mode after --path-prefix /internal/charges/ "
        "--method POST --ttl 300 && labctl load --scenario chaos_timeline --users 4 --duration 30s",
    ),
    Step(
        "unsafe-on",
        "Take a defence away: the unsafe switch",
        check_unsafe_on,
        solve_unsafe_on,
        hints=("Resilience page → order's panel → tick the red “UNSAFE” box → Apply to order.",),
        link="/resilience/",
        link_label="Resilience: order's unsafe switch",
        terminal="labctl resilience order --set unsafe.charge_retry_new_key=true",
    ),
    Step(
        "unsafe-chaos",
        "The same chaos without the defence: the audit names the orders",
        check_unsafe_chaos,
        solve_unsafe_chaos,
        hints=(
            "Apply “Payment's answers lost” again: the first chaos run cleared every fault at its end.",
            "Load page → chaos_timeline with the same figures → Start; then the Audit page.",
        ),
        link="/faults/#preset-payment-answers-lost",
        link_label="Faults: Payment's answers lost again, then Load",
        terminal="labctl fault add payment error --status 503 --mode after --path-prefix /internal/charges/ "
        "--method POST --ttl 300 && labctl load --scenario chaos_timeline --users 4 --duration 30s; labctl audit",
    ),
    Step(
        "safe-again",
        "The defence back: a lost answer, one charge",
        check_safe_again,
        solve_safe_again,
        hints=(
            "Resilience page → untick the UNSAFE box → Apply to order.",
            "Faults page → “Payment's answers lost”; Flows page → “Checkout (sync)”; then clear payment's fault.",
        ),
        link="/resilience/",
        link_label="Resilience: the unsafe switch off",
        terminal="labctl resilience order --set unsafe.charge_retry_new_key=false",
    ),
]


# --- questions --------------------------------------------------------------------------------


INVARIANTS = (
    "Each confirmed order has one captured charge of its total and committed stock",
    "Each cancelled order has no net charge and holds no stock",
    "Stock is conserved (initial + restocks = available + reserved + sold)",
    "No money or stock belongs to an unknown order",
)


def _broken_invariant(ctx: LabContext, progress: dict) -> str:
    answer = ctx.figure("unsafe-chaos", "broken_invariant")
    if answer not in INVARIANTS:
        raise CheckError(f"the invariant your audit named (“{answer}”) is not one of this question's choices")
    return answer


QUESTIONS = [
    Question(
        "lost-answers",
        "In your first chaos run (step 1), how many orders had their charge's answer lost — and still ended "
        "with exactly one charge?",
        lambda ctx, progress: ctx.figure("chaos", "lost_answers"),
        explanation="Payment captured each of those charges and answered 503 afterwards. The client retried "
        "under the order's key (order-<id>-charge): payment replayed its first charge instead of taking a "
        "second one. When every attempt's answer was lost, the saga asked payment what it held for the order "
        "and went on with that charge.",
    ),
    Question(
        "charged-twice",
        "After the unsafe run (step 3), how many of your orders did the audit name as charged more than once?",
        lambda ctx, progress: ctx.figure("unsafe-chaos", "charged_twice_count"),
        explanation="Each of them lost a charge's answer while the switch was on: the saga sent the charge "
        "again under a new key, and payment — which can only recognise a retry by its key — captured again.",
    ),
    Question(
        "broken-invariant",
        "Which of the audit's invariants did the first order it named in step 3 break?",
        _broken_invariant,
        choices=INVARIANTS,
        explanation="A confirmed order must have exactly one captured charge of its total; an order that was "
        "cancelled after its second charge keeps money it should not. No service sees this alone: order knows "
        "one charge, payment knows two; only joining their data by order id (the audit) shows it.",
    ),
    Question(
        "why-key",
        "Why can payment not tell a retried charge from a new one when the unsafe switch is on?",
        fixed("the retry carries a new idempotency key"),
        choices=(
            "the retry carries a new idempotency key",
            "the breaker was open",
            "payment's answer was a 503",
        ),
        explanation="The key is the only thing that makes two requests “the same charge”. Made once per order "
        "and sent with every attempt, it turns a retry into a replay; made anew for each attempt, every "
        "retry is a new charge — precisely when an answer was lost and a retry is most needed.",
    ),
]
