"""Lab 7, bulkheads: its steps, checks, solves and questions (the text is lab.md).

Every figure comes from the lab itself: each load run's own ``summary.json``
(``var/loadtests/<run>/``, as the Load page shows it), its ``list orders`` row
(readers who only list their orders) and its ``POST /api/orders/`` row (the
checkouts); the fault and the switches from order_service's ``/_lab/`` API.
The hang is a dependency fault in order_service: each of its calls to payment
waits until its read timeout, as if payment had stopped answering.
"""

from __future__ import annotations

import time

from labctl.labs.context import LabContext
from labctl.labs.model import CheckError, Question, SolveError, Step, failed, fixed, passed

SCENARIO = "bulkhead"
LIST_ROW = "list orders"  # loadtests/bulkhead.py's name for GET /api/orders/?page_size=10
CHECKOUT_ROW = "/api/orders/"
HANG = {"id": "payment-hangs", "kind": "dependency", "target": "payment", "mode": "hang", "ttl_seconds": 600}
# What the solves run: more buyers than the order service has request threads (8), two readers.
USERS, SPAWN_RATE, DURATION = 18, 10, "20s"
# The Load page opened from a step with the scenario and these figures filled in.
LOAD_LINK = f"/load/?scenario={SCENARIO}&users={USERS}&spawn_rate={SPAWN_RATE}&duration={DURATION}"
# A list of orders is stalled when it failed (the reader gave up after 5 s) or its p95 grew this much.
STALL_FACTOR, STALL_FLOOR_MS = 5, 2000
# ... and responsive when none failed and its p95 stayed under half a reader's patience (5 s).
RESPONSIVE_MS = 2500


# --- what the checks read -------------------------------------------------------------------


def _no_run_yet(ctx: LabContext, since: float, what: str) -> str:
    live = ctx.running_run(SCENARIO, since)
    if live:
        return f"Run {live['run_id']} is still {live['state']}: its page says Finished at its end; check again then."
    return what


def _row(run: dict, name: str, method: str) -> dict:
    rows = run["summary"].get("endpoints") or []
    found = next((r for r in rows if r.get("name") == name and r.get("method") == method), None)
    return found or {"requests": 0, "failures": 0, "p50_ms": 0, "p95_ms": 0, "max_ms": 0}


def _figures(run: dict) -> tuple[dict, dict]:
    """The run's ``list orders`` row and its checkouts' row."""
    return _row(run, LIST_ROW, "GET"), _row(run, CHECKOUT_ROW, "POST")


def _hang(ctx: LabContext) -> dict | None:
    return next(
        (f for f in ctx.faults("order") if f.get("kind") == "dependency" and f.get("target") == "payment"), None
    )


def _switches(ctx: LabContext) -> dict:
    return ctx.resilience("order")["switches"]


def _stall_threshold(ctx: LabContext) -> float:
    baseline = ctx.observed("baseline").get("list_p95_ms") or 0
    return max(STALL_FLOOR_MS, STALL_FACTOR * baseline)


