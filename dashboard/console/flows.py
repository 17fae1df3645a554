"""Scripted customer journeys the dashboard runs for a class to watch, hop by hop.

Each flow registers a fresh lab customer and walks the public APIs as that
customer would (the dashboard's own identity only for the saga switch). Every
call is a *hop* recorded with its service, method, path, status and latency;
the whole flow runs under one request id (``X-Request-ID``) and, when tracing
is on, under one root span ``flow.<name>``, so its trace can be fetched from
the collector as one waterfall.

A flow says what the lab should do (``expected``) and what it did
(``outcome``); ``ok`` is whether they agree — under an injected fault a flow
that "fails" may be exactly the lesson.
"""

from __future__ import annotations

import contextvars
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable

from django.conf import settings

from chassis.requestid import bind_request_id

from . import lab, peers, tracing

APPROVED_CARD = "4242424242424242"
DECLINED_CARD = "4000000000000002"
TERMINAL = ("CONFIRMED", "CANCELLED", "SHIPPED", "DELIVERED")
# Every order_service process follows a switch within a second (its lab state refresh).
SWITCH_SETTLE_SECONDS = 1.1


class FlowStop(Exception):
    """The journey cannot go on; the message says where and why."""


@dataclass
class Journey:
    """One run: its request id, the customer's token, every hop made."""

    request_id: str
    timeout: float
    hops: list[dict] = field(default_factory=list)
    token: str | None = None
    customer: str = ""
    order: dict | None = None
    notes: list[str] = field(default_factory=list)
    facts: dict = field(default_factory=dict)  # what a flow's expectation checks

    def call(self, service: str, method: str, path: str, *, json=None, params=None, as_customer: bool = True,
             idempotency_key: str | None = None, note: str = "") -> peers.Call:
        result = peers.call(service, method, path, json=json, params=params,
                            bearer=self.token if as_customer else None,
                            idempotency_key=idempotency_key, timeout=self.timeout)
        self.hops.append({**result.as_hop(), "note": note})
        return result

    def expect(self, result: peers.Call, *statuses: int, doing: str) -> dict:
        if result.status not in statuses:
            raise FlowStop(f"{doing}: {result.service} answered "
                           f"{result.status or result.state} — {result.message}")
        return result.data if isinstance(result.data, dict) else {}


@dataclass(frozen=True)
class Flow:
    slug: str
    title: str
    explains: str
    expected: str
    run: Callable[[Journey], str]
    needs_saga_switch: bool = False


# --- steps shared by the flows ----------------------------------------------------


def register_and_login(j: Journey) -> None:
    email = f"flow-{uuid.uuid4().hex[:10]}@lab.local"
    password = f"Flow-{uuid.uuid4().hex[:12]}!"
    j.expect(j.call("user", "POST", "/api/auth/register/", as_customer=False,
                    json={"email": email, "password": password, "name": "Flow Customer"}, note="register"),
             201, doing="registering a customer")
    pair = j.expect(j.call("user", "POST", "/api/auth/login/", as_customer=False,
                           json={"email": email, "password": password}, note="log in"),
                    200, doing="logging in")
    j.token = pair.get("access")
    j.customer = email
    if not j.token:
        raise FlowStop("logging in: no access token in the answer")


def pick_product(j: Journey) -> dict:
    page = j.expect(j.call("inventory", "GET", "/api/products/", params={"page_size": 50}, note="browse the catalog"),
                    200, doing="listing products")
    products = [p for p in page.get("results", []) if p.get("active", True) and (p.get("available") or 0) > 0]
    if not products:
        raise FlowStop("listing products: nothing in stock to order (restock from the browsable API)")
    return max(products, key=lambda p: p.get("available") or 0)


def add_card(j: Journey, number: str) -> str:
    card = j.expect(j.call("payment", "POST", "/api/payment-methods/", note=f"save card …{number[-4:]}",
                           json={"card_number": number, "exp_month": 12, "exp_year": 2035, "cvc": "123"}),
                    201, doing="saving a card")
    return card["token"]


def place_order(j: Journey, sku: str, card: str, *, key: str | None = None, note: str = "place the order",
                statuses=(200, 201, 202)) -> peers.Call:
    result = j.call("order", "POST", "/api/orders/", idempotency_key=key or f"flow-{uuid.uuid4().hex}", note=note,
                    json={"lines": [{"sku": sku, "quantity": 1}], "payment_method": card})
    order = j.expect(result, *statuses, doing="placing the order")
    j.order = order
    return result


