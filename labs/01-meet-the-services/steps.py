"""Lab 1, meet the services: its steps, checks, solves and questions (the text is lab.md).

What each check observes:

- the API docs: every service's own ``/metrics`` counts the requests its
  ``/api/docs/`` and ``/api/schema/`` served; the steady-state check records
  those counters, and the step passes when each service has served more since;
- the database boundary: no service API shows MySQL's grants, so this check
  connects to MySQL *as order_service's own database user* (the
  ``DATABASE_URL`` of ``var/env/order.env``, or ``LAB_ORDER_DATABASE_URL``)
  and only reads: that user's grants, and the server's count of refused
  accesses (``Access_denied_errors``), which must have grown since the
  steady-state check recorded it; then it asks for inventory's table itself to
  record the error MySQL answers;
- the order: order_service's, inventory's and payment_service's own APIs, read
  as the staff lab admin (the order, its reservation in the product's stock
  ledger, its charge).
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlparse

import requests

from labctl.labs import checks
from labctl.labs.context import SERVICES, LabContext
from labctl.labs.model import CheckError, Question, SolveError, Step, failed, fixed, passed
from labctl.provision import read_env_file

ROOT = Path(os.environ.get("LAB_ROOT") or Path(__file__).resolve().parents[2])
DOCS_ROUTES = ("/api/docs/", "/api/schema/")
# inventory_service's product table, in its own schema: what order's user must not read.
FOREIGN_TABLE = "lab_inventory.catalog_product"
FOREIGN_QUERY = f"SELECT sku, name FROM {FOREIGN_TABLE} LIMIT 3"
TABLE_ACCESS_DENIED = 1142


# --- order_service's database user --------------------------------------------------------


def order_database_url() -> str:
    return os.environ.get("LAB_ORDER_DATABASE_URL") or read_env_file(ROOT / "var" / "env" / "order.env").get(
        "DATABASE_URL", ""
    )


def _connect():
    """A connection as order_service's MySQL user, to no schema in particular; None on SQLite."""
    url = urlparse(order_database_url())
    if not url.scheme.startswith("mysql"):
        return None
    try:
        import MySQLdb
    except ImportError as exc:
        raise CheckError("the MySQL driver (mysqlclient) is not installed where the lab engine runs") from exc
    try:
        return MySQLdb.connect(
            host=url.hostname or "127.0.0.1",
            port=url.port or 3306,
            user=unquote(url.username or ""),
            passwd=unquote(url.password or ""),
            connect_timeout=5,
        )
    except MySQLdb.Error as exc:
        raise CheckError(f"MySQL refused order_service's own user: {exc.args}") from exc


def _access_denied(cursor) -> int:
    cursor.execute("SHOW GLOBAL STATUS LIKE 'Access_denied_errors'")
    row = cursor.fetchone()
    return int(row[1]) if row else 0


def _read_foreign_table(cursor) -> tuple[int, str]:
    """(error number, message) MySQL answers order's user asking for inventory's table; (0, "") if it answers."""
    import MySQLdb

    try:
        cursor.execute(FOREIGN_QUERY)
        cursor.fetchall()
    except MySQLdb.Error as exc:
        return int(exc.args[0]), str(exc.args[1]) if len(exc.args) > 1 else ""
    return 0, ""


# --- 0. steady state, with the counters the steps compare against -------------------------


def _docs_served(ctx: LabContext, service: str) -> int:
    metrics = ctx.metrics(service)
    return int(
        sum(metrics.total("lab_http_requests_total", method="GET", route=route, status="200") for route in DOCS_ROUTES)
    )


def check_steady(ctx: LabContext):
    outcome = checks.steady_state(ctx)
    if not outcome.passed:
        return outcome
    observed = dict(outcome.observed)
    for service in SERVICES:
        observed[f"{service}_docs_served"] = _docs_served(ctx, service)
    connection = _connect()
    if connection is not None:
        try:
            observed["mysql_access_denied"] = _access_denied(connection.cursor())
        finally:
            connection.close()
    return passed(
        outcome.message + " (Counters recorded: the API docs each service served, and the refusals "
        "MySQL counted so far.)",
        **observed,
    )


STEADY = Step(
    key="steady-state",
    title="Steady state: the lab is healthy and at its defaults",
    check=check_steady,
    solve=lambda ctx: ctx.restore_defaults(),
    hints=checks.STEADY.hints,
    link="/",
    link_label="Overview",
    terminal="labctl status && labctl fault list",
)


def _baseline(ctx: LabContext, name: str) -> int:
    steady = ctx.observed("steady-state")
    if name not in steady:
        raise CheckError(
            "the steady-state check has not recorded its counters yet: run it first (step 0, or “Reset this lab”)"
        )
    return int(steady[name])


# --- 1. the four services and their API docs -----------------------------------------------


