"""inventory_service, as order_service sees it: product lookup and stock reservations.

Paths and bodies follow docs/contracts.md (inventory_service section).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from chassis.client import PeerUnavailable, ServiceClient

from . import PeerRefused, as_list, refusal, unreadable

PEER = "inventory"
_client = ServiceClient(PEER)


@dataclass(frozen=True)
class Product:
    sku: str
    name: str
    price_cents: int
    currency: str
    active: bool
    available: int | None


@dataclass(frozen=True)
class ReservationLine:
    sku: str
    name: str
    quantity: int
    unit_price_cents: int


@dataclass(frozen=True)
class Reservation:
    id: str
    status: str
    lines: tuple[ReservationLine, ...]
    total_cents: int
    currency: str


@dataclass(frozen=True)
class Shortage:
    sku: str
    available: int | None = None


class InsufficientStock(Exception):
    """Inventory refused the reservation: not enough stock for the named skus."""

    def __init__(self, shortages: list[Shortage], message: str = "Not enough stock."):
        self.shortages = shortages
        self.message = message
        super().__init__(message)

    def describe(self) -> str:
        """``Not enough stock for KB-001 (2 available), MS-002`` for a customer's eyes."""
        if not self.shortages:
            return "Not enough stock"
        parts = [f"{s.sku} ({s.available} available)" if s.available is not None else s.sku for s in self.shortages]
        return "Not enough stock for " + ", ".join(parts)


class LinesRefused(PeerRefused):
    """Inventory refused the reservation's lines (a 400): unknown or inactive skus, mixed currencies, bad lines.

    ``messages`` are for the order's ``lines`` field, one per sku inventory named when it named them.
    """

    def __init__(self, refused: PeerRefused, messages: list[str]):
        super().__init__(refused.peer, refused.status, refused.code, refused.message, refused.fields)
        self.messages = messages


def inventory_products_lookup(*, skus: list[str]) -> dict[str, Product]:
    """The catalog entries of ``skus`` (at most 100), by sku; unknown skus are absent."""
    response = _client.get("/api/products/", params={"sku": ",".join(skus), "page_size": 100})
    if response.status != 200:
        raise refusal(PEER, response)
    try:
        products = {}
        for item in as_list(response.data):
            product = Product(
                sku=str(item["sku"]),
                name=str(item.get("name", ""))[:200],
                price_cents=int(item["price_cents"]),
                currency=str(item.get("currency") or "EUR")[:3],
                active=bool(item.get("active", True)),
                available=int(item["available"]) if item.get("available") is not None else None,
            )
            products[product.sku] = product
    except (KeyError, TypeError, ValueError) as exc:
        raise unreadable(PEER, "product lookup", response) from exc
    return products


def inventory_reserve(
    *, order_id: int, lines: list[dict], idempotency_key: str, ttl_seconds: int | None = None
) -> Reservation:
    """Hold stock for ``lines`` (``[{"sku", "quantity"}]``); the reservation's prices are authoritative."""
    body = {"order_id": order_id, "idempotency_key": idempotency_key, "lines": lines}
    if ttl_seconds:
        body["ttl_seconds"] = ttl_seconds
    response = _client.post("/internal/reservations/", json=body, idempotency_key=idempotency_key)
    if response.status == 409 and _code(response) == "insufficient_stock":
        raise _insufficient_stock(response, requested=[line["sku"] for line in lines])
    if response.status == 400:
        raise _lines_refused(response)
    if response.status not in (200, 201):
        raise refusal(PEER, response)
    return _reservation(response, "reserve")


def inventory_commit(*, reservation_id: str) -> Reservation:
    """HELD → COMMITTED; committing a committed reservation again is a no-op."""
    return _transition(reservation_id, "commit")


def inventory_release(*, reservation_id: str) -> Reservation:
    """HELD → RELEASED, COMMITTED → RETURNED; releasing twice is a no-op."""
    return _transition(reservation_id, "release")


def inventory_reservations_for_order(*, order_id: int) -> list[Reservation]:
    """Every reservation inventory holds for ``order_id`` (any status), to learn the outcome of a lost answer."""
    response = _client.get("/internal/reservations/", params={"order_id": order_id, "page_size": 100})
    if response.status != 200:
        raise refusal(PEER, response)
    try:
        items = as_list(response.data)
    except ValueError as exc:
        raise unreadable(PEER, "reservations lookup", response) from exc
    return [_reservation_from(item, response, "reservations lookup") for item in items]


