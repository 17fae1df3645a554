"""Scripted customer journeys the dashboard runs for a class to watch, hop by hop.

Each flow walks the public APIs as a lab customer would (the dashboard's own
identity only for the saga switch). Every call is a *hop* recorded with its
service, method, path, status and latency; the whole flow runs under one
request id (``X-Request-ID``) and, when tracing is on, under one root span
``flow.<name>``, so its trace can be fetched from the collector as one
waterfall.

The checkout flows reuse a *prepared customer* per card (approved, declined)
kept in the dashboard's cache: an account that can log in and a card saved
while payment was up. The lesson of a payment outage is what the saga and the
breaker do, so the outage has to land on the order, not on saving a card
beforehand; only logging in remains a hop before the order. A missing or
broken prepared customer is registered afresh (and with payment down that
stops at the card, saying why).

A flow says what the lab should do (``expected``) and what it did
(``outcome``); ``ok`` is whether they agree. The expectation is chosen when
the flow starts from the faults then active and the order → payment breaker:
with payment unavailable a checkout *should* pause (202 PENDING, "paused:
payment unavailable") while the breaker counts the failure, and be refused at
once (503 with Retry-After, no order saved) once it is open, so the intended
effect of a fault is not reported as a failure. A synchronous
checkout that paused is reported at once; only an order the worker is still
running is polled, for a bounded time.
"""

from __future__ import annotations

import contextvars
import dataclasses
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.core.cache import cache

from chassis import auth
from chassis.requestid import bind_request_id

from . import lab, peers, tracing

APPROVED_CARD = "4242424242424242"
DECLINED_CARD = "4000000000000002"
TERMINAL = ("CONFIRMED", "CANCELLED", "SHIPPED", "DELIVERED")
# A healthy worker ends a checkout within a second or two; past this the flow reports the order as it stands
# (a worker that is down or retrying), instead of holding the student's click.
POLL_SECONDS = 10.0
POLL_INTERVALS = (0.25, 0.5, 1.0)  # then every second
PREPARED_KEY = "console:flows:prepared-customer:{card}"
PAUSED_NOTE = re.compile(r"^paused: (?P<peer>\w+) unavailable")
ORDER_HOP = "place the order"


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
    lab: LabState | None = None

    def call(
        self,
        service: str,
        method: str,
        path: str,
        *,
        json=None,
        params=None,
        as_customer: bool = True,
        idempotency_key: str | None = None,
        note: str = "",
        headline: bool = False,
        headers: dict[str, str] | None = None,
    ) -> peers.Call:
        """Make one hop and record it; ``headline`` marks the hop the lesson is about (its latency is shown big)."""
        result = peers.call(
            service,
            method,
            path,
            json=json,
            params=params,
            bearer=self.token if as_customer else None,
            idempotency_key=idempotency_key,
            timeout=self.timeout,
            headers=headers,
        )
        self.hops.append({**result.as_hop(), "note": note, **({"headline": True} if headline else {})})
        return result

    def expect(self, result: peers.Call, *statuses: int, doing: str) -> dict:
        if result.status not in statuses:
            raise FlowStop(f"{doing}: {result.service} answered {result.status or result.state} — {result.message}")
        return result.data if isinstance(result.data, dict) else {}


@dataclass(frozen=True)
class Flow:
    slug: str
    title: str
    explains: str
    expected: str
    run: Callable[[Journey], str]
    needs_saga_switch: bool = False
    card: str = ""  # the card of the prepared customer the flow checks out with; "" for none

    @property
    def prepared(self) -> dict | None:
        """The prepared customer this flow would reuse (for the Flows page), None while there is none."""
        return prepared_get(self.card) if self.card else None


# --- the lab as the flow found it --------------------------------------------------