def check_browse(ctx: LabContext):
    served, missing = {}, []
    for service in SERVICES:
        served[service] = _docs_served(ctx, service) - _baseline(ctx, f"{service}_docs_served")
        if served[service] <= 0:
            missing.append(f"{service} ({ctx.urls[service]}/api/docs/)")
    if missing:
        return failed("Not every service has served its API docs since you started: open " + ", ".join(missing) + ".")
    return passed(
        "Each of the four services served its own API docs: " + ", ".join(f"{s} {n}×" for s, n in served.items()) + ".",
        **{f"{s}_docs": n for s, n in served.items()},
    )


def solve_browse(ctx: LabContext) -> None:
    for service in SERVICES:
        for route in DOCS_ROUTES:
            try:
                response = requests.get(ctx.urls[service] + route, timeout=10)
            except requests.RequestException as exc:
                raise SolveError(f"{service} did not answer GET {route}: {type(exc).__name__}") from exc
            if response.status_code != 200:
                raise SolveError(f"{service} answered {response.status_code} to GET {route}")


# --- 2. the database boundary --------------------------------------------------------------


def check_boundary(ctx: LabContext):
    connection = _connect()
    if connection is None:
        return failed(
            "This lab runs on SQLite (one file per service): there are no MySQL users to refuse anything. "
            "Start it on MySQL (make up with MariaDB running) to see the boundary."
        )
    try:
        cursor = connection.cursor()
        cursor.execute("SELECT CURRENT_USER()")
        user = cursor.fetchone()[0]
        cursor.execute("SHOW GRANTS")
        grants = [row[0] for row in cursor.fetchall()]
        refused = _access_denied(cursor) - _baseline(ctx, "mysql_access_denied")
        if refused <= 0:
            return failed(
                f"MySQL has refused nobody since you started: connect as order_service's user ({user}) "
                f"and run `{FOREIGN_QUERY};`."
            )
        schemas = sorted(
            {
                g.split(" ON ", 1)[1].split(".", 1)[0].strip("`").replace("\\_", "_")
                for g in grants
                if " ON " in g and not g.startswith("GRANT USAGE ON *.*")
            }
        )
        if any("inventory" in s for s in schemas):
            return failed(f"{user} holds a grant on inventory's schema ({', '.join(schemas)}): the boundary is open.")
        code, message = _read_foreign_table(cursor)
    finally:
        connection.close()
    if code != TABLE_ACCESS_DENIED:
        return failed(
            f"MySQL let {user} read {FOREIGN_TABLE}"
            + (f" (error {code}: {message})" if code else "")
            + ": the boundary is not enforced."
        )
    return passed(
        f"MySQL refused order_service's user {user} inventory's table: ERROR {code} “{message}”. "
        f"It may use only {', '.join(schemas)}.",
        mysql_user=user,
        granted=", ".join(schemas),
        error_code=code,
        refusals_since_start=refused,
    )


def solve_boundary(ctx: LabContext) -> None:
    connection = _connect()
    if connection is None:
        raise SolveError("this lab runs on SQLite: there is no MySQL user to be refused")
    try:
        code, message = _read_foreign_table(connection.cursor())
    finally:
        connection.close()
    if code != TABLE_ACCESS_DENIED:
        raise SolveError(f"order's user was not refused {FOREIGN_TABLE} (error {code} {message})")


# --- 3. one order, three services' rows ----------------------------------------------------


def _charge_of(ctx: LabContext, order_id: int) -> dict | None:
    """The order's captured charge, from payment_service's staff list (newest first)."""
    for page in range(1, 21):
        body = ctx.staff_json("payment", "/api/payments/", page=page, page_size=100)
        for charge in body.get("results", []):
            if str(charge.get("order_id")) == str(order_id) and charge.get("status") == "CAPTURED":
                return charge
        if not body.get("next"):
            return None
    return None


def _reservation_of(ctx: LabContext, order: dict) -> dict | None:
    """The order's reservation in inventory's stock ledger: its RESERVE and COMMIT movements."""
    sku = order["lines"][0]["sku"]
    kinds, reservation = set(), None
    for page in range(1, 11):
        body = ctx.staff_json("inventory", f"/api/products/{sku}/movements/", page=page, page_size=100)
        for movement in body.get("results", []):
            if str(movement.get("order_id")) == str(order["id"]):
                kinds.add(movement["kind"])
                reservation = movement.get("reservation_id")
        if not body.get("next"):
            break
    if reservation is None:
        return None
    return {"id": reservation, "sku": sku, "kinds": sorted(kinds)}


