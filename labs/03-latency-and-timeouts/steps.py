"""Lab 3, latency and timeouts: its steps, checks, solves and questions (the text is lab.md).

Every figure comes from the lab itself: the fault from inventory's
``/_lab/faults/``, each checkout's duration from its own history (first entry
to last), order's p95 from its ``/metrics`` histogram of ``/api/orders/``
(the change since the steady-state check), the switches from order's
``/_lab/resilience/``.
"""

from __future__ import annotations

import math
import time

from labctl.labs import checks
from labctl.labs.context import LabContext, history_seconds, parse_time, request_seconds
from labctl.labs.model import CheckError, Question, SolveError, Step, failed, fixed, passed

RESERVE_PATH = "/internal/reservations/"
SLOW = {
    "id": "lab3-slow-reservations",
    "kind": "latency",
    "delay_ms": 800,
    "path_prefix": RESERVE_PATH,
    "method": "POST",
    "ttl_seconds": 900,
}
TIGHT_READ_TIMEOUT = 0.3
SLOW_CHECKOUTS = 3
ROUTE = "/api/orders/"
HISTOGRAM = "lab_http_request_duration_seconds_bucket"


# --- figures ------------------------------------------------------------------------------


def _orders_histogram(ctx: LabContext) -> list[list]:
    """order's cumulative buckets of ``/api/orders/`` as ``[[le, count], ...]``, by bound."""
    rows = {}
    for name, labels, value in ctx.metrics("order").samples:
        if name == HISTOGRAM and labels.get("route") == ROUTE:
            rows[labels["le"]] = rows.get(labels["le"], 0) + value
    return sorted(([float(le), int(n)] for le, n in rows.items()), key=lambda row: row[0])


def _histogram_p95(now: list[list], base: list[list]) -> float | None:
    """The p95 of the requests counted between ``base`` and ``now``, as Prometheus' histogram_quantile does."""
    before = dict(base)
    delta = [(le, n - before.get(le, 0)) for le, n in now]
    total = delta[-1][1] if delta else 0
    if total <= 0:
        return None
    rank, lower, below = 0.95 * total, 0.0, 0
    for le, cumulative in delta:
        if cumulative >= rank:
            if le == float("inf"):
                return lower
            inside = cumulative - below
            return round(lower + (le - lower) * ((rank - below) / inside if inside else 1.0), 2)
        lower, below = le, cumulative
    return lower


def _p95(values: list[float]) -> float:
    """The nearest-rank p95: the smallest duration that 95 % of them do not exceed."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def _s(seconds: float) -> float:
    return round(seconds, 2)


def _slow_fault(ctx: LabContext) -> dict | None:
    """The latency fault on inventory that slows order's reservations (POST /internal/reservations/), if any."""
    for fault in ctx.faults("inventory"):
        if (
            fault.get("kind") == "latency"
            and fault.get("delay_ms", 0) >= 300
            and RESERVE_PATH.startswith(fault.get("path_prefix") or "")
            and fault.get("method") in ("", None, "POST")
            and fault.get("probability", 1.0) >= 0.99
        ):
            return fault
    return None


def _checkout(ctx: LabContext, count: int) -> None:
    customer = ctx.lab_customer()
    sku = ctx.in_stock_sku(count)
    for _ in range(count):
        customer.order(sku)


# --- 0. steady state, and order's latency before the fault -------------------------------


def check_steady(ctx: LabContext):
    outcome = checks.steady_state(ctx)
    if not outcome.passed:
        return outcome
    histogram = _orders_histogram(ctx)
    return passed(
        outcome.message + " Order's latency histogram is recorded as your baseline.",
        **outcome.observed,
        orders_histogram=histogram,
    )


STEADY = Step(
    key="steady-state",
    title=checks.STEADY.title,
    check=check_steady,
    solve=checks.STEADY.solve,
    hints=checks.STEADY.hints,
    link=checks.STEADY.link,
    link_label=checks.STEADY.link_label,
    terminal=checks.STEADY.terminal,
)


# --- 1. inventory's reservations slow down; order's p95 rises -------------------------------


