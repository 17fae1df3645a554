"""What the fault, resilience and chaos tests share: the lab admin, clean-up, bounded waits, metrics.

Imported by those test modules (not a conftest: pytest does not load it by
itself). Every fault or switch a test sets goes through :class:`LabAdmin`,
and the ``lab_admin`` fixture puts every service back as it found it —
faults cleared, switches restored, breakers closed — so no test leaks into
the next one.
"""

from __future__ import annotations

import re
import time
import uuid

import pytest
import requests

from labctl.config import Paths
from labctl.labapi import LabApi

from .harness import ROOT

SERVICES = ("user", "order", "inventory", "payment")
# Each worker process re-reads the lab state at most LAB_STATE_REFRESH (0.5 s) late;
# the chassis promises one second. Waiting this long after a change means every worker has it.
SPREAD_SECONDS = 1.1
TERMINAL = {"CONFIRMED", "CANCELLED", "SHIPPED", "DELIVERED"}


class LabAdmin:
    """The lab admin's calls (the dashboard's identity, as labctl signs them) to a harness lab."""

    def __init__(self, lab):
        self.lab = lab
        self.api = LabApi(Paths(ROOT), urls=lab.urls, timeout=10)
        # gunicorn closes a connection idle for its keepalive (2 s); reusing one at that moment
        # fails with a reset. Calls here are seconds apart, so each gets a connection of its own.
        self.api.session.headers["Connection"] = "close"

    def add_fault(self, service: str, *, spread: bool = True, **fault) -> dict:
        """Inject a fault and (by default) wait until every worker of ``service`` applies it."""
        added = self.api.json("PUT", service, "/_lab/faults/", json=fault)["added"]
        if spread:
            time.sleep(SPREAD_SECONDS)
        return added

    def faults(self, service: str) -> list[dict]:
        return self.api.json("GET", service, "/_lab/faults/")["faults"]

    def clear_faults(self, *services: str, spread: bool = True) -> None:
        for service in services or SERVICES:
            self.api.json("DELETE", service, "/_lab/faults/")
        if spread:
            time.sleep(SPREAD_SECONDS)

    def resilience(self, service: str) -> dict:
        return self.api.json("GET", service, "/_lab/resilience/")

    def set_switches(self, service: str, *, spread: bool = True, **changes) -> dict:
        body = self.api.json("PUT", service, "/_lab/resilience/", json=changes)
        if spread:
            time.sleep(SPREAD_SECONDS)
        return body

    def breaker(self, service: str, peer: str) -> dict:
        return self.resilience(service)["breakers"][peer]

    def metrics(self, service: str) -> str:
        response = requests.get(f"{self.lab.urls[service]}/metrics", timeout=10)
        assert response.status_code == 200, response.text[:300]
        return response.text

    def saga(self) -> dict | None:
        """order_service's saga settings, or None when this order_service has no ``/_lab/saga/``."""
        response = self.api.call("GET", "order", "/_lab/saga/")
        return response.json() if response.status_code == 200 else None

    def restore(self, switches: dict[str, dict], saga: dict | None) -> None:
        """Clear every fault, put the switches back, close every breaker (and the saga mode back)."""
        for service in SERVICES:
            self.api.json("DELETE", service, "/_lab/faults/")
            self.api.json("PUT", service, "/_lab/resilience/", json={**switches[service], "reset_breakers": True})
        if saga is not None:
            self.api.json("PUT", "order", "/_lab/saga/", json={key: saga[key] for key in ("mode", "deadline_seconds")})
        time.sleep(SPREAD_SECONDS)


@pytest.fixture
def lab_admin(lab):
    """A :class:`LabAdmin`; afterwards every fault is cleared and every switch and breaker restored."""
    admin = LabAdmin(lab)
    for service in SERVICES:
        backend = requests.get(f"{lab.urls[service]}/health/", timeout=10).json()["checks"]["cache"].get("backend")
        if backend != "RedisCache":
            pytest.fail(
                f"{service} runs on {backend}, not Redis (REDIS_URL empty in var/env/{service}.env?): "
                "without Redis each worker process keeps its own breakers, and these tests check "
                "that every worker shares them (run labctl setup with Redis up)."
            )
    switches = {service: admin.resilience(service)["switches"] for service in SERVICES}
    saga = admin.saga()
    yield admin
    admin.restore(switches, saga)


