"""Lab 9, database failure and fallbacks: its steps, checks, solves and questions (the text is lab.md).

Every figure comes from the lab itself: the database fault from inventory's
``/_lab/faults/``, its health from ``/health/``, its answers from its public
catalog (the ``stale`` field and the ``X-Lab-Stale`` header of a page served
from the last good copy), what it served and refused from its ``/metrics``
(``lab_http_requests_total`` by route and status, compared with the count
recorded when the step before passed), the checkout from order's API (its
history says why the reservation failed), the fallback switch from inventory's
``/_lab/resilience/``.
"""

from __future__ import annotations

import requests

from chassis import parts
from labctl.labs.context import LabContext
from labctl.labs.model import CheckError, Question, SolveError, Step, failed, fixed, passed

DB_DOWN = parts.preset_fault("inventory-db-down")  # the Faults page's preset of that name
# The catalog page the Flows page reads (browse and checkout), then the browsable API's own first page.
CATALOG_PAGES = ({"page_size": 50}, {})
CATALOG_ROUTE = "/api/products/"
RESERVE_ROUTE = "/internal/reservations/"
RESERVE_FAILED = "Inventory unavailable while reserving stock"


# --- what the checks read -------------------------------------------------------------------


def _public(ctx: LabContext, path: str, params: dict | None = None) -> requests.Response:
    """An anonymous GET on inventory, as a browser or the Flows page makes it."""
    try:
        return requests.get(ctx.urls["inventory"] + path, params=params or {}, timeout=10)
    except requests.RequestException as exc:
        raise CheckError(f"inventory did not answer GET {path}: {type(exc).__name__}") from exc


def _body(response: requests.Response) -> dict:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _db_fault(ctx: LabContext) -> dict | None:
    return next((f for f in ctx.faults("inventory") if f.get("kind") == "database" and f.get("mode") == "fail"), None)


def _fallback_on(ctx: LabContext) -> bool:
    return bool(ctx.resilience("inventory")["switches"]["fallback"]["enabled"])


def _served(ctx: LabContext, method: str, route: str, status: int) -> int:
    """How many requests inventory has answered on ``route`` with ``status`` since it started (every worker)."""
    total = ctx.metrics("inventory").total("lab_http_requests_total", method=method, route=route, status=str(status))
    return int(total)


def _since(ctx: LabContext, step_key: str, figure: str) -> int:
    """What ``figure`` counted when ``step_key`` last passed (0 if it has not)."""
    return int(ctx.observed(step_key).get(figure) or 0)


def _available(page: dict, sku: str) -> int | None:
    return next((p.get("available") for p in page.get("results") or [] if p.get("sku") == sku), None)


def _pick(page: dict) -> str:
    """What the Flows page's checkout picks: the active product with the most stock."""
    products = [p for p in page.get("results") or [] if p.get("active", True) and (p.get("available") or 0) > 0]
    if not products:
        raise SolveError("nothing in stock to order: restock a product first")
    return max(products, key=lambda p: p["available"])["sku"]


def _catalog_as_flows(ctx: LabContext) -> dict:
    """Read the catalog page the Flows page reads (which inventory keeps as its last good copy)."""
    response = _public(ctx, CATALOG_ROUTE, CATALOG_PAGES[0])
    if response.status_code != 200:
        raise SolveError(f"inventory's catalog answered {response.status_code}: {response.text[:160]}")
    return _body(response)


# --- 1. an order while all is well -----------------------------------------------------------


def check_healthy_order(ctx: LabContext):
    confirmed = [o for o in ctx.orders_since() if o.get("status") == "CONFIRMED"]
    if not confirmed:
        return failed("No order of yours has been confirmed since you started this lab: run “Checkout (sync)”.")
    order = confirmed[0]
    line = order["lines"][0]
    available = ctx.product(line["sku"])["available"]
    return passed(
        f"Order #{order['id']} is CONFIRMED: {line['quantity']} × {line['sku']}; inventory now holds "
        f"{available} of it. The catalog page read before the order is inventory's last good copy.",
        healthy_order=order["id"],
        sku=line["sku"],
        bought=line["quantity"],
        available_after=available,
    )


def solve_healthy_order(ctx: LabContext) -> None:
    customer = ctx.lab_customer()
    sku = _pick(_catalog_as_flows(ctx))
    response = customer.order(sku)
    if response.status_code not in (200, 201):
        raise SolveError(f"the checkout answered {response.status_code}: {response.text[:200]}")


# --- 2. inventory's database fails ------------------------------------------------------------