def inventory_reservations_expire() -> int:
    """Ask inventory to expire the HELD reservations past their deadline; returns how many it expired."""
    # No key, so no client retry: the next periodic run does the same work anyway.
    response = _client.post("/internal/reservations/expire/", json={})
    if response.status != 200:
        raise refusal(PEER, response)
    try:
        return int(response.data["expired"])
    except (KeyError, TypeError, ValueError) as exc:
        raise unreadable(PEER, "reservations expiry", response) from exc


def _transition(reservation_id: str, action: str) -> Reservation:
    # Both transitions are idempotent by contract; the key tells the chassis
    # client that retrying the POST after a lost answer is safe.
    response = _client.post(
        f"/internal/reservations/{reservation_id}/{action}/",
        json={},
        idempotency_key=f"reservation-{reservation_id}-{action}",
    )
    if response.status not in (200, 201):
        raise refusal(PEER, response)
    return _reservation(response, action)


def _code(response) -> str:
    return str(response.data.get("code", "")) if isinstance(response.data, dict) else ""


def _reservation(response, what: str) -> Reservation:
    return _reservation_from(response.data, response, what)


def _reservation_from(data, response, what: str) -> Reservation:
    try:
        lines = tuple(
            ReservationLine(
                sku=str(line["sku"]),
                name=str(line.get("name", ""))[:200],
                quantity=int(line["quantity"]),
                unit_price_cents=int(line["unit_price_cents"]),
            )
            for line in data.get("lines", [])
        )
        currency = data.get("currency") or next(
            (line.get("currency") for line in data.get("lines", []) if line.get("currency")), "EUR"
        )
        return Reservation(
            id=str(data["id"]),
            status=str(data.get("status", "")),
            lines=lines,
            total_cents=int(data["total_cents"])
            if data.get("total_cents") is not None
            else sum(line.quantity * line.unit_price_cents for line in lines),
            currency=str(currency)[:3],
        )
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise unreadable(PEER, what, response) from exc


def _lines_refused(response) -> LinesRefused:
    """The 400 inventory answers to lines it cannot reserve, with one message per sku it names."""
    refused = refusal(PEER, response)
    data = response.data if isinstance(response.data, dict) else {}
    skus = data.get("skus") if refused.code == "unknown_sku" else None
    if isinstance(skus, list) and skus:
        messages = [f"Unknown or inactive sku: {str(sku)[:32]}." for sku in skus[:50]]
    else:
        named = refused.fields.get("lines")
        named = named if isinstance(named, list) else []
        messages = [str(m)[:200] for m in named[:50] if isinstance(m, str)] or [
            f"The inventory service refused these lines: {refused.message}"
        ]
    return LinesRefused(refused, messages)


_AVAILABLE = re.compile(r"(\d+)\s+available|available\D{0,3}(\d+)", re.IGNORECASE)


def _insufficient_stock(response, *, requested: list[str]) -> InsufficientStock:
    """Read the skus (and what is left of them) from ``fields.lines``, structured or as sentences."""
    data = response.data if isinstance(response.data, dict) else {}
    fields = data.get("fields") if isinstance(data.get("fields"), dict) else {}
    items = fields.get("lines") or []
    if not isinstance(items, list):
        items = [items]
    shortages: list[Shortage] = []
    for item in items:
        if isinstance(item, dict) and item.get("sku"):
            available = item.get("available")
            shortages.append(Shortage(str(item["sku"])[:32], int(available) if isinstance(available, int) else None))
        elif isinstance(item, str):
            sku = next((s for s in requested if s in item), None)
            if sku:
                match = _AVAILABLE.search(item)
                shortages.append(Shortage(sku, int(next(g for g in match.groups() if g)) if match else None))
    return InsufficientStock(shortages, str(data.get("message") or "Not enough stock."))


__all__ = [
    "InsufficientStock",
    "LinesRefused",
    "PeerRefused",
    "PeerUnavailable",
    "Product",
    "Reservation",
    "ReservationLine",
    "Shortage",
    "inventory_commit",
    "inventory_products_lookup",
    "inventory_release",
    "inventory_reservations_expire",
    "inventory_reservations_for_order",
    "inventory_reserve",
]
