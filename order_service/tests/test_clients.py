"""The peer clients against a tiny real HTTP server: paths, headers, bodies, and how answers map."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from chassis.auth import verify
from chassis.client import PeerUnavailable
from chassis.requestid import bind_request_id
from orders.clients import PeerRefused, inventory, payment

pytestmark = pytest.mark.real_clients

RESERVATION = {
    "id": 41,
    "order_id": 7,
    "status": "HELD",
    "expires_at": "2030-01-01T00:00:00Z",
    "total_cents": 20300,
    "lines": [
        {"sku": "KB-001", "name": "Mechanical keyboard", "quantity": 2, "unit_price_cents": 8900, "currency": "EUR"},
        {"sku": "MS-002", "name": "Wireless mouse", "quantity": 1, "unit_price_cents": 2500, "currency": "EUR"},
    ],
}


class FakePeerServer:
    """Answers scripted per ``"METHOD /path/"``, and remembers every request it got."""

    def __init__(self):
        self.answers: dict[str, list[tuple[int, object]]] = {}
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                url = urlsplit(self.path)
                server.requests.append(
                    {
                        "method": self.command,
                        "path": url.path,
                        "query": parse_qs(url.query),
                        "headers": dict(self.headers),
                        "body": json.loads(raw) if raw else None,
                    }
                )
                script = server.answers.get(f"{self.command} {url.path}") or [(404, {"code": "not_found"})]
                status, body = script.pop(0) if len(script) > 1 else script[0]
                payload = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _serve

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def answer(self, route: str, *answers: tuple[int, object]) -> None:
        self.answers[route] = list(answers)


@pytest.fixture
def peer(settings):
    server = FakePeerServer()
    server.thread.start()
    settings.CHASSIS = {
        **settings.CHASSIS,
        "PEERS": {**settings.CHASSIS["PEERS"], "inventory": server.url, "payment": server.url},
        "RETRY_ATTEMPTS": 2,
        "RETRY_BACKOFF": 0.0,
        "READ_TIMEOUT": 2.0,
    }
    _reset_breakers()
    yield server
    _reset_breakers()
    server.httpd.shutdown()
    server.httpd.server_close()


def _reset_breakers():
    """Close the peers' circuit breakers (shared in Redis) so one test's failures do not trip the next."""
    try:
        from chassis.lab import resilience
    except ImportError:  # a chassis without breakers
        return
    resilience.switches_reset()
    resilience.breakers_reset(["inventory", "payment"])


def assert_service_call(request, *, audience: str):
    """The call carries a request id and a fresh service token naming order as the caller."""
    assert request["headers"]["X-Request-ID"]
    scheme, token = request["headers"]["Authorization"].split()
    claims = verify(token)
    assert scheme == "Bearer"
    assert (claims["iss"], claims["typ"], claims["aud"]) == ("order", "service", audience)


def test_products_lookup_asks_for_all_skus_in_one_call(peer):
    """Ensure the lookup is one GET with the skus comma-joined, and reads the paginated answer."""
    peer.answer(
        "GET /api/products/",
        (
            200,
            {
                "count": 1,
                "next": None,
                "previous": None,
                "results": [
                    {
                        "sku": "KB-001",
                        "name": "Mechanical keyboard",
                        "description": "",
                        "price_cents": 8900,
                        "currency": "EUR",
                        "active": True,
                        "available": 10,
                    },
                ],
            },
        ),
    )

    products = inventory.inventory_products_lookup(skus=["KB-001", "NOPE-1"])

    assert list(products) == ["KB-001"]
    assert products["KB-001"].price_cents == 8900 and products["KB-001"].active
    [request] = peer.requests
    assert request["query"]["sku"] == ["KB-001,NOPE-1"]
    assert_service_call(request, audience="inventory")


def test_reserve_sends_the_key_and_reads_the_reservation(peer):
    """Ensure reserve POSTs the contract body with its Idempotency-Key, and forwards the current request id."""
    peer.answer("POST /internal/reservations/", (201, RESERVATION))
    token = bind_request_id("req-from-the-customer")
    try:
        reservation = inventory.inventory_reserve(
            order_id=7,
            lines=[{"sku": "KB-001", "quantity": 2}, {"sku": "MS-002", "quantity": 1}],
            idempotency_key="order-7-reserve",
            ttl_seconds=600,
        )
    finally:
        from chassis.requestid import _current

        _current.reset(token)

    assert reservation.id == "41" and reservation.total_cents == 20300 and reservation.currency == "EUR"
    assert [(line.sku, line.unit_price_cents) for line in reservation.lines] == [("KB-001", 8900), ("MS-002", 2500)]
    [request] = peer.requests
    assert request["headers"]["Idempotency-Key"] == "order-7-reserve"
    assert request["headers"]["X-Request-ID"] == "req-from-the-customer"
    assert request["body"] == {
        "order_id": 7,
        "idempotency_key": "order-7-reserve",
        "ttl_seconds": 600,
        "lines": [{"sku": "KB-001", "quantity": 2}, {"sku": "MS-002", "quantity": 1}],
    }
    assert_service_call(request, audience="inventory")


@pytest.mark.parametrize(
    ("lines_field", "described"),
    [
        ([{"sku": "KB-001", "requested": 5, "available": 2}], "Not enough stock for KB-001 (2 available)"),
        (["KB-001: only 2 available, 5 requested"], "Not enough stock for KB-001 (2 available)"),
        (["KB-001"], "Not enough stock for KB-001"),
    ],
)
def test_insufficient_stock_is_read_from_the_fields(peer, lines_field, described):
    """Ensure a 409 insufficient_stock becomes InsufficientStock naming the skus, whatever shape fields.lines has."""
    peer.answer(
        "POST /internal/reservations/",
        (
            409,
            {
                "code": "insufficient_stock",
                "message": "Not enough stock.",
                "fields": {"lines": lines_field},
                "request_id": "x",
            },
        ),
    )

    with pytest.raises(inventory.InsufficientStock) as caught:
        inventory.inventory_reserve(order_id=7, lines=[{"sku": "KB-001", "quantity": 5}], idempotency_key="order-7-r")

    assert caught.value.describe() == described


def test_other_refusals_become_peer_refused(peer):
    """Ensure a 400 from inventory becomes PeerRefused (LinesRefused) with the peer's code and message."""
    peer.answer(
        "POST /internal/reservations/", (400, {"code": "invalid", "message": "Unknown sku NOPE.", "request_id": "x"})
    )

    with pytest.raises(PeerRefused) as caught:
        inventory.inventory_reserve(order_id=7, lines=[{"sku": "NOPE", "quantity": 1}], idempotency_key="order-7-r")

    assert (caught.value.status, caught.value.code, caught.value.message) == (400, "invalid", "Unknown sku NOPE.")


