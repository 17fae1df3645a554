"""What one synchronous checkout costs across the real services: peer calls and SQL statements (issue 11).

Read from each service's own ``/metrics``: ``lab_http_requests_total`` on the routes a
checkout reaches, and ``lab_db_queries_total`` (the statements each request ran, by route).
"""

from .conftest_lab import metric_total

ORDERS = ("order", "/api/orders/")
PRODUCTS = ("inventory", "/api/products/")
RESERVE = ("inventory", "/internal/reservations/")
COMMIT = ("inventory", "/internal/reservations/<uuid:reservation_id>/commit/")
CHARGE = ("payment", "/internal/charges/")
CHECKOUT_ROUTES = (ORDERS, RESERVE, COMMIT, CHARGE)

# order 9, inventory 5 + 3, payment 4: each service's tests/test_query_budget.py says which.
STATEMENTS_PER_CHECKOUT = 21
# A request served on a database connection opened for it also runs the connection's setup
# (the session's isolation level, the server's version and modes): 2 statements per service.
CONNECTION_SETUP = 2
CHECKOUTS = 6


def _snapshot(lab_admin) -> dict:
    texts = {service: lab_admin.metrics(service) for service in ("order", "inventory", "payment")}
    return {
        (service, route): (
            metric_total(texts[service], "lab_http_requests_total", route=route),
            metric_total(texts[service], "lab_db_queries_total", route=route),
        )
        for service, route in (*CHECKOUT_ROUTES, PRODUCTS)
    }


def test_one_checkout_makes_three_peer_calls_and_its_budget_of_statements(lab_admin, customer, product):
    """Ensure a sync checkout reaches inventory twice (reserve, commit; no product lookup) and payment once,
    and the three services run 21 SQL statements for it in all (plus the setup of a new database connection)."""
    sku = product(stock=10 * CHECKOUTS, price_cents=1250)
    card = customer.add_card()
    per_checkout = []
    for _ in range(CHECKOUTS):
        before = _snapshot(lab_admin)
        response = customer.order([{"sku": sku, "quantity": 2}], card)
        after = _snapshot(lab_admin)

        assert response.status_code == 201 and response.json()["status"] == "CONFIRMED", response.text
        requests = {key: after[key][0] - before[key][0] for key in after}
        statements = {key: after[key][1] - before[key][1] for key in after}
        assert requests == {ORDERS: 1, RESERVE: 1, COMMIT: 1, CHARGE: 1, PRODUCTS: 0}, requests
        per_checkout.append((sum(statements[key] for key in CHECKOUT_ROUTES), statements))

    totals = [total for total, _ in per_checkout]
    # Once the services' connections are open (the steady state of a load run), a checkout costs its budget.
    assert min(totals) == STATEMENTS_PER_CHECKOUT, per_checkout
    assert max(totals) <= STATEMENTS_PER_CHECKOUT + 3 * CONNECTION_SETUP, per_checkout
