"""Lab 8, the async saga and a dying worker: its steps, checks, solves and questions (the text is lab.md).

Every figure comes from the lab itself: the saga mode and the broker's queue
depth from order's ``/_lab/saga/``, each order's history from order's API (an
async checkout is *queued for the worker*; a saga a dead worker held is
*queued* again by the recovery job, "recovered: nobody was running this
saga"), how many orders waited for a worker at once reconstructed from those
histories, the charges of every order from payment's ledger, and the audit.
The worker is killed through the lab's context: supervisord under ``make up``
(the Faults page's "Kill the worker"), the tests' own harness elsewhere.
"""

from __future__ import annotations

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from labctl.labs.context import TERMINAL, LabContext, parse_time
from labctl.labs.model import Question, SolveError, Step, failed, fixed, passed

# A charge that takes 1.5 s at payment: a dying worker is then always caught in the middle of some sagas.
SLOW_CHARGE = {"kind": "latency", "delay_ms": 1500, "path_prefix": "/internal/charges/", "method": "POST"}
SLOW_CHARGE_TTL = 300
QUEUED_NOTE = "checkout queued for the worker"
RECOVERED_NOTE = "recovered"
BURST_MIN = 8  # checkouts since step 1 that make a burst
BURST_FIRST, BURST_REST = 6, 8  # what the solve places: before the kill, and while the worker is down
CONFIRMED = ("CONFIRMED", "SHIPPED", "DELIVERED")
AUDIT_READS = 3
_AT_STEP = re.compile(r"at step (\w+)")


# --- what the checks read -------------------------------------------------------------------


def _history(order: dict) -> list[dict]:
    return order.get("history") or []


def _queued_at(order: dict) -> float | None:
    """When the checkout was handed to the worker (the 202), or None for a checkout run in its request."""
    entry = next(
        (h for h in _history(order) if h.get("step") == "queued" and QUEUED_NOTE in (h.get("note") or "")), None
    )
    return parse_time(entry["at"]) if entry else None


def _picked_at(order: dict) -> float | None:
    """When a worker did the saga's first step, or None while it still waits for one."""
    history = _history(order)
    start = next((i for i, h in enumerate(history) if h.get("step") == "queued"), None)
    if start is None:
        return None
    after = next((h for h in history[start + 1 :] if h.get("step") not in ("queued", "received")), None)
    return parse_time(after["at"]) if after else None


def _recoveries(order: dict) -> list[tuple[float, float, str]]:
    """``(seconds since the entry before it, when, at which step)`` of each time the recovery job queued it again."""
    found, history = [], _history(order)
    for i, entry in enumerate(history):
        if i and entry.get("step") == "queued" and (entry.get("note") or "").startswith(RECOVERED_NOTE):
            at = parse_time(entry["at"]) or 0.0
            step = _AT_STEP.search(entry.get("note") or "")
            found.append((at - (parse_time(history[i - 1]["at"]) or at), at, step.group(1) if step else "?"))
    return found


def _burst(ctx: LabContext) -> list[dict]:
    """The checkouts handed to the worker since step 1 passed, newest first."""
    return [o for o in ctx.orders_since(ctx.since_passed("async")) if _queued_at(o) is not None]


def _peak_waiting(orders: list[dict], now: float) -> int:
    """The most orders waiting at once for a worker to start their saga (queued, not yet picked up)."""
    edges = []
    for order in orders:
        edges.append((_queued_at(order), 1))
        edges.append((_picked_at(order) or now, -1))
    peak = waiting = 0
    for _, delta in sorted(edges):  # at the same instant a pick-up (-1) comes before a new arrival (+1)
        waiting += delta
        peak = max(peak, waiting)
    return peak


def _queue_depth(ctx: LabContext) -> str:
    """The broker's queue depth as order's ``/_lab/saga/`` reads it (what the Overview shows)."""
    queues = ctx.saga().get("queues")
    return str(sum(queues.values())) if isinstance(queues, dict) else "not measured (embedded broker)"


