"""Lab 4, retries and idempotency: its steps, checks, solves and questions (the text is lab.md).

The fault answers 503 to a random 30 % of order's charge requests, so every
count here is random. The checks ask for *at least one* failure (retries off)
and *at least one* retry (retries on), and the solves check out until they see
it, up to a number of checkouts whose chance of never seeing it is below one in
a billion (0.7 ** 60). The figures come from the student's own orders (their
status and reason), order's ``lab_retries_total{peer="payment"}``, payment's
``lab_http_requests_total`` of ``POST /internal/charges/``, and the audit.
"""

from __future__ import annotations

from labctl.labs.context import LabContext
from labctl.labs.model import CheckError, Question, SolveError, Step, failed, fixed, passed

CHARGE_PATH = "/internal/charges/"
FLAKY = {
    "id": "lab4-flaky-charges",
    "kind": "error",
    "status": 503,
    "probability": 0.3,
    "path_prefix": CHARGE_PATH,
    "method": "POST",
    "ttl_seconds": 900,
}
MOST_CHECKOUTS = 60  # 0.7 ** 60 ≈ 5e-10: the chance that 60 checkouts never meet the fault
CONFIRMED_WITH_RETRIES = 5
PAYMENT_FAILED = "Payment service unavailable"


def _flaky_fault(ctx: LabContext) -> dict | None:
    """The error fault on payment that bites order's charge requests (POST /internal/charges/), if any."""
    for fault in ctx.faults("payment"):
        if (
            fault.get("kind") == "error"
            and fault.get("status", 0) >= 500
            and 0 < fault.get("probability", 1.0) < 1
            and CHARGE_PATH.startswith(fault.get("path_prefix") or "")
            and fault.get("method") in ("", None, "POST")
        ):
            return fault
    return None


def _order_retries(ctx: LabContext) -> int:
    return int(ctx.metrics("order").total("lab_retries_total", peer="payment"))


def _charge_requests(ctx: LabContext) -> int:
    """How many charge requests payment received (answered by the fault or not)."""
    return int(ctx.metrics("payment").total("lab_http_requests_total", method="POST", route=CHARGE_PATH))


def _failed_on_payment(order: dict) -> bool:
    return order.get("status") != "CONFIRMED" and (
        PAYMENT_FAILED in (order.get("status_reason") or "")
        or any("payment unavailable" in h.get("note", "") for h in order.get("history") or [])
    )


def _checkout_until(ctx: LabContext, done, *, most: int = MOST_CHECKOUTS) -> None:
    customer = ctx.lab_customer()
    sku = ctx.in_stock_sku(most)
    for _ in range(most):
        customer.order(sku)
        if done():
            return
    raise SolveError(f"placed {most} checkouts and the expected effect did not show")


# --- 1. payment's charges fail 30 % of the time ----------------------------------------------


def check_flaky(ctx: LabContext):
    fault = _flaky_fault(ctx)
    if fault is None:
        return failed(
            "payment has no error fault on its charges yet: on the Faults page add an error fault to "
            "payment, status 503, probability 0.3, path prefix /internal/charges/, method POST."
        )
    return passed(
        f"payment answers {fault['status']} to {fault['probability']:.0%} of order's charge requests "
        f"(fault {fault['id']}). Baselines recorded: order has retried payment "
        f"{_order_retries(ctx)} time(s) so far, payment has received {_charge_requests(ctx)} charge "
        "request(s).",
        fault_id=fault["id"],
        probability=fault["probability"],
        retries_baseline=_order_retries(ctx),
        charge_requests_baseline=_charge_requests(ctx),
    )


def solve_flaky(ctx: LabContext) -> None:
    ctx.lab_customer()
    ctx.add_fault("payment", **FLAKY)


# --- 2. retries off: some checkouts fail ----------------------------------------------------------


def _orders_since(ctx: LabContext, step: str) -> list[dict]:
    return ctx.orders_since(ctx.passed_at(step) or ctx.started_at)