def check_db_down(ctx: LabContext):
    fault = _db_fault(ctx)
    if fault is None:
        return failed("inventory has no database fault: on the Faults page apply “Database down on inventory”.")
    status, body = ctx.health("inventory")
    database = (body.get("checks") or {}).get("database") or {}
    if status != 503 or database.get("status") != "down":
        return failed(f"inventory has a database fault but its /health/ answered {status}; check again in a second.")
    sku = ctx.observed("healthy-order").get("sku") or "KB-001"
    page = _public(ctx, f"/api/products/{sku}/")
    code = _body(page).get("code")
    if page.status_code != 503 or code != "database_unavailable":
        return failed(
            f"inventory's product page answered {page.status_code} ({code or page.text[:80]}), not the chassis' "
            "503 database_unavailable: tell the instructor."
        )
    return passed(
        f"inventory's /health/ answers {status} (database: {database.get('error', 'down')}); its product page "
        f"/api/products/{sku}/ answers {page.status_code} {code}: a readable error, no traceback.",
        fault_id=fault["id"],
        inventory_health=status,
        product_page_status=page.status_code,
        error_code=code,
        catalog_served=_served(ctx, "GET", CATALOG_ROUTE, 200),
    )


def solve_db_down(ctx: LabContext) -> None:
    ctx.add_fault("inventory", **DB_DOWN)


# --- 3. the fallback serves the last good copy, marked stale -------------------------------------


def _stale_page(ctx: LabContext) -> tuple[dict, dict, requests.Response] | None:
    """The first catalog page inventory serves from its last good copy now: (params, body, response)."""
    for params in CATALOG_PAGES:
        response = _public(ctx, CATALOG_ROUTE, params)
        body = _body(response)
        if response.status_code == 200 and body.get("stale") is True:
            return params, body, response
    return None


def check_stale_catalog(ctx: LabContext):
    if _db_fault(ctx) is None:
        return failed("inventory's database fault is gone: apply “Database down on inventory” again (step 2).")
    if not _fallback_on(ctx):
        return failed("inventory's fallback is off: tick “Fallback” in inventory's panel on the Resilience page.")
    served = _served(ctx, "GET", CATALOG_ROUTE, 200) - _since(ctx, "db-down", "catalog_served")
    if served <= 0:
        return failed(
            "Nobody has browsed the catalog since the database went down (step 2's check): run “Browse the "
            "catalog” on the Flows page."
        )
    found = _stale_page(ctx)
    if found is None:
        return failed(
            "inventory's catalog answered 503: it holds no good copy of it. A page is copied only when it is "
            "answered while the database works: reset the lab and run step 1 before breaking the database."
        )
    params, body, response = found
    sku = ctx.observed("healthy-order").get("sku", "")
    stale_available = _available(body, sku)
    url = CATALOG_ROUTE + (f"?page_size={params['page_size']}" if params else "")
    return passed(
        f"With its database down, inventory served {served} catalog page(s) from its last good copy: {url} "
        f'answers 200 with "stale": true and X-Lab-Stale: {response.headers.get("X-Lab-Stale")}, '
        f"{body.get('count', 0)} products"
        + (f", {sku} at {stale_available} available" if stale_available is not None else "")
        + ".",
        stale_pages_served=served,
        stale_page=url,
        stale_header=response.headers.get("X-Lab-Stale", ""),
        stale_products=body.get("count", 0),
        stale_available=stale_available if stale_available is not None else "",
        reserve_refused=_served(ctx, "POST", RESERVE_ROUTE, 503),
    )


def solve_stale_catalog(ctx: LabContext) -> None:
    if _public(ctx, CATALOG_ROUTE, CATALOG_PAGES[0]).status_code != 200:
        raise SolveError("inventory's catalog is not served from a copy: do steps 1 and 2 first")


# --- 4. a reservation is never served from the copy -----------------------------------------------


def _refused_checkouts(ctx: LabContext) -> list[dict]:
    since = ctx.passed_at("stale-catalog") or ctx.passed_at("db-down") or ctx.started_at
    found = []
    for order in ctx.orders_since(since):
        notes = [order.get("status_reason") or "", *(h.get("note") or "" for h in order.get("history") or [])]
        if any(RESERVE_FAILED in note for note in notes):
            found.append(order)
    return found