def check_slow(ctx: LabContext):
    fault = _slow_fault(ctx)
    if fault is None:
        return failed(
            "inventory has no latency fault on its reservations yet: on the Faults page add a latency "
            "fault to inventory, 800 ms, path prefix /internal/reservations/, method POST."
        )
    histogram = _orders_histogram(ctx)  # scraped before the checks' own GETs of /api/orders/
    orders = [o for o in ctx.orders_since(fault["created_at"]) if o.get("status") == "CONFIRMED"]
    if len(orders) < SLOW_CHECKOUTS:
        return failed(
            f"{len(orders)} checkout(s) confirmed since inventory slowed down; run “Checkout (sync)” on "
            f"the Flows page until you have {SLOW_CHECKOUTS}.",
            fault_id=fault["id"],
        )
    durations = [history_seconds(o) for o in orders]
    p95 = _p95(durations)
    delay = fault["delay_ms"] / 1000
    if p95 < delay:
        return failed(
            f"Your checkouts since the fault took at most {_s(max(durations))} s, less than inventory's "
            f"{fault['delay_ms']} ms: is the fault on the path order reserves on?"
        )
    slowest = max(orders, key=history_seconds)
    base = ctx.observed("steady-state").get("orders_histogram") or []
    metrics_p95 = _histogram_p95(histogram, base)
    figures = {
        "fault_id": fault["id"],
        "delay_ms": fault["delay_ms"],
        "slow_checkouts": len(orders),
        "p95_s": _s(p95),
        "slowest_order": slowest["id"],
        "slowest_s": _s(history_seconds(slowest)),
    }
    said = ""
    if metrics_p95 is not None:
        figures["metrics_p95_s"] = metrics_p95
        said = f" order's /metrics puts the p95 of /api/orders/ since your steady-state check at {metrics_p95} s."
    return passed(
        f"{len(orders)} checkouts confirmed while inventory was slow; their p95 is {_s(p95)} s "
        f"(slowest: order #{slowest['id']}, {_s(history_seconds(slowest))} s): each waited "
        f"{fault['delay_ms']} ms for the reservation and again for the commit.{said}",
        **figures,
    )


def solve_slow(ctx: LabContext) -> None:
    ctx.add_fault("inventory", **SLOW)
    _checkout(ctx, SLOW_CHECKOUTS)


# --- 2. the defence: a tighter read timeout -------------------------------------------------


def _delay_seconds(ctx: LabContext) -> float:
    fault = _slow_fault(ctx)
    if fault is not None:
        return fault["delay_ms"] / 1000
    return (ctx.observed("slow").get("delay_ms") or SLOW["delay_ms"]) / 1000


def check_tighten(ctx: LabContext):
    switches = ctx.resilience("order")["switches"]
    timeouts, retries = switches["timeouts"], switches["retries"]
    delay = _delay_seconds(ctx)
    if not timeouts["enabled"]:
        return failed(
            "order's timeouts are switched off (it would wait up to 30 s): tick “timeouts” for "
            "order_service on the Resilience page and set read to 0.3."
        )
    if timeouts["read"] >= delay:
        return failed(
            f"order's read timeout is {timeouts['read']:g} s, longer than inventory's {delay * 1000:g} ms: "
            "order still waits for every answer. On the Resilience page set order_service's timeouts "
            "read to 0.3.",
            read_timeout_s=timeouts["read"],
        )
    attempts = int(retries["attempts"]) if retries["enabled"] else 1
    return passed(
        f"order now gives up on any peer after {timeouts['read']:g} s without an answer "
        f"(inventory takes {delay * 1000:g} ms), and tries {attempts} time(s).",
        read_timeout_s=timeouts["read"],
        connect_timeout_s=timeouts["connect"],
        attempts=attempts,
    )


def solve_tighten(ctx: LabContext) -> None:
    ctx.set_switches("order", timeouts={"enabled": True, "read": TIGHT_READ_TIMEOUT})


# --- 3. check again: fail fast, and a readable reason -----------------------------------------


def _gave_up_on_inventory(order: dict) -> bool:
    text = " ".join([order.get("status_reason") or ""] + [h.get("note", "") for h in order.get("history") or []])
    return order.get("status") != "CONFIRMED" and "nventory unavailable" in text