@dataclass(frozen=True)
class LabState:
    """The active faults and the order → payment breaker when a flow starts: they decide what it should show."""

    faults: dict = field(default_factory=dict)  # service → its active faults; absent when they could not be read
    unreachable: tuple = ()  # services whose /_lab/ API did not answer at all (down, timed out)
    breaker: dict | None = None  # order's breaker towards payment, as order_service reports it
    breaker_enabled: bool | None = None  # order's breaker switch; None when unknown

    @property
    def payment_unavailable(self) -> bool:
        """Whether order_service's calls to payment should fail: an outage, nothing listening, or a failing link."""
        if "payment" in self.unreachable:
            return True
        for fault in self.faults.get("payment", []):
            if fault.get("kind") == "outage":
                return True
            if (
                fault.get("kind") == "error"
                and int(fault.get("status") or 503) >= 500
                and float(fault.get("probability", 1.0) or 0) >= 1.0
                and not fault.get("path_prefix")
            ):
                return True
        return any(
            f.get("kind") == "dependency" and f.get("target") == "payment" and f.get("mode", "fail") != "delay"
            for f in self.faults.get("order", [])
        )

    @property
    def inventory_db_down(self) -> bool:
        """Whether every query of inventory fails (a database fault in mode fail, on every request)."""
        return any(
            f.get("kind") == "database"
            and f.get("mode", "fail") == "fail"
            and float(f.get("probability", 1.0) or 0) >= 1.0
            and not f.get("path_prefix")
            for f in self.faults.get("inventory", [])
        )

    @property
    def breaker_open(self) -> bool:
        """Open and still within its reset_timeout (after it, the next checkout is the half-open trial)."""
        if not (self.breaker_enabled is not False and self.breaker and self.breaker.get("state") == "open"):
            return False
        try:
            opened = datetime.fromisoformat(str(self.breaker["opened_at"]).replace("Z", "+00:00"))
            return time.time() < opened.timestamp() + float(self.breaker.get("reset_timeout") or 0)
        except (KeyError, TypeError, ValueError):
            return True  # no opening time to go by: open, as order_service reports it

    def faults_line(self) -> str:
        active = [f"{service} {fault.get('kind', '?')}" for service, faults in self.faults.items() for fault in faults]
        active += [f"{service} unreachable" for service in self.unreachable]
        return "active faults when the flow started: " + (", ".join(active) if active else "none")


def lab_state_read() -> LabState:
    """Every service's faults and order's resilience, in parallel and untraced (they are not the journey)."""
    tasks = {f"faults:{s}": (lab.faults_list, s) for s in peers.SERVICES}
    tasks["resilience"] = (lab.resilience_get, "order")
    results = peers.gather(tasks)
    faults, unreachable = {}, []
    for service in peers.SERVICES:
        answer = results.get(f"faults:{service}")
        if answer is not None and answer.ok and isinstance(answer.data, dict):
            faults[service] = list(answer.data.get("faults") or [])
        elif answer is None or answer.state in ("down", "timeout") or (answer.status or 0) >= 500:
            unreachable.append(service)  # an outage answers 503 to /_lab/ too
    resilience = results.get("resilience")
    breaker, enabled = None, None
    if resilience is not None and resilience.ok and isinstance(resilience.data, dict):
        breaker = (resilience.data.get("breakers") or {}).get("payment")
        enabled = ((resilience.data.get("switches") or {}).get("breaker") or {}).get("enabled")
    return LabState(faults=faults, unreachable=tuple(unreachable), breaker=breaker, breaker_enabled=enabled)


def _breaker_line(breaker: dict | None, enabled: bool | None) -> str:
    if enabled is False:
        return "off"
    if not breaker:
        return "unknown"
    line = f"{breaker.get('state', '?')}, {breaker.get('fail_counter', 0)}/{breaker.get('fail_max', '?')} failures"
    return line


def breaker_now() -> str:
    """The order → payment breaker right now, as one phrase; read outside the flow's trace."""
    with tracing.untraced():
        answer = lab.resilience_get("order")
    if not answer.ok or not isinstance(answer.data, dict):
        return f"unknown ({answer.message})"
    breaker = (answer.data.get("breakers") or {}).get("payment")
    return _breaker_line(breaker, ((answer.data.get("switches") or {}).get("breaker") or {}).get("enabled"))


# --- the prepared customers -------------------------------------------------------------


def _card_kind(number: str) -> str:
    return "declined" if number == DECLINED_CARD else "approved"


def prepared_get(card_number: str) -> dict | None:
    """``{"email", "password", "card_token", "card_last4", "access", "access_until"}`` kept for this card, or None."""
    return cache.get(PREPARED_KEY.format(card=_card_kind(card_number)))


def prepared_put(card_number: str, customer: dict) -> None:
    # No expiry: the customer is only dropped when it stops working (its login or its card).
    cache.set(PREPARED_KEY.format(card=_card_kind(card_number)), customer, timeout=None)