def _wait_until_order_answers(ctx: LabContext, *, within: float = 90) -> None:
    """Wait for the checkouts still hanging from the last run to give up: order lists orders in under a second."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        started = time.monotonic()
        try:
            ctx.staff_json("order", "/api/orders/", page_size=1)
        except CheckError:
            continue
        if time.monotonic() - started < 1:
            return
        ctx.sleep(1)
    raise SolveError(f"order_service still took over a second to list orders after {within:.0f} s")


def _run(ctx: LabContext) -> None:
    """One run of the scenario, as the Load page starts it; another run still going (one at a time) is waited for."""
    ctx.run_load(SCENARIO, users=USERS, spawn_rate=SPAWN_RATE, duration=DURATION, wait_for_others=120)


# --- 1. the baseline ------------------------------------------------------------------------


def check_baseline(ctx: LabContext):
    run = ctx.finished_run(SCENARIO, ctx.started_at)
    if run is None:
        return failed(
            _no_run_yet(
                ctx,
                ctx.started_at,
                "No bulkhead run of yours has finished since you started this lab: on the Load page run the "
                f"scenario bulkhead with {USERS} users, spawn rate {SPAWN_RATE}, duration {DURATION}.",
            )
        )
    lists, checkouts = _figures(run)
    if lists["requests"] < 5:
        return failed(f"Run {run['run_id']} listed orders {lists['requests']} times: run it for 20 s at least.")
    if lists["failures"] or _hang(ctx):
        return failed(
            f"Run {run['run_id']}: {lists['failures']} lists of orders failed with nothing broken on purpose, or "
            "payment's hang is already on: press Reset this lab and run the baseline again."
        )
    return passed(
        f"Baseline run {run['run_id']}: {lists['requests']} lists of orders, p50 {lists['p50_ms']:.0f} ms, p95 "
        f"{lists['p95_ms']:.0f} ms, none failed; {checkouts['requests']} checkouts meanwhile "
        f"(p50 {checkouts['p50_ms']:.0f} ms).",
        baseline_run=run["run_id"],
        list_requests=lists["requests"],
        list_p50_ms=round(lists["p50_ms"]),
        list_p95_ms=round(lists["p95_ms"]),
        checkouts=checkouts["requests"],
        checkout_p50_ms=round(checkouts["p50_ms"]),
    )


def solve_baseline(ctx: LabContext) -> None:
    _run(ctx)


# --- 2. payment hangs, and nothing walls it off -------------------------------------------


def check_hang(ctx: LabContext):
    fault = _hang(ctx)
    switches = _switches(ctx)
    missing = []
    if fault is None or fault.get("mode") != "hang":
        missing.append("a dependency fault on order: calls to payment, mode “hang until timeout”")
    if switches["bulkhead"]["enabled"]:
        missing.append("order's bulkhead unticked")
    if switches["breaker"]["enabled"]:
        missing.append("order's breaker unticked")
    if missing:
        return failed("Not yet: " + "; ".join(missing) + " (Faults page, then Resilience page → Apply to order).")
    read = switches["timeouts"]["read"] if switches["timeouts"]["enabled"] else 30.0
    attempts = switches["retries"]["attempts"] if switches["retries"]["enabled"] else 1
    return passed(
        f"Every call from order to payment now waits {read:g} s for an answer that never comes, "
        f"{attempts} times per call; no bulkhead limits how many request threads may wait so, and no breaker "
        "stops the calls.",
        fault_id=fault["id"],
        read_timeout_s=read,
        attempts=attempts,
    )


def solve_hang(ctx: LabContext) -> None:
    ctx.add_fault("order", **HANG)
    ctx.set_switches("order", bulkhead={"enabled": False}, breaker={"enabled": False})


# --- 3. the same run: everything stalls -------------------------------------------------------


def check_stall(ctx: LabContext):
    since = ctx.since_passed("hang")
    run = ctx.finished_run(SCENARIO, since)
    if run is None:
        return failed(
            _no_run_yet(
                ctx,
                since,
                "No bulkhead run has finished since payment began to hang: run the scenario bulkhead again from "
                "the Load page, with the same figures.",
            )
        )
    lists, checkouts = _figures(run)
    threshold = _stall_threshold(ctx)
    if not lists["failures"] and lists["p95_ms"] < threshold:
        return failed(
            f"Run {run['run_id']}: the lists of orders stayed fast (p95 {lists['p95_ms']:.0f} ms, none failed). "
            f"Were the fault on and the bulkhead off during the run (step 2), with at least {USERS} users? "
            "Run it again."
        )
    return passed(
        f"Run {run['run_id']}: listing orders — which needs no payment — stalled too: {lists['failures']} of "
        f"{lists['requests']} lists failed (the reader gave up after 5 s), p95 {lists['p95_ms']:.0f} ms. "
        f"{checkouts['requests']} checkouts, {checkouts['failures']} failed.",
        stall_run=run["run_id"],
        stall_list_requests=lists["requests"],
        stall_list_failures=lists["failures"],
        stall_list_p95_ms=round(lists["p95_ms"]),
        stall_checkouts=checkouts["requests"],
    )


def solve_stall(ctx: LabContext) -> None:
    _run(ctx)


# --- 4. the bulkhead on: only the checkouts wait -------------------------------------------


def check_bulkhead(ctx: LabContext):
    switches = _switches(ctx)
    if not switches["bulkhead"]["enabled"]:
        return failed("order's bulkhead is off: tick it on the Resilience page and Apply to order.")
    if _hang(ctx) is None:
        return failed("payment's hang is gone: add the fault of step 2 again, then run again.")
    since = ctx.since_passed("stall")
    run = ctx.finished_run(SCENARIO, since)
    if run is None:
        return failed(
            _no_run_yet(
                ctx,
                since,
                "No bulkhead run has finished since step 3: wait until the Overview shows order answering again "
                "(the checkouts of the last run give up within a minute), then run the scenario bulkhead again.",
            )
        )
    lists, checkouts = _figures(run)
    if lists["failures"] or lists["p95_ms"] >= RESPONSIVE_MS:
        return failed(
            f"Run {run['run_id']}: lists of orders still stalled ({lists['failures']} failed, p95 "
            f"{lists['p95_ms']:.0f} ms). Did the run start while checkouts of step 3 were still hanging? Wait a "
            "minute and run again."
        )
    limit = switches["bulkhead"]["max_concurrent"]
    return passed(
        f"Run {run['run_id']}: with at most {limit} calls to payment per process, the lists of orders stayed "
        f"responsive (p50 {lists['p50_ms']:.0f} ms, p95 {lists['p95_ms']:.0f} ms, none failed, "
        f"{lists['requests']} lists); {checkouts['requests']} checkouts, {checkouts['failures']} failed or were "
        f"refused (p50 {checkouts['p50_ms']:.0f} ms).",
        bulkhead_run=run["run_id"],
        max_concurrent=limit,
        bulkhead_list_requests=lists["requests"],
        bulkhead_list_p95_ms=round(lists["p95_ms"]),
        bulkhead_checkouts=checkouts["requests"],
        bulkhead_checkout_failures=checkouts["failures"],
        bulkhead_checkout_p50_ms=round(checkouts["p50_ms"]),
    )


def solve_bulkhead(ctx: LabContext) -> None:
    ctx.set_switches("order", bulkhead={"enabled": True})
    if _hang(ctx) is None:
        ctx.add_fault("order", **HANG)
    _wait_until_order_answers(ctx)
    _run(ctx)


STEPS = [
    Step(
        "baseline",
        "A baseline: listing orders while others check out",
        check_baseline,
        solve_baseline,
        hints=(
            f"Load page → scenario bulkhead, {USERS} users, spawn rate {SPAWN_RATE}, duration {DURATION} → Start.",
            "Its page shows one row per request: note list orders' p50 and p95.",
        ),
        link=LOAD_LINK,
        link_label="Load: the bulkhead scenario",
        terminal=f"labctl load --scenario bulkhead --users {USERS} --spawn-rate {SPAWN_RATE} --duration {DURATION}",
    ),
    Step(
        "hang",
        "Payment hangs, and nothing walls it off",
        check_hang,
        solve_hang,
        hints=(
            "Faults page → Inject a fault on order: kind dependency, Calls to payment, Mode “hang until timeout”, "
            "clears after 600 s.",
            "Resilience page → order's panel → untick Bulkhead and Breaker → Apply to order.",
        ),
        link="/faults/",
        link_label="Faults: order's calls to payment hang",
        terminal="labctl fault add order dependency --target payment --mode hang --ttl 600 && "
        "labctl resilience order --set bulkhead.enabled=false --set breaker.enabled=false",
    ),
    Step(
        "stall",
        "The same run: listing orders stalls too",
        check_stall,
        solve_stall,
        hints=(
            "Load page → the bulkhead scenario again, the same figures.",
            "Compare list orders' row with the baseline's: failures, p95.",
        ),
        link=LOAD_LINK,
        link_label="Load: the bulkhead scenario again",
        terminal=f"labctl load --scenario bulkhead --users {USERS} --spawn-rate {SPAWN_RATE} --duration {DURATION}",
    ),
    Step(
        "bulkhead-on",
        "The bulkhead on: only the checkouts wait",
        check_bulkhead,
        solve_bulkhead,
        hints=(
            "Resilience page → order's panel → tick Bulkhead (keep the breaker off) → Apply to order.",
            "Wait until order answers again (the last run's checkouts give up within a minute), then run the "
            "bulkhead scenario once more.",
        ),
        link="/resilience/",
        link_label="Resilience: order's bulkhead",
        terminal="labctl resilience order --set bulkhead.enabled=true && "
        f"labctl load --scenario bulkhead --users {USERS} --spawn-rate {SPAWN_RATE} --duration {DURATION}",
    ),
]


# --- questions --------------------------------------------------------------------------------


QUESTIONS = [
    Question(
        "baseline-p95",
        "In your baseline run (step 1), what was the p95 of list orders, in milliseconds?",
        lambda ctx, progress: ctx.figure("baseline", "list_p95_ms"),
        relative=0.1,
        tolerance=5,
        unit="ms",
        explanation="Listing a customer's orders reads order_service's own database and calls no other "
        "service: this is what it costs when a request thread is free to serve it at once.",
    ),
    Question(
        "stalled-lists",
        "In the run without a bulkhead (step 3), how many lists of orders failed?",
        lambda ctx, progress: ctx.figure("stall", "stall_list_failures"),
        explanation="Each checkout held one of order's request threads while it waited for payment. With more "
        "such checkouts than threads, a list of orders queued behind them — although it needed nothing from "
        "payment — and its reader gave up after 5 s.",
    ),
    Question(
        "max-concurrent",
        "With the bulkhead on (step 4), how many calls to payment may one order process have waiting at once?",
        lambda ctx, progress: ctx.figure("bulkhead-on", "max_concurrent"),
        explanation="The bulkhead's size, by default half of the process's request threads: at most that many "
        "threads can be stuck on payment, so the other half always remains for requests that do not need it. "
        "A call beyond it waits half a second for a place, then is refused at once (503) instead of hanging.",
    ),
    Question(
        "why-bulkhead",
        "What does the bulkhead protect in the order service?",
        fixed("its request threads, for the requests that do not call payment"),
        choices=(
            "its request threads, for the requests that do not call payment",
            "payment, from too many charges",
            "the checkouts, which now all succeed",
        ),
        explanation="A bulkhead limits how much of a shared resource (here the threads) one dependency may "
        "hold. The checkouts still fail while payment hangs — faster now — but the rest of the service stays "
        "up: a slow dependency is contained instead of spreading to everything.",
    ),
]