def _seconds_to(order: dict, steps: tuple[str, ...]) -> float | None:
    history = order.get("history") or []
    start = parse_time(history[0]["at"]) if history else None
    for entry in history:
        if entry.get("step") in steps and start is not None:
            return parse_time(entry["at"]) - start
    return None


def _fail_fast_orders(ctx: LabContext) -> list[dict]:
    since = ctx.passed_at("slow") or ctx.started_at
    return [o for o in ctx.orders_since(since) if _gave_up_on_inventory(o)]


def check_fail_fast(ctx: LabContext):
    if _slow_fault(ctx) is None:
        return failed("inventory is not slow any more: add the latency fault of step 1 again, then check out.")
    found = _fail_fast_orders(ctx)
    if not found:
        return failed(
            "No checkout of yours has given up on inventory yet: with the tighter timeout, run "
            "“Checkout (sync)” once more. (Scope the fault to /internal/reservations/ and POST: a fault "
            "on every inventory request also slows order's look-up of a lost reservation.)"
        )
    order = found[0]
    history = order.get("history") or []
    gave_up = _seconds_to(order, ("compensating", "inventory_unavailable", "cancelled"))
    found_hold = any(h.get("step") == "reservation_found" for h in history)
    last = history[-1]["note"] if history else ""
    slow = ctx.observed("slow").get("slowest_s")
    return passed(
        f"Order #{order['id']} gave up on the reservation after {_s(gave_up or 0)} s and answered "
        f"{order['status']} after {_s(request_seconds(order))} s (slow but confirmed: {slow} s). "
        f"Reason: “{order.get('status_reason')}”; last note: “{last}”."
        + (
            " Inventory had reserved the stock all the same: order found the hold and must release it."
            if found_hold
            else ""
        ),
        fail_fast_order=order["id"],
        status=order["status"],
        reason=order.get("status_reason") or "",
        last_note=last,
        gave_up_s=_s(gave_up or 0),
        answered_s=_s(request_seconds(order)),
        hold_found="yes" if found_hold else "no",
    )


def solve_fail_fast(ctx: LabContext) -> None:
    _checkout(ctx, 1)


# --- 4. clean up: the fault goes, the paused checkout finishes --------------------------------


def check_recover(ctx: LabContext):
    if _slow_fault(ctx) is not None or any(f.get("kind") == "latency" for f in ctx.faults("inventory")):
        return failed("inventory is still slow: clear its latency fault on the Faults page (“Clear all”).")
    order_id = ctx.observed("fail-fast").get("fail_fast_order")
    if not order_id:
        return failed("Pass step 3 first: the check needs the order that gave up on inventory.")
    order = ctx.order(order_id)
    if order.get("status") == "PENDING":
        return failed(
            f"Order #{order_id} is still PENDING (“{(order.get('history') or [{}])[-1].get('note', '')}”): "
            "the worker's recovery finishes it within about 15 s of inventory answering again; check "
            "again shortly."
        )
    history = order.get("history") or []
    released = any(h.get("step") == "released" for h in history)
    return passed(
        f"Order #{order_id} ended {order['status']}: “{order.get('status_reason')}”"
        + (", and the stock it held was released." if released else "."),
        recovered_order=order_id,
        final_status=order["status"],
        released="yes" if released else "no",
    )


def solve_recover(ctx: LabContext) -> None:
    ctx.clear_faults("inventory")
    ctx.admin("DELETE", "order", "/_lab/resilience/")
    ctx.sleep(1.1)
    order_id = ctx.observed("fail-fast").get("fail_fast_order")
    deadline = time.monotonic() + 120
    while order_id and time.monotonic() < deadline:
        if ctx.order(order_id).get("status") != "PENDING":
            return
        ctx.sleep(2)
    raise SolveError(f"order #{order_id} was still PENDING two minutes after inventory recovered")