def prepared_forget(card_number: str) -> None:
    cache.delete(PREPARED_KEY.format(card=_card_kind(card_number)))


# --- steps shared by the flows ----------------------------------------------------


def _register(j: Journey) -> tuple[str, str]:
    email = f"flow-{uuid.uuid4().hex[:10]}@lab.local"
    password = f"Flow-{uuid.uuid4().hex[:12]}!"
    j.expect(
        j.call(
            "user",
            "POST",
            "/api/auth/register/",
            as_customer=False,
            json={"email": email, "password": password, "name": "Flow Customer"},
            note="register",
        ),
        201,
        doing="registering a customer",
    )
    return email, password


def _login(j: Journey, email: str, password: str, *, note: str = "log in") -> peers.Call:
    result = j.call(
        "user", "POST", "/api/auth/login/", as_customer=False, json={"email": email, "password": password}, note=note
    )
    if result.status == 200:
        j.token = result.data.get("access") if isinstance(result.data, dict) else None
        j.customer = email
    return result


def register_and_login(j: Journey) -> None:
    email, password = _register(j)
    pair = _login(j, email, password)
    j.expect(pair, 200, doing="logging in")
    if not j.token:
        raise FlowStop("logging in: no access token in the answer")


def pick_product(j: Journey) -> dict:
    page = j.expect(
        j.call("inventory", "GET", "/api/products/", params={"page_size": 50}, note="browse the catalog"),
        200,
        doing="listing products",
    )
    if page.get("stale"):
        # inventory's fallback: its database failed and it served the last good copy of this page.
        j.hops[-1]["note"] += " — STALE: inventory's last good copy (X-Lab-Stale: true)"
        j.facts["catalog_stale"] = True
        j.notes.append(
            f"The catalog came from inventory's last good copy, marked stale: {page.get('count', 0)} products, "
            "their stock as it was then."
        )
    products = [p for p in page.get("results", []) if p.get("active", True) and (p.get("available") or 0) > 0]
    if not products:
        raise FlowStop("listing products: nothing in stock to order (restock from the browsable API)")
    return max(products, key=lambda p: p.get("available") or 0)


def add_card(j: Journey, number: str) -> str:
    result = j.call(
        "payment",
        "POST",
        "/api/payment-methods/",
        note=f"save card …{number[-4:]}",
        json={"card_number": number, "exp_month": 12, "exp_year": 2035, "cvc": "123"},
    )
    if result.status != 201 and (result.status is None or result.status >= 500):
        said = "" if result.message in (f"HTTP {result.status}", result.state) else f" ({result.message})"
        raise FlowStop(
            f"saving a card: payment answered {result.status or result.state}{said}. "
            "Payment is down and no card was saved before the outage: run this flow once while "
            "payment is up"
        )
    card = j.expect(result, 201, doing="saving a card")
    return card["token"]


def prepare_customer(j: Journey, card_number: str) -> str:
    """Log in as the prepared customer of this card and return its card token; prepare a fresh one if needed.

    With payment unavailable the saved card is used without asking payment
    about it: that question would hit the outage before the order does.
    """
    saved = prepared_get(card_number)
    last4 = card_number[-4:]
    if saved:
        login = _login(j, saved["email"], saved["password"], note="log in (prepared customer)")
        if login.status == 200 and j.token:
            saved = {**saved, "access": j.token, "access_until": time.time() + _lifetime(login) - 30}
            prepared_put(card_number, saved)
            if saved.get("card_token"):
                return _saved_card(j, card_number, saved)
        elif login.status == 429 and saved.get("card_token") and saved.get("access_until", 0) > time.time():
            # user_service allows a few logins a minute per account; a class clicking Run again and again
            # must still reach the order, with the token of the previous login while it lasts.
            j.token, j.customer = saved["access"], saved["email"]
            j.notes.append("user_service throttled the login (too many in a minute): used the previous token")
            return _saved_card(j, card_number, saved)
        elif login.status in (400, 401, 403, 404):
            prepared_forget(card_number)
            j.notes.append(f"the prepared customer {saved['email']} could not log in any more: registered a new one")
            saved = None
        else:
            j.expect(login, 200, doing="logging in")
            raise FlowStop("logging in: no access token in the answer")
    if not saved:
        email, password = _register(j)
        saved = {"email": email, "password": password, "card_token": "", "card_last4": last4}
        prepared_put(card_number, saved)  # an account is worth keeping even if its card cannot be saved now
        j.expect(_login(j, email, password), 200, doing="logging in")
        if not j.token:
            raise FlowStop("logging in: no access token in the answer")
    token = add_card(j, card_number)
    prepared_put(card_number, {**saved, "card_token": token, "card_last4": last4})
    return token


