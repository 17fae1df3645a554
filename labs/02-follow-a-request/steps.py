"""Lab 2, follow a request: its steps, checks, solves and questions (the text is lab.md).

Every figure comes from the dashboard's trace API (``/api/traces/?order_id=``
and ``/api/traces/<id>/``), which holds the spans every service sends to the
collector, and from order_service's staff list of orders. Spans reach the
collector a moment after the request (each service exports them in batches),
so a check waits a few seconds for them, no more.
"""

from __future__ import annotations

import re
import time
import uuid
from urllib.parse import urlsplit

import requests

from labctl.labs.context import DECLINED_CARD, LabContext
from labctl.labs.model import CheckError, Question, SolveError, Step, failed, passed

CHECKOUT_SPAN = "POST api/orders/"
PEERS = ("inventory", "payment")
GENERATED_ID = re.compile(r"^[0-9a-f]{32}$")  # what a service makes up when the client sends no X-Request-ID
SPAN_WAIT_SECONDS = 8.0
SAGA_SPANS = ("saga.reserve", "saga.charge", "saga.commit", "saga.compensate")


# --- reading traces -----------------------------------------------------------------------


def _trace_list(ctx: LabContext, **params) -> list[dict]:
    """The trace API's list (it answers ``{"count", "results"}``)."""
    try:
        response = requests.get(ctx.urls["dashboard"] + "/api/traces/", params=params, timeout=10)
        response.raise_for_status()
        body = response.json()
    except (requests.RequestException, KeyError, ValueError) as exc:
        raise CheckError(f"the dashboard's trace API did not answer: {exc}") from exc
    return body.get("results", body.get("traces", []))


def _walk(nodes, parent=None):
    for node in nodes:
        yield node, parent
        yield from _walk(node["children"], node)


def _descendants(node):
    for child in node["children"]:
        yield child
        yield from _descendants(child)


def hop_label(span: dict) -> str:
    """``"order → inventory: POST /internal/reservations/"`` for a client span of order's calls."""
    url = str(span["attributes"].get("http.url") or span["attributes"].get("url.full") or "")
    path = re.sub(r"/[0-9a-f-]{36}/", "/<id>/", urlsplit(url).path)
    peer = next((c["service"] for c in span["children"]), "?")
    return f"{span['service']} → {peer}: {span['name']} {path}"


def checkout_of(ctx: LabContext, order_id: int) -> dict | None:
    """The checkout of one order as the collector holds it, or None when its spans are not there.

    ``{trace_id, request_id, span, spans, hops, services, saga}``: the server span of
    ``POST /api/orders/`` that created the order, every span under it, order's calls to
    its peers (client spans, in order), the services stamped with its request id, and the
    saga's spans in the order they started.
    """
    for summary in _trace_list(ctx, order_id=order_id, limit=20):
        tree = ctx.trace(summary["trace_id"])
        for node, _ in _walk(tree["spans"]):
            if node["service"] != "order" or node["kind"] != "server" or node["name"] != CHECKOUT_SPAN:
                continue
            below = list(_descendants(node))
            saga = [s for s in below if s["name"] in SAGA_SPANS]
            if not any(str(s["attributes"].get("order.id")) == str(order_id) for s in saga):
                continue
            request_id = node["attributes"].get("lab.request_id", "")
            every = [n for n, _ in _walk(tree["spans"])]
            hops = sorted(
                (s for s in below if s["service"] == "order" and s["kind"] == "client"), key=lambda s: s["offset_ms"]
            )
            return {
                "trace_id": summary["trace_id"],
                "request_id": request_id,
                "span": node,
                "spans": below,
                "hops": hops,
                "saga": [s["name"] for s in sorted(saga, key=lambda s: s["offset_ms"])],
                "services": sorted(
                    {n["service"] for n in every if n["attributes"].get("lab.request_id") == request_id}
                ),
            }
    return None


def _complete(checkout: dict | None) -> bool:
    """Every peer's server span has arrived (a client span of order without its server child is waiting)."""
    return (
        checkout is not None
        and bool(checkout["hops"])
        and all(hop["children"] for hop in checkout["hops"] if hop["status"] != "error")
    )


def wait_for_checkout(ctx: LabContext, order_id: int) -> dict | None:
    deadline = time.monotonic() + SPAN_WAIT_SECONDS
    while True:
        checkout = checkout_of(ctx, order_id)
        if _complete(checkout) or time.monotonic() >= deadline:
            return checkout
        ctx.sleep(0.5)


def _slowest(checkout: dict) -> tuple[str, float]:
    per_hop: dict[str, float] = {}
    for hop in checkout["hops"]:
        per_hop[hop_label(hop)] = per_hop.get(hop_label(hop), 0.0) + hop["duration_ms"]
    label = max(per_hop, key=per_hop.get)
    return label, round(per_hop[label], 1)


