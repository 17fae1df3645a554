"""The checkout saga across four real services on their own databases."""

import concurrent.futures
import uuid

from .conftest import stock_of


def _payments_of(api, order_id):
    response = api.get("payment", "/api/payments/", params={"page_size": 100})
    assert response.status_code == 200, response.text
    return [p for p in response.json()["results"] if str(p["order_id"]) == str(order_id)]


def test_happy_path_from_registration_to_confirmed_order(customer, product, anonymous):
    """Ensure register → login → card → browse → order ends CONFIRMED with stock, payment and history consistent."""
    sku = product(stock=25, price_cents=1250)
    card = customer.add_card()

    catalog = anonymous.get("inventory", "/api/products/", params={"search": sku})
    assert catalog.status_code == 200
    assert [p["sku"] for p in catalog.json()["results"]] == [sku]
    before = stock_of(anonymous, sku)

    response = customer.order([{"sku": sku, "quantity": 3}], card)
    assert response.status_code == 201, response.text
    order = response.json()
    assert order["status"] == "CONFIRMED", order
    assert order["total_cents"] == 3 * 1250

    after = stock_of(anonymous, sku)
    assert after["available"] == before["available"] - 3
    assert after["sold"] == before["sold"] + 3
    assert after["reserved"] == before["reserved"]

    payments = _payments_of(customer, order["id"])
    assert len(payments) == 1
    assert payments[0]["status"] == "CAPTURED" and payments[0]["amount_cents"] == 3 * 1250

    detail = customer.get("order", f"/api/orders/{order['id']}/").json()
    notes = " | ".join(f"{e['status']}:{e.get('step', '')}:{e.get('note', '')}" for e in detail["history"]).lower()
    for word in ("received", "reserved", "captured", "committed", "confirmed"):
        assert word in notes, notes
    assert detail["history"][-1]["status"] == "CONFIRMED"


def test_declined_card_cancels_and_returns_stock(customer, product, anonymous):
    """Ensure a declined card ends CANCELLED with a reason, stock back, and no net charge."""
    sku = product(stock=8)
    card = customer.add_card("4000000000000002")
    before = stock_of(anonymous, sku)

    order = customer.order([{"sku": sku, "quantity": 2}], card).json()
    assert order["status"] == "CANCELLED"
    assert "declined" in order["status_reason"].lower()

    after = stock_of(anonymous, sku)
    assert (after["available"], after["reserved"], after["sold"]) == (
        before["available"],
        before["reserved"],
        before["sold"],
    )
    captured = [p for p in _payments_of(customer, order["id"]) if p["status"] == "CAPTURED"]
    assert sum(p["amount_cents"] - p["refunded_cents"] for p in captured) == 0


def test_insufficient_funds_card_cancels(customer, product):
    """Ensure the insufficient-funds test card ends CANCELLED with that reason."""
    order = customer.order([{"sku": product(stock=5), "quantity": 1}], customer.add_card("4000000000009995")).json()
    assert order["status"] == "CANCELLED"
    assert "insufficient" in order["status_reason"].lower()


def test_same_idempotency_key_twice_makes_one_order_and_one_charge(customer, product):
    """Ensure a replayed request returns the first order and charges once."""
    sku, card, key = product(stock=10), customer.add_card(), f"it-replay-{uuid.uuid4().hex}"
    first = customer.order([{"sku": sku, "quantity": 1}], card, key=key)
    second = customer.order([{"sku": sku, "quantity": 1}], card, key=key)
    assert first.status_code == 201 and second.status_code == 200
    assert first.json()["id"] == second.json()["id"]
    assert len(_payments_of(customer, first.json()["id"])) == 1

    conflict = customer.order([{"sku": sku, "quantity": 2}], card, key=key)
    assert conflict.status_code == 409
    assert conflict.json()["code"] == "idempotency_conflict"


def test_same_idempotency_key_concurrently_makes_one_order(customer, product, anonymous):
    """Ensure eight simultaneous submissions with one key create one order and one charge."""
    sku, card, key = product(stock=10), customer.add_card(), f"it-race-{uuid.uuid4().hex}"
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: customer.order([{"sku": sku, "quantity": 1}], card, key=key), range(8)))
    # One request creates the order (201); the seven others replay it (200, Idempotent-Replayed).
    assert sorted(a.status_code for a in answers) == [200] * 7 + [201], [(a.status_code, a.text) for a in answers]
    assert all(a.headers.get("Idempotent-Replayed") == "true" for a in answers if a.status_code == 200)
    ids = {a.json()["id"] for a in answers}
    assert len(ids) == 1
    orders = customer.get("order", "/api/orders/").json()["results"]
    assert [o["id"] for o in orders].count(ids.pop()) == 1
    assert stock_of(anonymous, sku)["available"] == 9
    assert (
        len([p for p in customer.get("payment", "/api/payments/").json()["results"] if p["status"] == "CAPTURED"]) == 1
    )


def test_thirty_concurrent_orders_for_ten_items_never_oversell(new_customer, product, anonymous):
    """Ensure 30 customers racing for 10 units give exactly 10 CONFIRMED orders and stock 0."""
    sku = product(stock=10)
    customers = [new_customer(f"Racer {i}") for i in range(30)]
    cards = [c.add_card() for c in customers]

    def buy(i):
        return customers[i].order([{"sku": sku, "quantity": 1}], cards[i])

    with concurrent.futures.ThreadPoolExecutor(30) as pool:
        answers = list(pool.map(buy, range(30)))
    statuses = [a.json()["status"] for a in answers]
    assert all(a.status_code == 201 for a in answers), [a.text for a in answers if a.status_code != 201]
    assert statuses.count("CONFIRMED") == 10, statuses
    assert statuses.count("CANCELLED") == 20
    stock = stock_of(anonymous, sku)
    assert (stock["available"], stock["reserved"], stock["sold"]) == (0, 0, 10)
    charged = sum(
        len([p for p in _payments_of(c, a.json()["id"]) if p["status"] == "CAPTURED" and p["refunded_cents"] == 0])
        for c, a in zip(customers, answers, strict=True)
    )
    assert charged == 10


def test_customer_cancels_confirmed_order_refund_and_restock(customer, product, anonymous):
    """Ensure cancelling a CONFIRMED order refunds it in full and puts the stock back."""
    sku = product(stock=6, price_cents=700)
    order = customer.order([{"sku": sku, "quantity": 2}], customer.add_card()).json()
    assert order["status"] == "CONFIRMED"
    response = customer.post("order", f"/api/orders/{order['id']}/cancel/")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "CANCELLED"
    assert stock_of(anonymous, sku)["available"] == 6
    [payment] = _payments_of(customer, order["id"])
    assert payment["refunded_cents"] == 1400
    again = customer.post("order", f"/api/orders/{order['id']}/cancel/")
    assert again.status_code == 409