def wait_for_order(j: Journey, order_id, *, seconds: float = 20.0) -> dict:
    """Poll the order (as its customer) until it reaches a final state."""
    deadline = time.monotonic() + seconds
    while True:
        order = j.expect(j.call("order", "GET", f"/api/orders/{order_id}/", note="track the order"),
                         200, doing="tracking the order")
        j.order = order
        if order.get("status") in TERMINAL or time.monotonic() > deadline:
            return order
        time.sleep(0.5)


def _status(order: dict | None) -> str:
    if not order:
        return "no order"
    reason = f" ({order['status_reason']})" if order.get("status_reason") else ""
    return f"order #{order.get('id')} {order.get('status')}{reason}"


# --- the flows -----------------------------------------------------------------------


def flow_register(j: Journey) -> str:
    register_and_login(j)
    me = j.expect(j.call("user", "GET", "/api/users/me/", note="who am I"), 200, doing="reading the profile")
    return f"registered and logged in as {me.get('email', j.customer)}"


def flow_browse(j: Journey) -> str:
    register_and_login(j)
    product = pick_product(j)
    j.expect(j.call("inventory", "GET", "/api/products/", params={"search": product["name"].split()[0]},
                    note="search"), 200, doing="searching")
    detail = j.expect(j.call("inventory", "GET", f"/api/products/{product['sku']}/", note="product page"),
                      200, doing="opening a product")
    return f"{detail.get('sku')} — {detail.get('name')}: {detail.get('available')} available"


def _checkout(j: Journey, card_number: str) -> dict:
    register_and_login(j)
    product = pick_product(j)
    card = add_card(j, card_number)
    result = place_order(j, product["sku"], card)
    j.facts["accepted_status"] = result.status
    order = j.order
    if result.status == 202 or order.get("status") not in TERMINAL:
        order = wait_for_order(j, order["id"])
    return order


def flow_checkout_sync(j: Journey) -> str:
    return _status(_checkout(j, APPROVED_CARD))


def flow_checkout_async(j: Journey) -> str:
    mode = j.call("order", "GET", "/_lab/saga/", as_customer=False, note="read the saga mode")
    if not lab.saga_available(mode):
        raise FlowStop("order_service has no saga mode switch yet (GET /_lab/saga/)")
    previous = mode.data["mode"]
    if previous != "async":
        j.expect(j.call("order", "PUT", "/_lab/saga/", json={"mode": "async"}, as_customer=False,
                        note="switch the saga to async"), 200, doing="switching the saga mode")
        time.sleep(SWITCH_SETTLE_SECONDS)
    try:
        return _status(_checkout(j, APPROVED_CARD))
    finally:
        if previous != "async":
            j.call("order", "PUT", "/_lab/saga/", json={"mode": previous}, as_customer=False,
                   note=f"switch the saga back to {previous}")


def flow_declined(j: Journey) -> str:
    return _status(_checkout(j, DECLINED_CARD))


def flow_idempotent(j: Journey) -> str:
    register_and_login(j)
    product = pick_product(j)
    card = add_card(j, APPROVED_CARD)
    key = f"flow-twice-{uuid.uuid4().hex}"
    first = place_order(j, product["sku"], card, key=key, note="place the order")
    first_order = j.order
    second = place_order(j, product["sku"], card, key=key, note="send it again, same Idempotency-Key")
    replayed = str(second.headers.get("Idempotent-Replayed", "")).lower() == "true"
    same = first_order.get("id") == j.order.get("id")
    j.notes.append(f"first answer HTTP {first.status}, second HTTP {second.status}"
                   f"{' (Idempotent-Replayed: true)' if replayed else ''}")
    j.facts["same_order"] = same
    verdict = "one order" if same else f"TWO orders (#{first_order.get('id')} and #{j.order.get('id')})"
    return f"{verdict}: {_status(j.order)}"