def check_reserve_refused(ctx: LabContext):
    if _db_fault(ctx) is None:
        return failed("inventory's database fault is gone: apply “Database down on inventory” again (step 2).")
    refused = _served(ctx, "POST", RESERVE_ROUTE, 503) - _since(ctx, "stale-catalog", "reserve_refused")
    orders = _refused_checkouts(ctx)
    if refused <= 0 or not orders:
        return failed(
            "No checkout has tried to reserve stock since the catalog was served stale: run “Checkout (sync)” "
            "on the Flows page (with the fallback still on, the flow reads the stale catalog and orders)."
        )
    order = orders[0]
    if order.get("status") == "CONFIRMED":
        return failed(f"Order #{order['id']} was CONFIRMED while inventory's database was down: tell the instructor.")
    pause = next((h for h in reversed(order.get("history") or []) if h.get("step") == "paused"), None)
    return passed(
        f"Inventory refused {refused} reservation request(s) with 503: order #{order['id']} "
        f"({order['lines'][0]['sku']}) reserved nothing and charged nothing — {order.get('status_reason')} "
        f"It is {order['status']}"
        + (f", {pause['note']}" if pause else "")
        + ". No reservation was answered from the copy.",
        refused_order=order["id"],
        refused_order_status=order["status"],
        reserve_503s=refused,
        catalog_refused=_served(ctx, "GET", CATALOG_ROUTE, 503),
    )


def solve_reserve_refused(ctx: LabContext) -> None:
    customer = ctx.lab_customer()
    page = _catalog_as_flows(ctx)  # the stale page: the Flows page's checkout reads it too
    response = customer.order(_pick(page))
    if response.status_code in (200, 201):
        raise SolveError(f"the checkout was confirmed while inventory's database was down: {response.text[:200]}")


# --- 5. the fallback off: browsing fails ------------------------------------------------------------


def check_fallback_off(ctx: LabContext):
    if _db_fault(ctx) is None:
        return failed("inventory's database fault is gone: apply “Database down on inventory” again (step 2).")
    if _fallback_on(ctx):
        return failed("inventory's fallback is still on: untick “Fallback” in its panel on the Resilience page.")
    refused = _served(ctx, "GET", CATALOG_ROUTE, 503) - _since(ctx, "reserve-refused", "catalog_refused")
    if refused <= 0:
        return failed("The fallback is off; now run “Browse the catalog” on the Flows page again.")
    response = _public(ctx, CATALOG_ROUTE, CATALOG_PAGES[0])
    body = _body(response)
    if response.status_code != 503 or body.get("stale"):
        return failed(f"With the fallback off the catalog answered {response.status_code}: tell the instructor.")
    return passed(
        f"With the fallback off, inventory refused {refused} catalog request(s): the page it served stale in step 3 "
        f"now answers {response.status_code} {body.get('code')} — the copy is still there, unused.",
        catalog_503s=refused,
        catalog_status_off=response.status_code,
    )


def solve_fallback_off(ctx: LabContext) -> None:
    ctx.set_switches("inventory", fallback={"enabled": False})
    _public(ctx, CATALOG_ROUTE, CATALOG_PAGES[0])  # the Flows page's browse, which stops there


# --- 6. the defence back and the database back: fresh again ---------------------------------------


def check_recover(ctx: LabContext):
    if _db_fault(ctx) is not None:
        return failed("inventory's database is still down: clear its fault on the Faults page (“Clear all faults”).")
    if not _fallback_on(ctx):
        return failed("Turn inventory's fallback back on (Resilience page) before you check the recovery.")
    status, _ = ctx.health("inventory")
    if status != 200:
        return failed(f"inventory's /health/ answers {status}; check again in a second.")
    response = _public(ctx, CATALOG_ROUTE, CATALOG_PAGES[0])
    body = _body(response)
    if response.status_code != 200 or body.get("stale"):
        return failed(f"inventory's catalog answered {response.status_code} (stale: {body.get('stale')}); try again.")
    sku = ctx.observed("healthy-order").get("sku", "")
    fresh = _available(body, sku)
    stale = ctx.observed("stale-catalog").get("stale_available")
    said = (
        f" {sku}: {fresh} available now; the stale page said {stale}."
        if fresh is not None and stale not in (None, "")
        else ""
    )
    return passed(
        f"inventory is healthy, its fallback on, and its catalog fresh again (no stale marker).{said}",
        inventory_health=status,
        fresh_available=fresh if fresh is not None else "",
    )


def solve_recover(ctx: LabContext) -> None:
    ctx.set_switches("inventory", fallback={"enabled": True})
    ctx.clear_faults("inventory")