STEPS = [
    Step(
        "slow",
        "Slow down inventory's reservations and check out",
        check_slow,
        solve_slow,
        hints=(
            "Faults page → inventory → kind latency, delay 800 ms, path prefix /internal/reservations/, "
            "method POST → Add. Then Flows → “Checkout (sync)” → Run, three times.",
            "Not the “Slow inventory” preset: it slows the look-up of a lost reservation too (see step 3).",
        ),
        link="/faults/",
        link_label="Faults: add a latency fault on inventory",
        terminal="labctl fault add inventory latency --delay-ms 800 --path-prefix /internal/reservations/ "
        "--method POST --ttl 900",
    ),
    Step(
        "tighten",
        "Tighten order's read timeout",
        check_tighten,
        solve_tighten,
        hints=(
            "Resilience page → order_service → timeouts: read 0.3 → Save.",
            "The switch is per service: it applies to order's calls to payment too, not only to inventory.",
        ),
        link="/resilience/",
        link_label="Resilience: order's timeouts",
        terminal="labctl resilience order --set timeouts.read=0.3",
    ),
    Step(
        "fail-fast",
        "Check out again: order gives up on inventory",
        check_fail_fast,
        solve_fail_fast,
        hints=("Flows → “Checkout (sync)” → Run once, with the fault still on.",),
        link="/flows/",
        link_label="Flows: Checkout (sync)",
    ),
    Step(
        "recover",
        "Clear the fault; the paused checkout finishes",
        check_recover,
        solve_recover,
        hints=(
            "Faults page → “Clear all”; Resilience page → order_service → timeouts read back to 5 → Apply. "
            "Then wait about 15 s and check.",
        ),
        link="/faults/",
        link_label="Faults: Clear all",
        terminal="labctl fault clear --all && labctl resilience order --set timeouts.read=5",
    ),
]


# --- questions ----------------------------------------------------------------------------


def _attempts(ctx: LabContext, progress: dict) -> int:
    attempts = ctx.observed("tighten").get("attempts")
    if attempts is None:
        raise CheckError("pass step 2 (the tighter timeout) first")
    return int(attempts)


def _hang_wait(ctx: LabContext, progress: dict) -> float:
    defaults = ctx.resilience("order")["defaults"]
    attempts = int(defaults["retries"]["attempts"]) if defaults["retries"]["enabled"] else 1
    return round(float(defaults["timeouts"]["read"]) * attempts, 2)


def _hold_found(ctx: LabContext, progress: dict) -> str:
    found = ctx.observed("fail-fast").get("hold_found")
    if found is None:
        raise CheckError("pass step 3 (the checkout that gave up) first")
    return found


QUESTIONS = [
    Question(
        "attempts",
        "Order's read timeout was 0.3 s, yet your checkout of step 3 spent more than a second on "
        "the reservation before giving up (gave_up_s). How many times did order send the reservation?",
        _attempts,
        tolerance=0,
        explanation="The reservation carries an Idempotency-Key, so the client retries it after a timeout: "
        "attempts × read timeout, plus a little backoff, is what one call can cost.",
    ),
    Question(
        "hang",
        "If inventory hung (never answered) instead of being slow, how many seconds at most would "
        "order wait on the reservation alone with its default switches (read timeout × attempts; ignore "
        "the backoff)?",
        _hang_wait,
        tolerance=0.5,
        unit="s",
        explanation="With the defaults (5 s read timeout, 3 attempts) one hung call costs 15 s; with 0.3 s it "
        "costs under a second and a half. A timeout bounds the wait whatever the peer does.",
    ),
    Question(
        "held",
        "When order gave up on your step-3 checkout, had inventory reserved the stock?",
        _hold_found,
        choices=("yes", "no"),
        explanation="A timeout says the caller stopped waiting, not that nothing happened: inventory finished "
        "the reservation 0.8 s after each request arrived. That is why order looks the hold up "
        "and releases it before it calls the order CANCELLED.",
    ),
    Question(
        "budget",
        "Why must order's timeout to inventory be shorter than the client's timeout to order?",
        fixed("so order can give up, undo and answer before its own caller gives up"),
        choices=(
            "because inventory is slower than order",
            "so order can give up, undo and answer before its own caller gives up",
            "so that order needs fewer retries",
        ),
        explanation="Each hop spends part of its caller's budget. If order waited on inventory as long as the "
        "client waits on order, the client would give up first and never learn what happened "
        "(nor could order compensate in time). Timeouts shrink downstream: each one is the "
        "budget left, divided by the attempts.",
    ),
]