def flow_cancel_refund(j: Journey) -> str:
    order = _checkout(j, APPROVED_CARD)
    if order.get("status") != "CONFIRMED":
        raise FlowStop(f"the order did not confirm, nothing to refund: {_status(order)}")
    cancelled = j.expect(j.call("order", "POST", f"/api/orders/{order['id']}/cancel/", note="cancel the order"),
                         200, 202, doing="cancelling")
    j.order = cancelled
    if cancelled.get("status") not in TERMINAL:
        cancelled = wait_for_order(j, order["id"])
    payments = j.expect(j.call("payment", "GET", "/api/payments/", note="my payments"), 200, doing="reading payments")
    refunded = sum(int(p.get("refunded_cents") or 0) for p in payments.get("results", [])
                   if str(p.get("order_id")) == str(order["id"]))
    j.facts.update(refunded_cents=refunded, total_cents=int(order.get("total_cents") or 0))
    j.notes.append(f"refunded {refunded / 100:.2f} of {j.facts['total_cents'] / 100:.2f}")
    return f"{_status(cancelled)}, {refunded / 100:.2f} refunded"


FLOWS = {
    f.slug: f
    for f in (
        Flow("register", "Register and log in", "A new customer signs up and logs in (user_service).",
             "201 then a token pair", flow_register),
        Flow("browse", "Browse the catalog", "List, search and open a product (inventory_service).",
             "the catalog answers", flow_browse),
        Flow("checkout-sync", "Checkout (sync)",
             "Save a card and order one item: reserve stock → charge → commit, in the request.",
             "order CONFIRMED", flow_checkout_sync),
        Flow("checkout-async", "Checkout (async)",
             "The same order with the saga on the Celery worker: 202 at once, then poll.",
             "202, then order CONFIRMED", flow_checkout_async, needs_saga_switch=True),
        Flow("declined", "Declined card", f"Pay with {DECLINED_CARD}: the saga compensates (releases the stock).",
             "order CANCELLED (card declined), stock released", flow_declined),
        Flow("idempotent", "Same order sent twice",
             "Post the same order twice with one Idempotency-Key: one order, the second answer replayed.",
             "one order, second answer replayed", flow_idempotent),
        Flow("cancel-refund", "Cancel and refund", "Order, then cancel: refund and restock.",
             "order CANCELLED, fully refunded", flow_cancel_refund),
    )
}

EXPECTATIONS = {
    "register": lambda j, outcome: outcome.startswith("registered"),
    "browse": lambda j, outcome: bool(outcome),
    "checkout-sync": lambda j, outcome: bool(j.order) and j.order.get("status") == "CONFIRMED",
    "checkout-async": lambda j, outcome: bool(j.order) and j.order.get("status") == "CONFIRMED"
    and j.facts.get("accepted_status") == 202,
    "declined": lambda j, outcome: bool(j.order) and j.order.get("status") == "CANCELLED",
    "idempotent": lambda j, outcome: j.facts.get("same_order") is True,
    "cancel-refund": lambda j, outcome: bool(j.order) and j.order.get("status") == "CANCELLED"
    and j.facts.get("refunded_cents") == j.facts.get("total_cents"),
}


@dataclass
class FlowResult:
    flow: Flow
    request_id: str
    trace_id: str
    ok: bool
    outcome: str
    hops: list[dict]
    order: dict | None
    customer: str
    notes: list[str]
    duration_ms: float


def flow_run(slug: str) -> FlowResult:
    """Run one flow under its own request id and root span; never raises for the lab's failures."""
    flow = FLOWS[slug]
    request_id = f"flow-{slug}-{uuid.uuid4().hex[:12]}"
    # A copy of the context: the flow's request id and span stay inside the flow.
    return contextvars.copy_context().run(_run, flow, request_id)


def _run(flow: Flow, request_id: str) -> FlowResult:
    bind_request_id(request_id)
    j = Journey(request_id=request_id, timeout=settings.DASHBOARD_FLOW_TIMEOUT)
    started = time.perf_counter()
    with tracing.flow_span(flow.slug, **{"lab.flow": flow.slug, "lab.request_id": request_id}) as trace_id:
        try:
            outcome = flow.run(j)
            ok = EXPECTATIONS[flow.slug](j, outcome)
        except FlowStop as stop:
            outcome, ok = f"stopped while {stop}", False
    return FlowResult(flow=flow, request_id=request_id, trace_id=trace_id, ok=ok, outcome=outcome, hops=j.hops,
                      order=j.order, customer=j.customer, notes=j.notes,
                      duration_ms=round((time.perf_counter() - started) * 1000, 1))