def _ledger(ctx: LabContext, order_id) -> tuple[int, int, float | None]:
    """``(captured charges, cents still held, when the first charge was captured)`` from payment's ledger."""
    entries = ctx.staff_json("payment", "/api/ledger/", order_id=str(order_id), page_size=100).get("results", [])
    entries = [e for e in entries if str(e.get("order_id")) == str(order_id)]
    charges = [e for e in entries if e.get("kind") == "CHARGE"]
    first = min((parse_time(e.get("created_at")) or 0.0 for e in charges), default=None)
    return len(charges), sum(e["amount_cents"] for e in entries), first


def _audit(ctx: LabContext) -> tuple[bool, str]:
    for attempt in range(AUDIT_READS):
        audit = ctx.audit()
        if audit["ok"]:
            return True, ""
        if attempt < AUDIT_READS - 1:
            ctx.sleep(1)
    broken = [v["message"] for c in audit["checks"] for v in c["violations"]]
    return False, "; ".join(broken[:3]) + (f" (and {len(broken) - 3} more)" if len(broken) > 3 else "")


def _ids(orders: list[dict], most: int = 8) -> str:
    shown = ", ".join(f"#{o['id']}" for o in sorted(orders, key=lambda o: o["id"])[:most])
    return shown + ("…" if len(orders) > most else "")