def _lifetime(login: peers.Call) -> float:
    try:
        return float(login.data.get("expires_in") or 0)
    except (AttributeError, TypeError, ValueError):
        return 0.0


def _saved_card(j: Journey, card_number: str, saved: dict) -> str:
    """The prepared card, checked with payment when payment is up; a card payment no longer holds is replaced."""
    last4 = saved.get("card_last4") or card_number[-4:]
    if j.lab is not None and j.lab.payment_unavailable:
        j.notes.append(f"reused card …{last4} of {saved['email']}, saved before the outage")
        return saved["card_token"]
    listed = j.call(
        "payment", "GET", "/api/payment-methods/", params={"page_size": 100}, note=f"check the saved card …{last4}"
    )
    if not listed.ok or not isinstance(listed.data, dict):
        j.notes.append(f"could not check card …{last4} (payment answered {listed.status or listed.state}): used it")
        return saved["card_token"]
    tokens = {str(c.get("token")) for c in listed.data.get("results", []) if isinstance(c, dict)}
    if saved["card_token"] in tokens:
        return saved["card_token"]
    j.notes.append(f"payment no longer holds card …{last4} of {saved['email']}: saved it again")
    token = add_card(j, card_number)
    prepared_put(card_number, {**saved, "card_token": token, "card_last4": card_number[-4:]})
    return token


def place_order(
    j: Journey,
    sku: str,
    card: str,
    *,
    key: str | None = None,
    note: str = ORDER_HOP,
    statuses=(200, 201, 202),
    headline: bool = False,
    headers: dict[str, str] | None = None,
) -> peers.Call:
    result = j.call(
        "order",
        "POST",
        "/api/orders/",
        idempotency_key=key or f"flow-{uuid.uuid4().hex}",
        note=note,
        json={"lines": [{"sku": sku, "quantity": 1}], "payment_method": card},
        headline=headline,
        headers=headers,
    )
    order = j.expect(result, *statuses, doing="placing the order")
    j.order = order
    return result


def wait_for_order(j: Journey, order_id, *, seconds: float | None = None) -> dict:
    """Poll the order (as its customer) until it ends, pauses on a peer, or ``seconds`` (POLL_SECONDS) pass."""
    seconds = POLL_SECONDS if seconds is None else seconds
    deadline = time.monotonic() + seconds
    polls = 0
    while True:
        order = j.expect(
            j.call("order", "GET", f"/api/orders/{order_id}/", note="track the order"), 200, doing="tracking the order"
        )
        j.order = order
        if order.get("status") in TERMINAL or paused_note(order) or time.monotonic() > deadline:
            if order.get("status") not in TERMINAL and not paused_note(order):
                j.notes.append(f"still {order.get('status')} after {seconds:g} s of polling: is the worker running?")
            return order
        time.sleep(POLL_INTERVALS[min(polls, len(POLL_INTERVALS) - 1)])
        polls += 1


def paused_note(order: dict | None) -> str:
    """The "paused: <peer> unavailable (…)" note when the saga stopped there waiting for a peer, else ""."""
    if not order or order.get("status") != "PENDING":
        return ""
    history = order.get("history") or []
    last = history[-1] if history and isinstance(history[-1], dict) else {}
    note = str(last.get("note") or "")
    return note if last.get("step") == "paused" or PAUSED_NOTE.match(note) else ""


def saga_duration_ms(order: dict | None) -> float | None:
    """Milliseconds from the order's first history entry to its last (None without two readable entries)."""
    stamps = []
    for entry in (order or {}).get("history") or []:
        try:
            stamps.append(datetime.fromisoformat(str(entry.get("at")).replace("Z", "+00:00")))
        except (TypeError, ValueError, AttributeError):
            continue
    if len(stamps) < 2:
        return None
    return round((max(stamps) - min(stamps)).total_seconds() * 1000, 1)