def _no_trace(order: dict) -> str:
    return (
        f"Order #{order['id']} is {order['status']}, but its checkout's spans are not in the dashboard's "
        "collector (yet): check again in a few seconds. If it stays so, tracing is off for this lab."
    )


# --- 1. one checkout, as a trace ----------------------------------------------------------


def check_checkout(ctx: LabContext):
    orders = [o for o in ctx.orders_since() if o.get("status") == "CONFIRMED"]
    if not orders:
        return failed(
            "No checkout of yours has been confirmed since you started this lab: run “Checkout (sync)” "
            "on the Flows page."
        )
    order = orders[0]
    checkout = wait_for_checkout(ctx, order["id"])
    if not _complete(checkout):
        return failed(_no_trace(order))
    missing = [p for p in PEERS if p not in checkout["services"]]
    if missing:
        return failed(f"The trace of order #{order['id']} has no span of {', '.join(missing)} yet: check again.")
    slowest, slowest_ms = _slowest(checkout)
    return passed(
        f"Order #{order['id']}'s checkout is trace {checkout['trace_id']}: {len(checkout['spans']) + 1} "
        f"spans in {', '.join(checkout['services'])}, {len(checkout['hops'])} calls from order to its "
        f"peers, {checkout['span']['duration_ms']:.0f} ms in all; the slowest hop took {slowest_ms} ms.",
        order_id=order["id"],
        trace_id=checkout["trace_id"],
        request_id=checkout["request_id"],
        hops=len(checkout["hops"]),
        checkout_ms=round(checkout["span"]["duration_ms"], 1),
        slowest_hop=slowest,
        slowest_hop_ms=slowest_ms,
    )


def solve_checkout(ctx: LabContext) -> None:
    response = ctx.new_customer().order(ctx.in_stock_sku())
    if response.status_code not in (200, 201):
        raise SolveError(f"order_service answered {response.status_code}: {response.text[:200]}")


# --- 2. your own request id, in every service -----------------------------------------------


def _chosen(request_id: str) -> bool:
    """An id the client sent: neither one a service generated nor one the dashboard's flows set."""
    return bool(request_id) and not GENERATED_ID.match(request_id) and not request_id.startswith("flow-")


def check_own_request_id(ctx: LabContext):
    since = ctx.passed_at("checkout") or ctx.started_at
    orders = ctx.orders_since(since)[:10]
    if not orders:
        return failed("No order since step 1: send a checkout with curl and your own X-Request-ID header.")
    for order in orders:
        checkout = wait_for_checkout(ctx, order["id"])
        if checkout is None or not _chosen(checkout["request_id"]):
            continue
        missing = [s for s in ("order", *PEERS) if s not in checkout["services"]]
        if missing:
            return failed(
                f"Your request id {checkout['request_id']!r} is on order's spans but not (yet) on "
                f"{', '.join(missing)}'s: check again in a few seconds."
            )
        return passed(
            f"Your request id {checkout['request_id']!r} (order #{order['id']}) is stamped on the spans "
            f"of {', '.join(checkout['services'])}: it travelled with every call.",
            own_request_id=checkout["request_id"],
            own_order_id=order["id"],
            own_trace_id=checkout["trace_id"],
            stamped_services=len(checkout["services"]),
        )
    return failed(
        f"None of your {len(orders)} order(s) since step 1 was sent with an X-Request-ID of your own "
        "(the ids are the ones the service or the dashboard made up): add "
        "-H 'X-Request-ID: lab2-yourname-1' to the curl of this step."
    )


def solve_own_request_id(ctx: LabContext) -> None:
    customer = ctx.new_customer()
    request_id = f"lab2-student-{uuid.uuid4().hex[:8]}"
    response = customer.call(
        "POST",
        "order",
        "/api/orders/",
        json={"lines": [{"sku": ctx.in_stock_sku(), "quantity": 1}], "payment_method": customer.card},
        headers={"Idempotency-Key": request_id, "X-Request-ID": request_id},
    )
    if response.status_code not in (200, 201) or response.headers.get("X-Request-ID") != request_id:
        raise SolveError(
            f"order_service answered {response.status_code} "
            f"(X-Request-ID {response.headers.get('X-Request-ID')!r}): {response.text[:160]}"
        )


# --- 3. the saga's steps as spans, when it compensates --------------------------------------


def check_saga_spans(ctx: LabContext):
    cancelled = [
        o
        for o in ctx.orders_since()
        if o.get("status") == "CANCELLED" and "declined" in (o.get("status_reason") or "").lower()
    ]
    if not cancelled:
        return failed(
            "No checkout of yours has been declined since you started: run “Declined card” on the Flows page."
        )
    order = cancelled[0]
    checkout = wait_for_checkout(ctx, order["id"])
    if checkout is None or "saga.compensate" not in checkout["saga"]:
        return failed(_no_trace(order))
    return passed(
        f"Declined order #{order['id']}: its saga ran as spans {' → '.join(checkout['saga'])} "
        f"({order['status_reason']}).",
        declined_order_id=order["id"],
        declined_trace_id=checkout["trace_id"],
        saga_spans=" → ".join(checkout["saga"]),
    )