def _wait_until(ctx: LabContext, done, *, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if done():
            return
        ctx.sleep(1)
    raise SolveError(f"{what} within {seconds:.0f} s")


# --- 1. the saga on the worker: 202, then polling ---------------------------------------------


def check_async(ctx: LabContext):
    saga = ctx.saga()
    if saga["mode"] != "async":
        return failed(
            f"The saga runs {saga['mode']}: on the Resilience page, under “Checkout saga”, choose async and press "
            "“Set the saga mode”."
        )
    queued = [o for o in ctx.orders_since() if _queued_at(o) is not None]
    if not queued:
        return failed("The saga runs async; now run “Checkout (async)” on the Flows page: it answers 202, then polls.")
    done = [o for o in queued if o["status"] in TERMINAL]
    if not done:
        order = queued[0]
        return failed(
            f"Order #{order['id']} was accepted (202) and is still {order['status']} at step {order['saga_step']}: "
            "the worker runs its saga; poll it (GET /api/orders/<id>/) and check again in a few seconds."
        )
    order = done[0]
    queued_at = _queued_at(order)
    picked = _picked_at(order) or queued_at
    ended = max(parse_time(h.get("at")) or 0.0 for h in _history(order))
    received = parse_time(_history(order)[0]["at"]) or queued_at
    return passed(
        f"Order #{order['id']} was answered 202 while PENDING ({round((queued_at - received) * 1000)} ms after it was "
        f"received), waited {round((picked - queued_at) * 1000)} ms in the queue, and the worker took it to "
        f"{order['status']} {round((ended - queued_at) * 1000)} ms after the answer. The broker's queue holds "
        f"{_queue_depth(ctx)} task(s) now.",
        async_order=order["id"],
        status=order["status"],
        queue_wait_ms=round((picked - queued_at) * 1000),
        worker_ms=round((ended - queued_at) * 1000),
        broker=saga.get("broker", "?"),
    )


def solve_async(ctx: LabContext) -> None:
    ctx.set_saga(mode="async")
    response = ctx.lab_customer().order(ctx.in_stock_sku())
    if response.status_code != 202:
        raise SolveError(f"in async mode the order answered {response.status_code}: {response.text[:200]}")
    order_id = response.json()["id"]
    _wait_until(
        ctx,
        lambda: ctx.order(order_id)["status"] in TERMINAL,
        seconds=60,
        what=f"the worker did not finish order #{order_id}",
    )


# --- 2. kill the worker in the middle of a burst ----------------------------------------------


def check_kill(ctx: LabContext):
    burst = _burst(ctx)
    if len(burst) < BURST_MIN:
        return failed(
            f"{len(burst)} checkout(s) went to the worker since step 1; a burst is at least {BURST_MIN}: slow "
            "payment's charges (Faults page), start the checkout scenario on the Load page, and while it runs "
            "press “Kill the worker” on the Faults page."
        )
    recovered = [o for o in burst if _recoveries(o)]
    peak = _peak_waiting(burst, ctx.clock())
    if not recovered:
        pending = [o for o in burst if o["status"] not in TERMINAL]
        if pending:
            return failed(
                f"{len(pending)} of your {len(burst)} checkouts are still PENDING and no saga has been recovered "
                f"yet (at most {peak} waited for a worker at once). If you killed the worker, the sagas it held "
                "come back when their lease runs out (30 s after their last step) and the recovery job, every "
                "15 s, queues them again: check again in half a minute. If not, kill it now, while they run."
            )
        return failed(
            f"All {len(burst)} checkouts since step 1 ended and no saga was cut off by a dying worker: the worker "
            "was not killed while it held one. Slow payment's charges, start a burst and kill the worker while "
            "the burst runs."
        )
    first = min(recovered, key=lambda o: o["id"])
    lease_wait = round(_recoveries(first)[0][0], 1)
    steps = sorted({step for o in recovered for _, _, step in _recoveries(o)})
    return passed(
        f"The worker died holding {len(recovered)} of your {len(burst)} checkouts ({_ids(recovered)}), at step "
        f"{' / '.join(steps)}. Their tasks were never acknowledged; when each order's lease ran out the recovery "
        f"job queued its saga again (order #{first['id']}: {lease_wait} s after its last step). While the worker "
        f"was down, up to {peak} orders waited for it at once; the broker's queue holds {_queue_depth(ctx)} now.",
        burst_orders=len(burst),
        recovered_orders=len(recovered),
        recovered_ids=_ids(recovered),
        cut_at_steps=", ".join(steps),
        lease_wait_s=lease_wait,
        peak_waiting=peak,
    )


def _place(customer, sku: str) -> int:
    response = customer.order(sku)
    if response.status_code != 202:
        raise SolveError(f"a checkout of the burst answered {response.status_code}: {response.text[:200]}")
    return response.json()["id"]


def solve_kill(ctx: LabContext) -> None:
    ctx.add_fault("payment", **SLOW_CHARGE, ttl_seconds=SLOW_CHARGE_TTL)
    customer = ctx.lab_customer()
    sku = ctx.in_stock_sku(BURST_FIRST + BURST_REST)
    with ThreadPoolExecutor(max_workers=BURST_FIRST) as pool:
        first = list(pool.map(lambda _: _place(customer, sku), range(BURST_FIRST)))
    _wait_until(
        ctx,
        lambda: any(ctx.order(order_id)["saga_step"] == "charging" for order_id in first),
        seconds=30,
        what="no saga of the burst reached the charge",
    )
    errors: list[Exception] = []

    def the_rest() -> None:  # while the worker is down
        for _ in range(BURST_REST):
            try:
                _place(customer, sku)
            except SolveError as exc:
                errors.append(exc)
            time.sleep(0.25)

    rest = threading.Thread(target=the_rest, name="lab8-burst")
    rest.start()
    try:
        ctx.kill_worker()
    finally:
        rest.join()
    if errors:
        raise errors[0]
    _wait_until(
        ctx,
        lambda: any(_recoveries(o) for o in _burst(ctx)),
        seconds=120,
        what="the recovery job queued none of the killed worker's sagas again",
    )


# --- 3. every order ends: none lost, none charged twice ----------------------------------------


def check_none_lost(ctx: LabContext):
    slow = [f for f in ctx.faults("payment") if f.get("kind") == "latency"]
    if slow:
        return failed(
            f"payment's charges are still slowed (fault {slow[0]['id']}): clear it on the Faults page (its Clear "
            "button, or Clear all), then check again once the Overview's queue is back to 0."
        )
    burst = _burst(ctx)
    if not any(_recoveries(o) for o in burst):
        return failed("Pass step 2 first: no saga of yours was cut off by a dying worker yet.")
    pending = [o for o in burst if o["status"] not in TERMINAL]
    if pending:
        return failed(
            f"{len(pending)} of your {len(burst)} orders are still PENDING ({_ids(pending)}): the worker is "
            "finishing them; check again in a few seconds."
        )
    twice, wrong, early = [], [], 0
    for order in burst:
        charges, held, charged_at = _ledger(ctx, order["id"])
        if charges > 1:
            twice.append(order)
        elif order["status"] in CONFIRMED and (charges != 1 or held != order["total_cents"]):
            wrong.append(f"#{order['id']} is {order['status']} with {charges} charge(s), {held} cents held")
        elif order["status"] == "CANCELLED" and held:
            wrong.append(f"#{order['id']} is CANCELLED with {held} cents still held")
        recoveries = _recoveries(order)
        if recoveries and charged_at is not None and charged_at < recoveries[0][1]:
            early += 1
    if twice:
        return failed(f"Orders {_ids(twice)} were charged more than once: payment's ledger has two charges for each.")
    if wrong:
        return failed("Payment's ledger disagrees with the orders: " + "; ".join(wrong[:3]) + ".")
    clean, problems = _audit(ctx)
    if not clean:
        return failed(f"Every order ended, but the audit is red: {problems}.", audit_ok=False)
    confirmed = sum(1 for o in burst if o["status"] in CONFIRMED)
    cancelled = len(burst) - confirmed
    return passed(
        f"All {len(burst)} orders of your burst ended: {confirmed} CONFIRMED, {cancelled} CANCELLED, none lost. "
        f"Payment's ledger has exactly one charge for each confirmed order and nothing held for a cancelled one; "
        f"{early} of the recovered orders had been charged already for the dead worker, and their second charge "
        "was payment's replay of the first. The audit is green.",
        burst_orders=len(burst),
        confirmed=confirmed,
        cancelled=cancelled,
        pending=0,
        charged_twice=0,
        captured_for_dead_worker=early,
        audit_ok=True,
    )


def solve_none_lost(ctx: LabContext) -> None:
    ctx.clear_faults("payment")
    _wait_until(
        ctx,
        lambda: all(o["status"] in TERMINAL for o in _burst(ctx)),
        seconds=120,
        what="the burst's orders did not all end",
    )


STEPS = [
    Step(
        "async",
        "Switch the saga to async: 202, then polling",
        check_async,
        solve_async,
        hints=(
            "Resilience page → “Checkout saga” → async → Set the saga mode.",
            "Flows page → “Checkout (async)” → Run: 202 PENDING at once, then the flow polls until CONFIRMED.",
        ),
        link="/resilience/",
        link_label="Resilience: the saga mode",
        terminal='curl -si -X POST http://127.0.0.1:8002/api/orders/ -H "Authorization: Bearer $TOKEN" '
        "-H 'Content-Type: application/json' -H \"Idempotency-Key: $(uuidgen)\" "
        '-d \'{"lines": [{"sku": "KB-001", "quantity": 1}], "payment_method": "<card token>"}\'   # 202; then '
        'curl -s http://127.0.0.1:8002/api/orders/<id>/ -H "Authorization: Bearer $TOKEN"',
    ),
    Step(
        "kill-worker",
        "Kill the worker in the middle of a burst of checkouts",
        check_kill,
        solve_kill,
        hints=(
            "Faults page → payment → kind latency, 1500 ms, path prefix /internal/charges/, method POST, "
            "TTL 300 → Add.",
            "Load page → scenario checkout, 3 users, spawn rate 3, duration 30s → Start.",
            "About ten seconds in: Faults page → preset “Kill the worker” → Do it. Watch the Overview's Celery "
            "worker node: down, then up again, and its queue count rising and falling.",
            "The sagas the dead worker held come back about 30–45 s later: check then.",
        ),
        link="/faults/#preset-kill-worker",
        link_label="Faults: Kill the worker",
        terminal="labctl fault add payment latency --delay-ms 1500 --path-prefix /internal/charges/ --method POST "
        "--ttl 300 && labctl load --scenario checkout --users 3 --duration 30s & "
        "sleep 10; labctl fault add worker process --action kill",
    ),
    Step(
        "none-lost",
        "Every order ends: none lost, none charged twice",
        check_none_lost,
        solve_none_lost,
        hints=(
            "Faults page → payment's slow charge → Clear (or Clear all).",
            "Wait until the Load run has finished and the Overview's queue is back to 0, then check.",
        ),
        link="/faults/",
        link_label="Faults: clear the slow charge",
        terminal="labctl fault clear payment && labctl audit",
    ),
]


# --- clean-up: the worker runs again -----------------------------------------------------------


def cleanup(ctx: LabContext) -> None:
    """Start the worker if it is not running (the reset has put the saga back to sync and cleared the faults)."""
    ctx.start_worker()


CLEANUP = cleanup


# --- questions --------------------------------------------------------------------------------


QUESTIONS = [
    Question(
        "accepted",
        "In async mode, what did POST /api/orders/ answer your checkout of step 1?",
        fixed("202 at once, the order PENDING; then the client polls it"),
        choices=(
            "202 at once, the order PENDING; then the client polls it",
            "201 once the saga had finished",
            "303 to a page that waits for the worker",
        ),
        explanation="The request only writes the order and queues its saga; the answer says “accepted, not done”. "
        "The client follows the order (GET /api/orders/<id>/) until it is CONFIRMED or CANCELLED.",
    ),
    Question(
        "recovered",
        "How many of your orders did the worker hold when it died (step 2: the sagas the recovery job queued again)?",
        lambda ctx, progress: ctx.figure("kill-worker", "recovered_orders"),
        explanation="A worker takes one task per thread (prefetch multiplier 1): with four threads it held at most "
        "four, plus the ones it had received but not started. Every one of them came back; the others waited in "
        "the broker's queue for the worker to return.",
    ),
    Question(
        "lease-wait",
        "For your first recovered order, how many seconds passed between its last step under the dead worker "
        "and the recovery job queuing it again?",
        lambda ctx, progress: ctx.figure("kill-worker", "lease_wait_s"),
        tolerance=2,
        unit="s",
        explanation="The worker's lease on an order lasts 30 s from its last step; the recovery job runs every "
        "15 s and queues again only sagas whose lease has run out. So 30 to 45 s: the price of never letting two "
        "runners work on one saga while the first may still be alive.",
    ),
    Question(
        "peak-waiting",
        "At most how many of your orders waited for a worker at the same time during the burst (step 2)?",
        lambda ctx, progress: ctx.figure("kill-worker", "peak_waiting"),
        tolerance=1,
        explanation="Accepting an order does not need the worker, so checkouts kept being answered 202 while it was "
        "dead. Few of them waited in the queue, because each shopper follows its order to its end before placing the "
        "next, and the restarted worker took what was queued within seconds. The orders the dead worker held were "
        "never in the queue: taken and not acknowledged, they waited for their lease to run out, which no queue "
        "count shows.",
    ),
    Question(
        "captured-early",
        "How many of your recovered orders had payment already charged for the dead worker (its ledger's charge "
        "older than the recovery)?",
        lambda ctx, progress: ctx.figure("none-lost", "captured_for_dead_worker"),
        explanation="Those sagas died after their charge reached payment: payment finished it without anyone to "
        "answer. The new runner sent the same charge under the same key, order-<id>-charge, and payment answered "
        "with the first charge again (a replay): one charge per order.",
    ),
    Question(
        "why-not-lost",
        "The worker was SIGKILLed holding tasks it had taken from the broker. Why were they not lost with it?",
        fixed("a task is acknowledged only once it has finished (late acknowledgement)"),
        choices=(
            "a task is acknowledged only once it has finished (late acknowledgement)",
            "the worker writes each task to its disk before it starts",
            "supervisord replays the last tasks of a worker it restarts",
        ),
        explanation="With CELERY_TASK_ACKS_LATE the broker keeps a taken task as unacknowledged until the task "
        "ends; a worker that dies never acknowledges it, so the broker hands it out again. And the saga's state is "
        "on the order, step by step: whoever picks it up goes on from its saga_step.",
    ),
    Question(
        "why-not-twice",
        "After the recovery a new runner took over sagas the dead worker had started. What kept it from charging "
        "a card twice?",
        fixed("the charge's idempotency key is the order's, so payment replays the first charge"),
        choices=(
            "the charge's idempotency key is the order's, so payment replays the first charge",
            "the dead worker's lease forbids charging",
            "payment refuses charges from a restarted worker",
        ),
        explanation="Late acknowledgement means at-least-once: a step may run twice. The lease makes sure two "
        "runners never work on one saga at the same time; the idempotency keys make a step that runs again harmless.",
    ),
]