def wait_until(predicate, *, timeout: float, interval: float = 0.2, message: str = "condition"):
    """Call ``predicate`` until it returns something truthy (returned) or ``timeout`` passes (AssertionError)."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"{message}: not true after {timeout:.0f} s (last: {last!r})")
        time.sleep(interval)


_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def metric_total(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``, in Prometheus text."""
    total = 0.0
    for line in text.splitlines():
        match = _SAMPLE.match(line.strip())
        if not match or match["name"] != name:
            continue
        found = dict(_LABEL.findall(match["labels"] or ""))
        if all(found.get(key) == value for key, value in labels.items()):
            total += float(match["value"])
    return total


def requests_outside_lab(text: str) -> float:
    """How many requests ``lab_http_requests_total`` counted on every route but the lab controls (``/_lab/``).

    Answers an injected fault gave count too: they are labelled ``unmatched``,
    the fault having answered before any route was resolved.
    """
    total = 0.0
    for line in text.splitlines():
        match = _SAMPLE.match(line.strip())
        if (
            match
            and match["name"] == "lab_http_requests_total"
            and not dict(_LABEL.findall(match["labels"] or "")).get("route", "").startswith("/_lab/")
        ):
            total += float(match["value"])
    return total


class Shopper:
    """A customer with a card, placing orders it can replay (same key, same body) to finish them."""

    def __init__(self, api, card: str):
        self.api = api
        self.api.session.headers["Connection"] = "close"  # see LabAdmin: no race with gunicorn's keepalive
        self.card = card
        self.placed: list[dict] = []  # {"key", "body", "response", "order"}

    def order(self, sku: str, quantity: int = 1, timeout: float = 60) -> dict:
        """POST one order; the request is kept (even when no answer came) so that it can be replayed."""
        key = f"it-{uuid.uuid4().hex}"
        body = {"lines": [{"sku": sku, "quantity": quantity}], "payment_method": self.card}
        placed = {"key": key, "body": body, "status_code": None, "seconds": None, "data": {}, "headers": {}}
        self.placed.append(placed)
        started = time.monotonic()
        response = self.api.session.post(
            self.api.url("order", "/api/orders/"), json=body, headers={"Idempotency-Key": key}, timeout=timeout
        )
        placed.update(
            status_code=response.status_code,
            seconds=time.monotonic() - started,
            data=_json(response),
            headers=dict(response.headers),
        )
        return placed

    def replay(self, placed: dict, timeout: float = 60) -> dict:
        response = self.api.session.post(
            self.api.url("order", "/api/orders/"),
            json=placed["body"],
            headers={"Idempotency-Key": placed["key"]},
            timeout=timeout,
        )
        placed["status_code"], placed["data"] = response.status_code, _json(response)
        return placed

    def settle(self, *, timeout: float = 60) -> list[dict]:
        """Replay every order not yet terminal (an interrupted saga resumes) until all are; returns them."""
        deadline = time.monotonic() + timeout
        pending = [p for p in self.placed if _unsettled(p)]
        while pending and time.monotonic() < deadline:
            for placed in pending:
                self.replay(placed)
            pending = [p for p in pending if _unsettled(p)]
            if pending:
                time.sleep(0.5)
        assert not pending, [(p["status_code"], p["data"]) for p in pending]
        return self.placed


def _json(response):
    try:
        return response.json()
    except ValueError:
        return {"raw": response.text[:300]}


def _unsettled(placed: dict) -> bool:
    """Created (or not) but not terminal: a 202/201 PENDING, or an answer that was not an order at all."""
    data = placed["data"] if isinstance(placed["data"], dict) else {}
    if placed["status_code"] in (400, 409):
        return False  # refused before anything was written: nothing to settle
    return data.get("status") not in TERMINAL


def history_notes(order: dict) -> str:
    return " | ".join(f"{e.get('step')}: {e.get('note')}" for e in order.get("history", []))


@pytest.fixture
def shopper(customer, product):
    """A fresh customer with an approving card and a fresh product with plenty of stock."""
    shop = Shopper(customer, customer.add_card())
    shop.sku = product(stock=500, price_cents=1000)
    return shop