def check_retries_off(ctx: LabContext):
    if _flaky_fault(ctx) is None:
        return failed("payment's charges are not flaky any more: add the fault of step 1 again.")
    if ctx.resilience("order")["switches"]["retries"]["enabled"]:
        return failed("order's retries are still on: untick “Retries” for order_service on the Resilience page.")
    orders = _orders_since(ctx, "flaky")
    lost = [o for o in orders if _failed_on_payment(o)]
    if not lost:
        return failed(
            f"Retries are off; {len(orders)} checkout(s) since, none failed on payment yet: run "
            "“Checkout (sync)” on the Flows page again (about one in three fails)."
        )
    order = lost[0]
    return passed(
        f"{len(lost)} of your {len(orders)} checkout(s) without retries failed on payment; order "
        f"#{order['id']} ended {order['status']}: “{order.get('status_reason')}”.",
        checkouts=len(orders),
        failed=len(lost),
        failed_order=order["id"],
        failed_status=order["status"],
        retries_at_end=_order_retries(ctx),
        charge_requests_at_end=_charge_requests(ctx),
    )


def solve_retries_off(ctx: LabContext) -> None:
    ctx.set_switches("order", retries={"enabled": False})
    since = ctx.passed_at("flaky") or ctx.started_at
    _checkout_until(ctx, lambda: any(_failed_on_payment(o) for o in ctx.orders_since(since)))


# --- 3. retries on: they succeed, at the price of extra calls -------------------------------------


def check_retries_on(ctx: LabContext):
    if _flaky_fault(ctx) is None:
        return failed("payment's charges are not flaky any more: add the fault of step 1 again.")
    retries = ctx.resilience("order")["switches"]["retries"]
    if not retries["enabled"]:
        return failed("order's retries are still off: tick “Retries” for order_service on the Resilience page.")
    before = ctx.observed("retries-off")
    if not before:
        return failed("Pass step 2 (retries off) first: its figures are this step's baseline.")
    orders = _orders_since(ctx, "retries-off")
    confirmed = [o for o in orders if o.get("status") == "CONFIRMED"]
    retried = _order_retries(ctx) - before["retries_at_end"]
    requests = _charge_requests(ctx) - before["charge_requests_at_end"]
    if len(confirmed) < CONFIRMED_WITH_RETRIES or retried <= 0:
        return failed(
            f"Since retries are on: {len(orders)} checkout(s), {len(confirmed)} confirmed, {retried} "
            f"retried charge(s). Run “Checkout (sync)” until at least {CONFIRMED_WITH_RETRIES} are "
            "confirmed and order has retried a charge at least once."
        )
    lost = [o for o in orders if _failed_on_payment(o)]
    return passed(
        f"{len(confirmed)} of your {len(orders)} checkouts with retries were confirmed "
        f"({len(lost)} failed, all {retries['attempts']} of their attempts meeting the fault). order retried payment "
        f"{retried} time(s); payment received {requests} charge request(s) for {len(orders)} checkouts.",
        checkouts=len(orders),
        confirmed=len(confirmed),
        failed=len(lost),
        retries=retried,
        charge_requests=requests,
        attempts=int(retries["attempts"]),
    )


def solve_retries_on(ctx: LabContext) -> None:
    ctx.set_switches("order", retries={"enabled": True})
    _checkout_until(ctx, lambda: check_retries_on(ctx).passed)


# --- 4. clear the fault: the audit proves nobody was charged twice --------------------------------


def _captures(ctx: LabContext, order_ids: set[str]) -> dict[str, int]:
    """Captured charges per order, for ``order_ids``, from payment's staff list (newest first)."""
    # payment's list does not filter by order_id, and gives it as a string: page through it instead.
    found: dict[str, int] = {}
    for page in range(1, 11):
        body = ctx.staff_json("payment", "/api/payments/", page=page, page_size=100)
        for charge in body.get("results", []):
            if str(charge.get("order_id")) in order_ids and str(charge.get("status", "")).upper() == "CAPTURED":
                found[str(charge["order_id"])] = found.get(str(charge["order_id"]), 0) + 1
        oldest = min((int(i) for i in order_ids), default=0)
        if not body.get("next") or any(
            str(c.get("order_id")).isdigit() and int(c["order_id"]) < oldest - 50 for c in body.get("results", [])
        ):
            break
    return found


def check_audit(ctx: LabContext):
    if _flaky_fault(ctx) is not None or any(f.get("kind") == "error" for f in ctx.faults("payment")):
        return failed(
            "payment's charges are still flaky: clear the fault on the Faults page (“Clear all”), then run the audit."
        )
    orders = [o for o in _orders_since(ctx, "retries-off") if o.get("status") == "CONFIRMED"][:30]
    if not orders:
        return failed("Pass step 3 first: the audit looks at the checkouts you confirmed with retries.")
    captures = _captures(ctx, {str(o["id"]) for o in orders})
    twice = [o["id"] for o in orders if captures.get(str(o["id"]), 0) != 1]
    audit = ctx.audit()
    paid = next(c for c in audit["checks"] if c["name"] == "confirmed_paid_and_committed")
    if twice or not paid["ok"]:
        return failed(
            f"The audit is red: {len(twice)} of your confirmed orders do not have exactly one capture "
            f"({twice[:5]}); {len(paid['violations'])} violation(s) of “{paid['title']}”."
        )
    return passed(
        f"The audit is green: each of your {len(orders)} confirmed checkouts has exactly one captured "
        f"charge, though order sent some charges more than once (same Idempotency-Key each time).",
        audited_orders=len(orders),
        charged_twice=0,
        audit_ok=audit["ok"],
    )