def _status(order: dict | None) -> str:
    if not order:
        return "no order"
    note = paused_note(order)
    if note:
        match = PAUSED_NOTE.match(note)
        peer = match.group("peer") if match else "the peer"
        return f"order #{order.get('id')} PENDING — {note}; the worker will finish it when {peer} is back"
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
    search_params = {"search": product["name"].split()[0]}
    if j.facts.get("catalog_stale"):
        # inventory's database is down: only a page it answered before has a copy; the others are its 503.
        search = j.call("inventory", "GET", "/api/products/", params=search_params, note="search")
        detail = j.call("inventory", "GET", f"/api/products/{product['sku']}/", note="product page")
        found = "stale" if isinstance(search.data, dict) and search.data.get("stale") else search.status or search.state
        return (
            f"the catalog served from its last good copy, marked stale ({product['sku']}: "
            f"{product.get('available')} available then); search: {found}, "
            f"product page: {detail.status or detail.state}"
        )
    j.expect(j.call("inventory", "GET", "/api/products/", params=search_params, note="search"), 200, doing="searching")
    detail = j.expect(
        j.call("inventory", "GET", f"/api/products/{product['sku']}/", note="product page"),
        200,
        doing="opening a product",
    )
    return f"{detail.get('sku')} — {detail.get('name')}: {detail.get('available')} available"


def _checkout(j: Journey, card_number: str, *, headers: dict[str, str] | None = None) -> dict:
    """Prepare (or reuse) the customer and card, order one item, follow the order only while it is running.

    A 202 whose order paused on a peer is the synchronous saga giving up for
    now (the worker resumes it): polling would only make the click wait.
    """
    card = prepare_customer(j, card_number)
    product = pick_product(j)
    result = place_order(j, product["sku"], card, headline=True, headers=headers, statuses=(200, 201, 202, 503))
    j.facts["accepted_status"] = result.status
    if result.status == 503:
        retry_after = str(result.headers.get("Retry-After", ""))
        if not retry_after:
            raise FlowStop(f"placing the order: {result.service} answered 503 — {result.message}")
        # Refused before the saga's first step (a peer's breaker is open): no order to follow.
        j.order = None
        j.facts["refused"] = f"503 at once (Retry-After: {retry_after} s), no order saved: a peer's breaker is open"
        return {}
    order = j.order
    if order.get("status") not in TERMINAL and not paused_note(order):
        order = wait_for_order(j, order["id"])
    return order


def _checkout_outcome(j: Journey, order: dict) -> str:
    return j.facts.get("refused") or _status(order)


def flow_checkout_sync(j: Journey) -> str:
    return _checkout_outcome(j, _checkout(j, APPROVED_CARD))


def flow_checkout_async(j: Journey) -> str:
    """One checkout on the worker, the lab's saga mode left as it is for everyone else.

    The order goes with ``X-Lab-Saga-Mode: async`` and, since it is placed as the flow's
    customer, ``X-Lab-Admin`` (a service token the dashboard signs for order) saying that the
    lab admin made that choice.
    """
    mode = j.call("order", "GET", "/_lab/saga/", as_customer=False, note="read the lab's saga mode (left as it is)")
    if not lab.saga_available(mode):
        raise FlowStop("order_service has no saga mode switch yet (GET /_lab/saga/)")
    admin = {"X-Lab-Saga-Mode": "async", "X-Lab-Admin": auth.service_token("order")}
    return _checkout_outcome(j, _checkout(j, APPROVED_CARD, headers=admin))


def flow_declined(j: Journey) -> str:
    return _checkout_outcome(j, _checkout(j, DECLINED_CARD))


def flow_idempotent(j: Journey) -> str:
    card = prepare_customer(j, APPROVED_CARD)
    product = pick_product(j)
    key = f"flow-twice-{uuid.uuid4().hex}"
    first = place_order(j, product["sku"], card, key=key, headline=True)
    first_order = j.order
    second = place_order(j, product["sku"], card, key=key, note="send it again, same Idempotency-Key")
    replayed = str(second.headers.get("Idempotent-Replayed", "")).lower() == "true"
    same = first_order.get("id") == j.order.get("id")
    j.notes.append(
        f"first answer HTTP {first.status}, second HTTP {second.status}"
        f"{' (Idempotent-Replayed: true)' if replayed else ''}"
    )
    j.facts["same_order"] = same
    verdict = "one order" if same else f"TWO orders (#{first_order.get('id')} and #{j.order.get('id')})"
    return f"{verdict}: {_status(j.order)}"