STEPS = [
    Step(
        "healthy-order",
        "Buy one item while all is well",
        check_healthy_order,
        solve_healthy_order,
        hints=("Flows page → “Checkout (sync)” → Run: it reads the catalog, then orders the product with most stock.",),
        link="/flows/",
        link_label="Flows: Checkout (sync)",
    ),
    Step(
        "db-down",
        "Break inventory's database",
        check_db_down,
        solve_db_down,
        hints=(
            "Faults page → preset “Database down on inventory” → Apply (it lasts 10 minutes).",
            "The Overview shows inventory degraded: its database check is down.",
        ),
        link="/faults/#preset-inventory-db-down",
        link_label="Faults: Database down on inventory",
        terminal="labctl fault add inventory database --mode fail --ttl 600 && curl -i localhost:8003/health/",
    ),
    Step(
        "stale-catalog",
        "Browse with the fallback on: the last good copy, marked stale",
        check_stale_catalog,
        solve_stale_catalog,
        hints=(
            "Flows page → “Browse the catalog” → Run: the first hop says STALE.",
            'Or open inventory\'s browsable API at /api/products/?page_size=50: X-Lab-Stale: true, "stale": true.',
        ),
        link="/flows/",
        link_label="Flows: Browse the catalog",
        terminal="curl -i 'localhost:8003/api/products/?page_size=50'",
    ),
    Step(
        "reserve-refused",
        "Order during the fault: stock is never served from the copy",
        check_reserve_refused,
        solve_reserve_refused,
        hints=(
            "Flows page → “Checkout (sync)” → Run, once: the order stays PENDING, paused: inventory unavailable.",
            "Two or three more and order's breaker towards inventory opens: then a checkout is refused at once.",
        ),
        link="/flows/",
        link_label="Flows: Checkout (sync)",
    ),
    Step(
        "fallback-off",
        "Turn the fallback off: browsing fails",
        check_fallback_off,
        solve_fallback_off,
        hints=(
            "Resilience page → Inventory's panel → untick “Fallback” → Apply to inventory.",
            "Then Flows page → “Browse the catalog” → Run: it stops while listing products (503).",
        ),
        link="/resilience/#switches-inventory",
        link_label="Resilience: inventory's fallback",
        terminal="labctl resilience inventory --set fallback.enabled=false",
    ),
    Step(
        "recover",
        "The fallback back on, the database back: fresh again",
        check_recover,
        solve_recover,
        hints=(
            "Resilience page → tick inventory's “Fallback” → Apply; Faults page → “Clear all faults”.",
            "Then Flows → “Browse the catalog”: no STALE any more.",
        ),
        link="/faults/",
        link_label="Faults: Clear all faults",
        terminal="labctl resilience inventory --set fallback.enabled=true && labctl fault clear --all",
    ),
]


# --- questions --------------------------------------------------------------------------------


def _overstated(ctx: LabContext, progress: dict) -> int:
    return int(ctx.figure("stale-catalog", "stale_available")) - int(ctx.figure("recover", "fresh_available"))


MAY_SERVE = (
    "a catalog page, marked stale",
    "the stock a reservation is made against",
    "both, as long as the copy is recent",
)

QUESTIONS = [
    Question(
        "overstated",
        "From your own figures: by how many units did the stale catalog page (step 3) overstate the stock of "
        "the product you bought in step 1, against what inventory holds now (step 6)?",
        _overstated,
        explanation="The copy was made when the catalog was read, before your order took its units: a stale page "
        "shows stock that is gone. For browsing that is acceptable, and it is marked so; for a reservation it "
        "would sell units that do not exist.",
    ),
    Question(
        "reserve-503s",
        "How many reservation requests did inventory refuse with 503 during your checkout of step 4?",
        lambda ctx, progress: ctx.figure("reserve-refused", "reserve_503s"),
        explanation="order_service's client retried the reservation (it carries an Idempotency-Key, so a retry "
        "is safe): each attempt reached inventory and was refused, then the saga compensated — it asked "
        "inventory whether anything was held and, as inventory could not answer, paused until it can.",
    ),
    Question(
        "may-serve",
        "While its database is down, what may inventory serve from its last good copy?",
        fixed(MAY_SERVE[0]),
        choices=MAY_SERVE,
        explanation="A read that tolerates being out of date (browsing) may degrade to a copy, marked stale so "
        "the client can say so. A decision that must be true now (these units are yours) must fail loudly "
        "with a 503: the copy cannot know what was sold since it was taken.",
    ),
    Question(
        "health",
        "What did inventory's /health/ answer while its database was down (step 2)?",
        lambda ctx, progress: ctx.figure("db-down", "inventory_health"),
        explanation="/health/ checks each dependency and answers 503 when one is down, naming it (database: "
        "down): the Overview turns inventory degraded, and a load balancer would stop sending it traffic.",
    ),
]