def solve_audit(ctx: LabContext) -> None:
    ctx.clear_faults("payment")


STEPS = [
    Step(
        "flaky",
        "Make payment's charges fail 30 % of the time",
        check_flaky,
        solve_flaky,
        hints=(
            "Faults page → payment → kind error, status 503, probability 0.3, path prefix /internal/charges/, "
            "method POST → Add.",
        ),
        link="/faults/",
        link_label="Faults: add an error fault on payment",
        terminal="labctl fault add payment error --status 503 --probability 0.3 --path-prefix /internal/charges/ "
        "--method POST --ttl 900",
    ),
    Step(
        "retries-off",
        "Retries off: some checkouts fail",
        check_retries_off,
        solve_retries_off,
        hints=(
            "Resilience page → order_service → untick “Retries” → Apply; then Flows → “Checkout (sync)”, "
            "several times.",
        ),
        link="/resilience/",
        link_label="Resilience: order's retries",
        terminal="labctl resilience order --set retries.enabled=false",
    ),
    Step(
        "retries-on",
        "Retries on: the checkouts succeed",
        check_retries_on,
        solve_retries_on,
        hints=(
            "Resilience page → order_service → tick “Retries” → Apply; then Flows → “Checkout (sync)”, "
            "five times or more.",
        ),
        link="/resilience/",
        link_label="Resilience: order's retries",
        terminal="labctl resilience order --set retries.enabled=true",
    ),
    Step(
        "audit",
        "Clear the fault: nobody was charged twice",
        check_audit,
        solve_audit,
        hints=("Faults page → “Clear all”; then open the Audit page.",),
        link="/audit/",
        link_label="Audit",
        terminal="labctl fault clear --all && labctl audit",
    ),
]


# --- questions ----------------------------------------------------------------------------


def _figure(step: str, name: str):
    def expected(ctx: LabContext, progress: dict):
        value = ctx.observed(step).get(name)
        if value is None:
            raise CheckError(f"pass step “{step}” first")
        return value

    return expected


def _extra_per_checkout(ctx: LabContext, progress: dict) -> float:
    seen = ctx.observed("retries-on")
    if not seen:
        raise CheckError("pass step “retries-on” first")
    return round(seen["charge_requests"] / max(seen["checkouts"], 1), 2)


QUESTIONS = [
    Question(
        "retries",
        "With retries on (step 3), how many times did order retry a charge? (order's "
        'lab_retries_total{peer="payment"}, the check shows it)',
        _figure("retries-on", "retries"),
        tolerance=0,
        explanation="Each retry is one more request to payment: the price of turning a 30 % failure rate "
        "into about 3 % (0.3³ with three attempts).",
    ),
    Question(
        "requests-per-checkout",
        "How many charge requests did payment receive per checkout in step 3, on "
        "average? (charge requests ÷ checkouts)",
        _extra_per_checkout,
        tolerance=0.05,
        relative=0.05,
        explanation="Without a fault it would be 1. With a 30 % fault and three attempts, about "
        "1 + 0.3 + 0.09 ≈ 1.4 — and every one of them is load on a service that is already in "
        "trouble.",
    ),
    Question(
        "why-safe",
        "In this lab, what made retrying a charge safe?",
        fixed("every retry carried the same Idempotency-Key, so payment would answer a repeat with the first charge"),
        choices=(
            "payment never fails twice in a row",
            "every retry carried the same Idempotency-Key, so payment would answer a repeat with the first charge",
            "the audit refunds double charges",
        ),
        explanation="The key (order-<id>-charge) names the charge, not the attempt. Here the injected 503 was "
        "answered before payment charged anything, so no retry could have charged twice anyway; the "
        "key matters when the answer is lost after the work was done — a timeout, as lab 3 showed "
        "with inventory's reservation. The audit does not fix anything: it only checks.",
    ),
]