def test_unknown_skus_become_lines_refused_naming_each(peer):
    """Ensure a 400 unknown_sku (the real inventory's answer) is LinesRefused with one message per sku it names."""
    body = {
        "code": "unknown_sku",
        "message": "Unknown or inactive sku: NOPE-1, OLD-999.",
        "fields": {"lines": ["NOPE-1: no active product has this sku.", "OLD-999: no active product has this sku."]},
        "skus": ["NOPE-1", "OLD-999"],
        "request_id": "x",
    }
    peer.answer("POST /internal/reservations/", (400, body))

    with pytest.raises(inventory.LinesRefused) as caught:
        inventory.inventory_reserve(order_id=7, lines=[{"sku": "NOPE-1", "quantity": 1}], idempotency_key="order-7-r")

    assert caught.value.messages == ["Unknown or inactive sku: NOPE-1.", "Unknown or inactive sku: OLD-999."]
    assert (caught.value.status, caught.value.code) == (400, "unknown_sku")


def test_commit_and_release_post_to_the_reservation(peer):
    """Ensure commit and release POST to their paths, retry-safe with a key of their own."""
    peer.answer("POST /internal/reservations/41/commit/", (200, {**RESERVATION, "status": "COMMITTED"}))
    peer.answer("POST /internal/reservations/41/release/", (200, {**RESERVATION, "status": "RETURNED"}))

    assert inventory.inventory_commit(reservation_id="41").status == "COMMITTED"
    assert inventory.inventory_release(reservation_id="41").status == "RETURNED"
    assert [r["path"] for r in peer.requests] == [
        "/internal/reservations/41/commit/",
        "/internal/reservations/41/release/",
    ]
    assert peer.requests[0]["headers"]["Idempotency-Key"] == "reservation-41-commit"