def check_order(ctx: LabContext):
    orders = ctx.orders_since()
    confirmed = [o for o in orders if o.get("status") in ("CONFIRMED", "SHIPPED", "DELIVERED")]
    if not confirmed:
        seen = ", ".join(f"#{o['id']} {o['status']}" for o in orders[:5])
        return failed(
            "No order placed since you started this lab has been confirmed yet"
            + (f" (yours: {seen})" if seen else "")
            + ": run “Checkout (sync)” on the Flows page."
        )
    order = confirmed[0]
    reservation = _reservation_of(ctx, order)
    if reservation is None or "COMMIT" not in reservation["kinds"]:
        return failed(
            f"Order #{order['id']} is {order['status']} but inventory has no committed reservation for "
            "it yet; check again in a second."
        )
    charge = _charge_of(ctx, order["id"])
    if charge is None:
        return failed(
            f"Order #{order['id']} is {order['status']} but payment_service shows no captured charge "
            "for it yet; check again in a second."
        )
    return passed(
        f"Order #{order['id']} ({order['total_cents'] / 100:.2f} {order['currency']}) lives in three "
        f"databases: the order at order_service, reservation {reservation['id']} of {reservation['sku']} "
        f"at inventory_service, charge {charge['id']} of {charge['amount_cents'] / 100:.2f} at "
        "payment_service.",
        order_id=order["id"],
        total_cents=order["total_cents"],
        sku=reservation["sku"],
        reservation_id=reservation["id"],
        charge_id=charge["id"],
        charged_cents=charge["amount_cents"],
        customer_id=order["customer_id"],
    )


def solve_order(ctx: LabContext) -> None:
    customer = ctx.new_customer()
    response = customer.order(ctx.in_stock_sku(2), 2)
    if response.status_code not in (200, 201):
        raise SolveError(f"order_service answered {response.status_code}: {response.text[:200]}")


STEPS = [
    Step(
        "browse",
        "Open the four services' API docs",
        check_browse,
        solve_browse,
        hints=(
            "The Overview's service map links each service's “docs”; or open http://127.0.0.1:8001/api/docs/, "
            ":8002, :8003 and :8004 in turn.",
        ),
        link="/",
        link_label="Overview: each service's docs",
        terminal='for port in 8001 8002 8003 8004; do curl -s -o /dev/null -w "%{http_code} " '
        "http://127.0.0.1:$port/api/schema/; done",
    ),
    Step(
        "boundary",
        "Be refused by MySQL: order's user reads inventory's table",
        check_boundary,
        solve_boundary,
        hints=(
            "The password is in var/env/order.env (DATABASE_URL=mysql://lab_orders:PASSWORD@127.0.0.1:3306/"
            "lab_orders).",
            f"In the mysql client: {FOREIGN_QUERY}; — the answer is an ERROR, that is the point.",
        ),
        link="/data/",
        link_label="Data: each service's schema",
        terminal=f'mysql -h 127.0.0.1 -u lab_orders -p lab_orders -e "{FOREIGN_QUERY}"',
    ),
    Step(
        "place-order",
        "Place an order and find its rows in three services",
        check_order,
        solve_order,
        hints=(
            "Flows page → “Checkout (sync)” → Run (log in as admin@lab.local first).",
            "Then the Data page: the order under order_service, its charge under payment_service.",
        ),
        link="/flows/",
        link_label="Flows: Checkout (sync)",
        terminal="see “With curl” in this step",
    ),
]


# --- questions -----------------------------------------------------------------------------


def _charged_eur(ctx: LabContext, progress: dict) -> float:
    order_id = ctx.observed("place-order").get("order_id")
    if order_id is None:
        raise CheckError("pass step 3 (place an order) first")
    charge = _charge_of(ctx, order_id)
    if charge is None:
        raise CheckError(f"payment_service shows no captured charge for order #{order_id} any more")
    return round(charge["amount_cents"] / 100, 2)


def _error_code(ctx: LabContext, progress: dict) -> int:
    code = ctx.observed("boundary").get("error_code")
    if code is None:
        raise CheckError("pass step 2 (be refused by MySQL) first")
    return int(code)


QUESTIONS = [
    Question(
        "charged",
        "How much did payment_service capture for the order of step 3, in euros? "
        "(Data page → payment_service → Payments, the row of your order id)",
        _charged_eur,
        tolerance=0.005,
        unit="EUR",
        explanation="The charge is a row in payment's own database (lab_payments): order_service only "
        "holds its outcome in the order's history, it never reads payment's tables.",
    ),
    Question(
        "error-code",
        "What error number did MySQL answer when order's user asked for inventory's table (step 2)?",
        _error_code,
        explanation="1142 is MySQL's “command denied … for table”: the server checks the grants of the user "
        "on every statement, so order's code could not read inventory's tables even by mistake.",
    ),
    Question(
        "reservation-owner",
        "Which service's database holds the stock reservation of your order?",
        fixed("inventory_service"),
        choices=("user_service", "order_service", "inventory_service", "payment_service"),
        explanation="Stock and reservations belong to inventory_service (lab_inventory). order_service asks "
        "for a reservation over HTTP (POST /internal/reservations/) and keeps only the answer.",
    ),
    Question(
        "how-order-reads",
        "At checkout, order_service needs each product's name and price. How does it get them?",
        fixed("it asks inventory_service's API"),
        choices=(
            "it reads lab_inventory's tables",
            "it asks inventory_service's API",
            "the browser sends them with the order",
        ),
        explanation="It calls GET /api/products/ on inventory_service (you will see that hop in lab 2's trace) "
        "and copies name and price onto its order lines: reading lab_inventory directly is "
        "exactly what MySQL refused in step 2; prices from the browser could not be trusted.",
    ),
]