def flow_cancel_refund(j: Journey) -> str:
    order = _checkout(j, APPROVED_CARD)
    if j.facts.get("refused"):
        return f"{j.facts['refused']}; nothing to cancel or refund"
    if paused_note(order):
        return f"{_status(order)}; nothing to cancel or refund yet"
    if order.get("status") != "CONFIRMED":
        raise FlowStop(f"the order did not confirm, nothing to refund: {_status(order)}")
    cancelled = j.expect(
        j.call("order", "POST", f"/api/orders/{order['id']}/cancel/", note="cancel the order"),
        200,
        202,
        doing="cancelling",
    )
    j.order = cancelled
    if cancelled.get("status") not in TERMINAL:
        cancelled = wait_for_order(j, order["id"])
    payments = j.expect(j.call("payment", "GET", "/api/payments/", note="my payments"), 200, doing="reading payments")
    refunded = sum(
        int(p.get("refunded_cents") or 0)
        for p in payments.get("results", [])
        if str(p.get("order_id")) == str(order["id"])
    )
    j.facts.update(refunded_cents=refunded, total_cents=int(order.get("total_cents") or 0))
    j.notes.append(f"refunded {refunded / 100:.2f} of {j.facts['total_cents'] / 100:.2f}")
    return f"{_status(cancelled)}, {refunded / 100:.2f} refunded"


FLOWS = {
    f.slug: f
    for f in (
        Flow(
            "register",
            "Register and log in",
            "A new customer signs up and logs in (user_service).",
            "201 then a token pair",
            flow_register,
        ),
        Flow(
            "browse",
            "Browse the catalog",
            "List, search and open a product (inventory_service).",
            "the catalog answers",
            flow_browse,
        ),
        Flow(
            "checkout-sync",
            "Checkout (sync)",
            "Order one item with a saved card: reserve stock → charge → commit, in the request.",
            "order CONFIRMED",
            flow_checkout_sync,
            card=APPROVED_CARD,
        ),
        Flow(
            "checkout-async",
            "Checkout (async)",
            "The same order with its saga on the Celery worker (this order only: the lab's mode is left alone): "
            "202 at once, then poll.",
            "202, then order CONFIRMED",
            flow_checkout_async,
            needs_saga_switch=True,
            card=APPROVED_CARD,
        ),
        Flow(
            "declined",
            "Declined card",
            f"Pay with {DECLINED_CARD}: the saga compensates (releases the stock).",
            "order CANCELLED (card declined), stock released",
            flow_declined,
            card=DECLINED_CARD,
        ),
        Flow(
            "idempotent",
            "Same order sent twice",
            "Post the same order twice with one Idempotency-Key: one order, the second answer replayed.",
            "one order, second answer replayed",
            flow_idempotent,
            card=APPROVED_CARD,
        ),
        Flow(
            "cancel-refund",
            "Cancel and refund",
            "Order, then cancel: refund and restock.",
            "order CANCELLED, fully refunded",
            flow_cancel_refund,
            card=APPROVED_CARD,
        ),
    )
}

EXPECTATIONS = {
    "register": lambda j, outcome: outcome.startswith("registered"),
    "browse": lambda j, outcome: bool(outcome),
    "checkout-sync": lambda j, outcome: bool(j.order) and j.order.get("status") == "CONFIRMED",
    "checkout-async": lambda j, outcome: (
        bool(j.order) and j.order.get("status") == "CONFIRMED" and j.facts.get("accepted_status") == 202
    ),
    "declined": lambda j, outcome: bool(j.order) and j.order.get("status") == "CANCELLED",
    "idempotent": lambda j, outcome: j.facts.get("same_order") is True,
    "cancel-refund": lambda j, outcome: (
        bool(j.order)
        and j.order.get("status") == "CANCELLED"
        and j.facts.get("refunded_cents") == j.facts.get("total_cents")
    ),
}

# The flows whose order's saga charges a card, hence pauses while payment is unavailable.
PAYMENT_FLOWS = ("checkout-sync", "checkout-async", "declined", "cancel-refund")