def test_a_peer_that_keeps_failing_raises_peer_unavailable_after_retries(peer):
    """Ensure 503 answers are retried (the call has a key) and end as PeerUnavailable."""
    peer.answer("POST /internal/reservations/41/commit/", (503, {"code": "outage"}))

    with pytest.raises(PeerUnavailable):
        inventory.inventory_commit(reservation_id="41")

    assert len(peer.requests) == 2


def test_a_transient_failure_is_retried_to_success(peer):
    """Ensure one 503 then a 201 gives the reservation, in two attempts with the same key."""
    peer.answer("POST /internal/reservations/", (503, {"code": "outage"}), (201, RESERVATION))

    reservation = inventory.inventory_reserve(
        order_id=7, lines=[{"sku": "KB-001", "quantity": 2}], idempotency_key="order-7-reserve"
    )

    assert reservation.id == "41"
    assert [r["headers"]["Idempotency-Key"] for r in peer.requests] == ["order-7-reserve", "order-7-reserve"]


def test_an_unreadable_success_is_an_unknown_outcome(peer):
    """Ensure a 201 whose body is not a reservation raises PeerUnavailable (it may have been acted on)."""
    peer.answer("POST /internal/reservations/", (201, "<html>proxy page</html>"))

    with pytest.raises(PeerUnavailable):
        inventory.inventory_reserve(order_id=7, lines=[{"sku": "KB-001", "quantity": 1}], idempotency_key="order-7-r")


def test_an_unreachable_peer_raises_peer_unavailable(settings):
    """Ensure a peer with nothing listening raises PeerUnavailable, not a requests error."""
    settings.CHASSIS = {
        **settings.CHASSIS,
        "PEERS": {**settings.CHASSIS["PEERS"], "payment": "http://127.0.0.1:9"},
        "RETRY_ATTEMPTS": 1,
    }
    _reset_breakers()

    with pytest.raises(PeerUnavailable):
        payment.payment_charges_for_order(order_id=7)
    _reset_breakers()


def test_charge_sends_the_contract_body_and_key(peer):
    """Ensure a charge POSTs order, customer, method, amount and currency with its Idempotency-Key."""
    peer.answer("POST /internal/charges/", (201, {"id": "ch_9", "status": "CAPTURED", "amount_cents": 20300}))

    charge = payment.payment_charge(
        order_id=7,
        customer_id=1001,
        payment_method="pm_x",
        amount_cents=20300,
        currency="EUR",
        idempotency_key="order-7-charge",
    )

    assert (charge.id, charge.captured, charge.amount_cents) == ("ch_9", True, 20300)
    [request] = peer.requests
    assert request["body"] == {
        "order_id": 7,
        "customer_id": 1001,
        "payment_method": "pm_x",
        "amount_cents": 20300,
        "currency": "EUR",
    }
    assert request["headers"]["Idempotency-Key"] == "order-7-charge"
    assert_service_call(request, audience="payment")