def solve_saga_spans(ctx: LabContext) -> None:
    response = ctx.new_customer(card=DECLINED_CARD).order(ctx.in_stock_sku())
    if response.status_code not in (200, 201):
        raise SolveError(f"order_service answered {response.status_code}: {response.text[:200]}")


STEPS = [
    Step(
        "checkout",
        "Run one checkout and open its trace",
        check_checkout,
        solve_checkout,
        hints=(
            "Flows page → “Checkout (sync)” → Run; the run's page shows the trace as a waterfall.",
            "Or Traces page: the newest trace whose root is POST api/orders/.",
        ),
        link="/flows/",
        link_label="Flows: Checkout (sync)",
        terminal="curl -s 'http://127.0.0.1:8000/api/traces/?order_id=<your order id>'",
    ),
    Step(
        "own-request-id",
        "Send a checkout with your own X-Request-ID",
        check_own_request_id,
        solve_own_request_id,
        hints=(
            "Any id of letters, digits and - _ . : (at most 64), e.g. lab2-yourname-1.",
            "It must be a new order: use a new Idempotency-Key too.",
        ),
        link="/traces/",
        link_label="Traces: search by request id",
        terminal="curl -s -i -X POST http://127.0.0.1:8002/api/orders/ -H 'X-Request-ID: lab2-yourname-1' …",
    ),
    Step(
        "saga-spans",
        "A declined card: the saga's steps as spans",
        check_saga_spans,
        solve_saga_spans,
        hints=("Flows page → “Declined card” → Run, then look at its waterfall.",),
        link="/flows/",
        link_label="Flows: Declined card",
        terminal="curl -s 'http://127.0.0.1:8000/api/traces/?order_id=<the declined order id>'",
    ),
]


# --- questions ----------------------------------------------------------------------------


def _recorded_checkout(ctx: LabContext) -> dict:
    order_id = ctx.observed("checkout").get("order_id")
    if order_id is None:
        raise CheckError("pass step 1 (one checkout as a trace) first")
    checkout = checkout_of(ctx, order_id)
    if checkout is None:
        raise CheckError(f"the trace of order #{order_id} is no longer in the collector (it keeps 60 minutes)")
    return checkout


HOP_CHOICES = (
    "order → inventory: POST /internal/reservations/",
    "order → payment: POST /internal/charges/",
    "order → inventory: POST /internal/reservations/<id>/commit/",
)


def _slowest_hop(ctx: LabContext, progress: dict) -> str:
    label, _ = _slowest(_recorded_checkout(ctx))
    if label not in HOP_CHOICES:
        raise CheckError(
            f"your checkout's slowest hop was {label}, which is not one of the choices: "
            "run a plain checkout (step 1) again"
        )
    return label


def _hops(ctx: LabContext, progress: dict) -> int:
    return len(_recorded_checkout(ctx)["hops"])


def _stamped(ctx: LabContext, progress: dict) -> int:
    count = ctx.observed("own-request-id").get("stamped_services")
    if count is None:
        raise CheckError("pass step 2 (your own request id) first")
    return int(count)


def _after_charge(ctx: LabContext, progress: dict) -> str:
    spans = ctx.observed("saga-spans").get("saga_spans")
    if not spans:
        raise CheckError("pass step 3 (a declined card) first")
    names = spans.split(" → ")
    return names[names.index("saga.charge") + 1] if "saga.charge" in names[:-1] else names[-1]


QUESTIONS = [
    Question(
        "hops",
        "In your checkout of step 1, how many HTTP calls did order_service make to other services?",
        _hops,
        explanation="One per saga step: reserve, charge, commit (the reservation answers with the "
        "names and prices, so nothing reads the products first). Each is a client span in "
        "order with the peer's server span under it; a retry would add another.",
    ),
    Question(
        "slowest-hop",
        "Which hop of your checkout of step 1 took longest? (the waterfall's bars, or each client span's duration_ms)",
        _slowest_hop,
        choices=HOP_CHOICES,
        explanation="The answer is read from your own trace: the sum of the client spans of each hop. "
        "Each of them writes: it locks rows and commits a transaction in the peer's database.",
    ),
    Question(
        "stamped",
        "Your own request id of step 2 is on the spans of how many services?",
        _stamped,
        explanation="order received it, and its client sent it on as X-Request-ID to inventory and payment, "
        "which stamped it on their spans and would on any log line. user_service was not "
        "called: the access token is verified locally, with user_service's public key.",
    ),
    Question(
        "after-charge",
        "In the declined checkout of step 3, which saga span started right after saga.charge?",
        _after_charge,
        choices=("saga.commit", "saga.compensate", "saga.reserve"),
        explanation="The charge was refused, so nothing is committed: the saga compensates, releasing the "
        "reservation it made in saga.reserve, and the order ends CANCELLED.",
    ),
]