def _inventory_refused(j: Journey) -> bool:
    """The checkout reserved nothing: the order's saga stopped on inventory, or order refused it at once (503)."""
    if j.facts.get("accepted_status") == 503:
        return bool(j.facts.get("refused")) and not j.order
    order = j.order or {}
    said = " ".join([str(order.get("status_reason") or ""), paused_note(order)]).lower()
    return order.get("status") != "CONFIRMED" and "inventory unavailable" in said


def expectation(flow: Flow, state: LabState) -> tuple[str, Callable[[Journey, str], bool]]:
    """What this flow should show under the lab's state, and the check of it (≤ 200 characters, for FlowRun)."""
    if state.inventory_db_down and flow.slug == "browse":
        return (
            "inventory's database is down: the catalog from its last good copy, marked stale, while its fallback is "
            "on (with it off, browsing fails: 503)",
            lambda j, outcome: bool(j.facts.get("catalog_stale")),
        )
    if state.inventory_db_down and flow.slug == "checkout-sync":
        return (
            "inventory's database is down: the reservation refused (503), nothing reserved or charged, the order "
            "PENDING or refused at once",
            lambda j, outcome: _inventory_refused(j),
        )
    if flow.slug not in PAYMENT_FLOWS or not state.payment_unavailable:
        return flow.expected, EXPECTATIONS[flow.slug]
    if flow.slug == "checkout-async":
        text = "202 at once; the worker's saga pauses (paused: payment unavailable) and resumes when payment is back"
    else:
        pause = "the saga pauses (202 PENDING, paused: payment unavailable)"
        if state.breaker_enabled is False:
            text = f"{pause} after retrying payment: the breaker order → payment is off"
        elif state.breaker_open:
            text = (
                "503 at once with Retry-After: the breaker order → payment is open and fails fast "
                "before the saga's first step (nothing reserved, no order saved)"
            )
            return text[:200], lambda j, outcome: _refused_at_once(j)
        else:
            breaker = state.breaker or {}
            counted = (
                f" ({breaker.get('fail_counter', 0)} before; it opens after {breaker.get('fail_max', '?')} failures)"
                if breaker
                else ""
            )
            # The worker retries paused orders meanwhile, and its failures count too: the breaker may open between
            # this reading and the order, which is then refused at once, as an open breaker should.
            text = f"{pause}, the breaker order → payment counts the failure{counted}; once open, 503 at once"
            return text[:200], lambda j, outcome: _paused(j) or _refused_at_once(j)
    return text[:200], lambda j, outcome: _paused(j)


def _paused(j) -> bool:
    return bool(paused_note(j.order)) and j.facts.get("accepted_status") == 202


def _refused_at_once(j) -> bool:
    return j.facts.get("accepted_status") == 503 and bool(j.facts.get("refused")) and not j.order


@dataclass
class FlowResult:
    flow: Flow  # as it ran: ``expected`` is the expectation chosen for the lab's state then
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
    state = lab_state_read()
    expected, agrees = expectation(flow, state)
    j = Journey(request_id=request_id, timeout=settings.DASHBOARD_FLOW_TIMEOUT, lab=state)
    watch_breaker = flow.slug in PAYMENT_FLOWS and state.payment_unavailable
    if state.faults or state.unreachable:
        j.notes.append(state.faults_line())
    started = time.perf_counter()
    with tracing.flow_span(flow.slug, **{"lab.flow": flow.slug, "lab.request_id": request_id}) as trace_id:
        try:
            outcome = flow.run(j)
            ok = agrees(j, outcome)
        except FlowStop as stop:
            outcome, ok = f"stopped while {stop}", False
    duration_ms = round((time.perf_counter() - started) * 1000, 1)
    if watch_breaker:
        j.notes.append(
            f"breaker order → payment: {_breaker_line(state.breaker, state.breaker_enabled)} before, "
            f"{breaker_now()} after"
        )
    order = j.order
    if order:
        # Computed here so the flow's page can show it; order_service's own fields are left as they came.
        order = {**order, "saga_duration_ms": saga_duration_ms(order)}
    # services.flow_run_record stores ``flow.expected``: hand it the flow as it ran, with the expectation used.
    return FlowResult(
        flow=dataclasses.replace(flow, expected=expected),
        request_id=request_id,
        trace_id=trace_id,
        ok=ok,
        outcome=outcome,
        hops=j.hops,
        order=order,
        customer=j.customer,
        notes=j.notes,
        duration_ms=duration_ms,
    )