@pytest.mark.parametrize("code", ["card_declined", "insufficient_funds"])
def test_a_402_is_a_declined_card(peer, code):
    """Ensure a 402 becomes CardDeclined carrying payment's code."""
    peer.answer("POST /internal/charges/", (402, {"code": code, "message": "Declined.", "request_id": "x"}))

    with pytest.raises(payment.CardDeclined) as caught:
        payment.payment_charge(
            order_id=7,
            customer_id=1,
            payment_method="pm_x",
            amount_cents=1,
            currency="EUR",
            idempotency_key="order-7-charge",
        )

    assert caught.value.code == code


def test_an_idempotency_conflict_is_a_refusal(peer):
    """Ensure payment's 409 idempotency_conflict becomes PeerRefused, not a decline."""
    peer.answer("POST /internal/charges/", (409, {"code": "idempotency_conflict", "message": "Reused key."}))

    with pytest.raises(PeerRefused) as caught:
        payment.payment_charge(
            order_id=7,
            customer_id=1,
            payment_method="pm_x",
            amount_cents=1,
            currency="EUR",
            idempotency_key="order-7-charge",
        )

    assert caught.value.code == "idempotency_conflict"


@pytest.mark.parametrize("paginated", [True, False])
def test_charges_for_order_reads_lists_and_pages(peer, paginated):
    """Ensure the charges lookup filters by order id and reads a plain or a paginated list."""
    charges = [
        {"id": "ch_1", "status": "DECLINED", "amount_cents": 5},
        {"id": "ch_2", "status": "CAPTURED", "amount_cents": 5},
    ]
    peer.answer("GET /internal/charges/", (200, {"count": 2, "results": charges} if paginated else charges))

    found = payment.payment_charges_for_order(order_id=7)

    assert [(c.id, c.captured) for c in found] == [("ch_1", False), ("ch_2", True)]
    assert peer.requests[0]["query"] == {"order_id": ["7"]}


def test_settle_posts_the_charge_key_and_reads_the_outcome(peer):
    """Ensure a settlement POSTs the charge key and order id with its own key, and reads what payment did."""
    peer.answer(
        "POST /internal/settlements/",
        (201, {"outcome": "REFUNDED", "charge": "ch_9", "refund": "rf_4", "refunded_cents": 20300}),
    )

    settled = payment.payment_settle(
        order_id=7, charge_key="order-7-charge", reason="Gave up", idempotency_key="order-7-settle"
    )

    assert (settled.outcome, settled.charge_id, settled.refund_id, settled.refunded) == (
        "REFUNDED",
        "ch_9",
        "rf_4",
        True,
    )
    [request] = peer.requests
    assert request["body"] == {"charge_key": "order-7-charge", "order_id": "7", "reason": "Gave up"}
    assert request["headers"]["Idempotency-Key"] == "order-7-settle"
    assert_service_call(request, audience="payment")


def test_a_voided_settlement_has_no_charge(peer):
    """Ensure a VOIDED answer (nothing was charged under the key) reads as no charge and no refund."""
    peer.answer("POST /internal/settlements/", (201, {"outcome": "VOIDED", "charge": None, "refund": None}))

    settled = payment.payment_settle(order_id=7, charge_key="order-7-charge", reason="x", idempotency_key="order-7-s")

    assert (settled.outcome, settled.charge_id, settled.refund_id, settled.refunded) == ("VOIDED", "", "", False)


def test_refund_posts_to_the_charge_with_its_key(peer):
    """Ensure a refund POSTs amount and reason to the charge's refunds with its Idempotency-Key."""
    peer.answer("POST /internal/charges/ch_9/refunds/", (201, {"id": "rf_3", "amount_cents": 20300}))

    refund = payment.payment_refund(
        charge_id="ch_9", amount_cents=20300, reason="Cancelled by customer", idempotency_key="order-7-refund"
    )

    assert (refund.id, refund.amount_cents) == ("rf_3", 20300)
    [request] = peer.requests
    assert request["body"] == {"amount_cents": 20300, "reason": "Cancelled by customer"}
    assert request["headers"]["Idempotency-Key"] == "order-7-refund"
    assert_service_call(request, audience="payment")
