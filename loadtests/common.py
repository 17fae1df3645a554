"""What every load scenario of the lab shares: where the services are, and a shopper.

Scenarios import :class:`ShopUser`, an abstract ``FastHttpUser`` that

* knows the four services' base URLs (``USER_SERVICE_URL`` ...
  ``PAYMENT_SERVICE_URL``, default ``http://127.0.0.1:8001`` ... ``8004``) and
  refuses any address that is not this machine;
* registers and logs in once per simulated user (or takes a prepared account
  from ``ACCOUNTS_FILE``) and logs in again before its token expires;
* sends an ``X-Request-ID`` with every request, so a slow or failed request of
  the run can be found in the services' logs and traces;
* groups dynamic URLs under one name (``/api/orders/[id]/``);
* places orders, following the saga to a terminal status whether the order
  service answers at once (sync saga, 201) or accepts and finishes later
  (async saga, 202, then the client polls), and resumes an order whose saga
  paused, as the contract tells a client to (the same request again);
* judges each answer with ``catch_response``: an outcome the scenario expects
  (a declined test card, a failure an injected fault explains) is a success
  reported on its own row (``/api/orders/ [declined card, expected]``), so it
  is counted separately and never hides a real failure.

Each placed order also produces one ``FLOW`` entry, ``order → terminal``: the
time from sending the order to seeing its final status. It is not an HTTP
request; summaries leave it out of request totals.

Environment (all optional): ``DECLINE_SHARE`` (share of checkouts paid with
the declined card, default 0.05), ``THINK_TIME`` (seconds between tasks:
``"1"`` or ``"0.5-2"``), ``POLL_TIMEOUT`` (seconds a client follows an
accepted order, default 30), ``ACCOUNTS_FILE`` (JSON list of accounts:
``{"email", "password"}``, optionally with ``"access"``, ``"expires_at"`` and
``"cards": {"approved": pm, "declined": pm}``), ``FOLLOW_ORDERS`` (``false``:
leave an accepted order after the answer, for the benchmark), ``STOCK_FLOOR`` (before a run
that buys, restock every product below this many units to it, default 500;
0 turns it off), ``LAB_ADMIN_EMAIL`` / ``LAB_ADMIN_PASSWORD`` (the staff
account that restocks).
"""

from __future__ import annotations

import itertools
import json
import os
import random
import time
import uuid
from urllib.parse import urlsplit

import gevent
import locust  # noqa: F401  (before requests: importing locust patches ssl and sockets for gevent)
import requests
from locust import FastHttpUser, between, constant, events
from locust.exception import RescheduleTask
from locust.runners import WorkerRunner

from chassis import parts
from prepared_accounts import account_for
from retry_after import post_waiting_out_limits

SERVICES = parts.SERVICE_NAMES
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
# docker-compose's Locust targets the services by their compose names; it lists them here.
ALLOWED_HOSTS = LOOPBACK_HOSTS | {h.strip() for h in os.environ.get("LOAD_ALLOWED_HOSTS", "").split(",") if h.strip()}

APPROVED_CARD = "4242424242424242"
DECLINED_CARD = "4000000000000002"
TERMINAL = {"CONFIRMED", "CANCELLED", "SHIPPED", "DELIVERED"}
FLOW = "FLOW"  # request_type of the end-to-end entries; not HTTP requests
FLOW_NAME = "order → terminal"


def service_urls(environ=os.environ) -> dict[str, str]:
    """Base URL of each service from the environment; only loopback addresses are accepted."""
    urls = {}
    for service in parts.SERVICES:
        name, variable = service.name, service.env_var
        url = (environ.get(variable) or service.default_url).rstrip("/")
        if urlsplit(url).hostname not in ALLOWED_HOSTS:
            raise SystemExit(
                f"{variable}={url}: the lab's load tests only target this machine (127.0.0.1) "
                "or the hosts listed in LOAD_ALLOWED_HOSTS."
            )
        urls[name] = url
    return urls


URLS = service_urls()


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise SystemExit(f"{name}={raw!r} is not a number") from None


def think_time(default: str):
    """A Locust wait_time from ``THINK_TIME`` (``"1"`` or ``"0.5-2"``), else from ``default``."""
    raw = (os.environ.get("THINK_TIME") or default).strip()
    low, _, high = raw.partition("-")
    try:
        return between(float(low), float(high)) if high else constant(float(low))
    except ValueError:
        raise SystemExit(f"THINK_TIME={raw!r}: use seconds, like 1 or 0.5-2") from None


DECLINE_SHARE = min(max(env_float("DECLINE_SHARE", 0.05), 0.0), 1.0)
POLL_TIMEOUT = min(max(env_float("POLL_TIMEOUT", 30.0), 1.0), 600.0)
# The benchmark measures order creation alone with payment down: it does not follow accepted orders.
FOLLOW_ORDERS = os.environ.get("FOLLOW_ORDERS", "true").strip().lower() not in ("0", "false", "no")
# Error codes a run expects as answers, not failures: the benchmark's breaker-open step expects order to refuse
# at once (503 dependency_unavailable, with Retry-After). Each is reported on its own row, "[refused: <code>]".
EXPECTED_REFUSALS = frozenset(c.strip() for c in os.environ.get("EXPECTED_REFUSALS", "").split(",") if c.strip())
RESUME_AFTER = 3.0  # seconds between re-sends of an order whose saga paused
MAX_POLLS = 400  # with the 0.1-1 s back-off this outlasts POLL_TIMEOUT; a second bound


def is_worker(environment) -> bool:
    return isinstance(environment.runner, WorkerRunner)


# ----------------------------------------------------------------- accounts


_account_index = itertools.count()


def _load_accounts() -> list[dict]:
    path = os.environ.get("ACCOUNTS_FILE")
    if not path:
        return []
    with open(path, encoding="utf-8") as handle:
        accounts = json.load(handle)
    if not isinstance(accounts, list) or not all(isinstance(a, dict) and a.get("email") for a in accounts):
        raise SystemExit(f"ACCOUNTS_FILE={path}: expected a JSON list of {{email, password}} objects")
    return accounts


ACCOUNTS = _load_accounts()


# ------------------------------------------------------------------ catalog


class Catalog:
    """The active products, read once per process and refreshed now and then."""

    REFRESH_SECONDS = 30.0

    def __init__(self):
        self.products: list[dict] = []
        self.loaded_at = 0.0

    def stale(self) -> bool:
        return not self.products or time.monotonic() - self.loaded_at > self.REFRESH_SECONDS

    def update(self, products: list[dict]) -> None:
        active = [p for p in products if p.get("active", True)]
        if active:
            self.products = active
            self.loaded_at = time.monotonic()

    def any_sku(self) -> str:
        return random.choice(self.products)["sku"]

    def sku_in_stock(self) -> str:
        """A sku to buy, favouring well-stocked products so a run does not empty one shelf."""
        stocked = [p for p in self.products if p.get("available", 0) > 0] or self.products
        weights = [max(p.get("available", 1), 1) for p in stocked]
        return random.choices(stocked, weights=weights)[0]["sku"]


CATALOG = Catalog()
SEARCH_TERMS = ("keyboard", "mouse", "usb", "cable", "monitor", "ssd", "audio", "wireless", "hub", "4k")


# ------------------------------------------------- orders not yet settled


class InFlight:
    """Orders this process sent whose final status it has not seen yet.

    A run that stops kills its users mid-request; the chaos scenario settles
    what is left here (the same request again, then polling) before its audit.
    """

    LIMIT = 20000

    def __init__(self):
        self.records: dict[str, dict] = {}

    def add(self, key: str, record: dict) -> None:
        if len(self.records) < self.LIMIT:
            self.records[key] = record

    def update(self, key: str, **changes) -> None:
        if key in self.records:
            self.records[key].update(changes)

    def done(self, key: str) -> None:
        self.records.pop(key, None)


IN_FLIGHT = InFlight()


# --------------------------------------------------------------- the user


def _json(response) -> dict:
    try:
        data = response.json()
    except (ValueError, TypeError):  # not JSON (a ValueError), or no answer at all (no body: a TypeError)
        return {}
    return data if isinstance(data, dict) else {}


def _describe(response, data: dict) -> str:
    if not response.status_code:
        return f"no answer ({type(response.error).__name__ if getattr(response, 'error', None) else 'connection'})"
    code = data.get("code") or ""
    message = data.get("message") or ""
    return f"HTTP {response.status_code} {code}: {message}".strip().rstrip(":")


def relabel(response, suffix: str) -> None:
    """Report this request on its own row: ``<name> [<suffix>]``."""
    meta = response.request_meta
    meta["name"] = f"{meta['name']} [{suffix}]"


def fire_flow(environment, started: float, *, failure: str | None = None) -> None:
    environment.events.request.fire(
        request_type=FLOW,
        name=FLOW_NAME,
        response_time=(time.perf_counter() - started) * 1000,
        response_length=0,
        exception=Exception(failure) if failure else None,
        context={},
    )


class ShopUser(FastHttpUser):
    """A customer of the lab's shop; scenarios give it tasks and a wait time."""

    abstract = True
    host = URLS["inventory"]  # FastHttpUser wants a host; every request here uses an absolute URL
    network_timeout = 30.0
    connection_timeout = 5.0
    login_required = True

    def on_start(self):
        self._request_numbers = itertools.count(1)
        self._request_prefix = f"lt-{uuid.uuid4().hex[:12]}"
        self.token: str | None = None
        self.token_expires = 0.0
        self.cards: dict[str, str] = {}
        self.orders: list[int] = []  # ids of this user's orders, newest last (bounded)
        self.confirmed: list[int] = []
        self._account: tuple[str, str] | None = None
        if self.login_required:
            try:
                self.sign_in()
            except RescheduleTask:
                pass  # recorded as a failure; each task tries again through ensure_signed_in

    # -------------------------------------------------------------- HTTP

    def call(
        self,
        method: str,
        service: str,
        path: str,
        *,
        name: str | None = None,
        auth: bool = True,
        headers: dict | None = None,
        **kwargs,
    ):
        """One request to ``service`` with a request id (and the user's token when ``auth``)."""
        sent = {"X-Request-ID": f"{self._request_prefix}-{next(self._request_numbers)}", "Accept": "application/json"}
        if auth and self.token:
            sent["Authorization"] = f"Bearer {self.token}"
        if headers:
            sent.update(headers)
        return self.client.request(method, URLS[service] + path, name=name or path, headers=sent, **kwargs)

    def explain(self, response, data: dict, service: str) -> str | None:
        """Name the injected fault that explains this failure, or None. The chaos scenario overrides it."""
        return None

    def judge_failure(self, response, data: dict, service: str, message: str | None = None) -> None:
        """Mark a failed answer: success-with-note when a fault explains it or the run expects it, else a failure."""
        if data.get("code") in EXPECTED_REFUSALS:
            relabel(response, f"refused: {data['code']}")
            response.success()
            return
        label = self.explain(response, data, service)
        if label:
            relabel(response, f"explained: {label}")
            response.success()
        else:
            response.failure(message or _describe(response, data))

    # ----------------------------------------------------------- account

    def sign_in(self) -> None:
        """Register a fresh account (or take a prepared one) and log in; RescheduleTask when it cannot."""
        account = None
        if ACCOUNTS:
            runner = self.environment.runner
            workers = int(os.environ.get("LOAD_WORKERS", "1") or 1)
            account = account_for(ACCOUNTS, next(_account_index), getattr(runner, "worker_index", 0) or 0, workers)
        if account and account.get("password"):
            self._account = (account["email"], account["password"])  # to log in again when the token expires
        if account and account.get("access") and account.get("expires_at", 0) > time.time() + 60:
            self.token = account["access"]
            self.token_expires = time.monotonic() + account["expires_at"] - time.time()
            self.cards = dict(account.get("cards") or {})
            return
        if account:
            email, password = account["email"], account["password"]
        else:
            email = f"load-{uuid.uuid4().hex[:16]}@lab.local"
            password = f"pw-{uuid.uuid4().hex}"
            body = {"email": email, "password": password, "name": "Load Test Customer"}
            with self.call("POST", "user", "/api/auth/register/", auth=False, json=body, catch_response=True) as r:
                if r.status_code != 201:
                    self.judge_failure(r, _json(r), "user")
                    raise RescheduleTask()
        self._account = (email, password)
        self._log_in()

    def _log_in(self) -> None:
        email, password = self._account
        with self.call(
            "POST",
            "user",
            "/api/auth/login/",
            auth=False,
            json={"email": email, "password": password},
            catch_response=True,
        ) as r:
            data = _json(r)
            if r.status_code != 200 or "access" not in data:
                self.judge_failure(r, data, "user")
                raise RescheduleTask()
            self.token = data["access"]
            self.token_expires = time.monotonic() + float(data.get("expires_in", 900))

    def ensure_signed_in(self) -> None:
        if self.token is None:
            self.sign_in()
        elif time.monotonic() > self.token_expires - 60:
            if self._account:
                self._log_in()
            else:
                self.sign_in()

    def card(self, kind: str) -> str:
        """The user's payment method token for ``kind`` ("approved" or "declined"), added on first use."""
        if kind not in self.cards:
            number = APPROVED_CARD if kind == "approved" else DECLINED_CARD
            body = {"card_number": number, "exp_month": 12, "exp_year": 2035, "cvc": "123"}
            with self.call("POST", "payment", "/api/payment-methods/", json=body, catch_response=True) as r:
                data = _json(r)
                if r.status_code != 201 or "token" not in data:
                    self.judge_failure(r, data, "payment")
                    raise RescheduleTask()
                self.cards[kind] = data["token"]
        return self.cards[kind]

    # ----------------------------------------------------------- catalog

    def refresh_catalog(self) -> None:
        if not CATALOG.stale():
            return
        with self.call(
            "GET",
            "inventory",
            "/api/products/?page_size=100",
            name="/api/products/?page_size=100",
            auth=False,
            catch_response=True,
        ) as r:
            data = _json(r)
            if r.status_code == 200 and isinstance(data.get("results"), list):
                CATALOG.update(data["results"])
            else:
                self.judge_failure(r, data, "inventory")
        if not CATALOG.products:
            raise RescheduleTask()

    def browse_list(self) -> None:
        page = random.choice((1, 1, 1, 2))
        with self.call(
            "GET",
            "inventory",
            f"/api/products/?page={page}",
            name="/api/products/?page=[n]",
            auth=False,
            catch_response=True,
        ) as r:
            data = _json(r)
            if r.status_code == 200 and isinstance(data.get("results"), list):
                if page == 1 and CATALOG.stale():
                    CATALOG.update(data["results"])
                r.success()
            else:
                self.judge_failure(r, data, "inventory")

    def browse_search(self) -> None:
        term = random.choice(SEARCH_TERMS)
        with self.call(
            "GET",
            "inventory",
            f"/api/products/?search={term}",
            name="/api/products/?search=[term]",
            auth=False,
            catch_response=True,
        ) as r:
            if r.status_code == 200:
                r.success()
            else:
                self.judge_failure(r, _json(r), "inventory")

    def browse_detail(self) -> None:
        self.refresh_catalog()
        sku = CATALOG.any_sku()
        with self.call(
            "GET", "inventory", f"/api/products/{sku}/", name="/api/products/[sku]/", auth=False, catch_response=True
        ) as r:
            if r.status_code == 200:
                r.success()
            else:
                self.judge_failure(r, _json(r), "inventory")

    # ------------------------------------------------------------ orders

    def remember(self, order: dict) -> None:
        self.orders = (self.orders + [order["id"]])[-50:]
        if order.get("status") == "CONFIRMED":
            self.confirmed = (self.confirmed + [order["id"]])[-50:]

    def place_order(self, *, decline: bool | None = None, draft: bool = False) -> dict | None:
        """Send one order (``draft``: without checkout) and follow it to its final status.

        Returns the last state seen, or None when the order was refused.
        """
        self.ensure_signed_in()
        self.refresh_catalog()
        if decline is None:
            decline = random.random() < DECLINE_SHARE
        body = {
            "lines": [{"sku": CATALOG.sku_in_stock(), "quantity": 1}],
            "payment_method": self.card("declined" if decline else "approved"),
        }
        if draft:
            body["checkout"] = False
        key = f"lt-{uuid.uuid4().hex}"
        self.last_request = {"path": "/api/orders/", "json": body, "headers": {"Idempotency-Key": key}}
        if not draft:  # a draft runs no saga: nothing to settle if the run stops mid-request
            IN_FLIGHT.add(
                key,
                {
                    "method": "POST",
                    "url": URLS["order"] + "/api/orders/",
                    "body": body,
                    "headers": {"Idempotency-Key": key, "Authorization": f"Bearer {self.token}"},
                },
            )
        started = time.perf_counter()
        with self.call(
            "POST",
            "order",
            "/api/orders/",
            name="/api/orders/" + (" [draft]" if draft else ""),
            json=body,
            # The answer is of no use after this user's own timeout: a service that gets to the
            # request later sheds it (503 deadline_exceeded) instead of charging a customer who left.
            headers={"Idempotency-Key": key, "X-Request-Deadline": f"{time.time() + self.network_timeout:.3f}"},
            catch_response=True,
        ) as r:
            data = _json(r)
            if r.status_code in (200, 201, 202) and "status" in data and "id" in data:
                IN_FLIGHT.update(key, order_id=data["id"])
                self.remember(data)
                if draft:
                    r.success()
                    return data
                if r.status_code == 202 or data["status"] not in TERMINAL:
                    r.success()  # accepted: the outcome is judged when the order ends
                else:
                    self.judge_outcome(r, data, decline=decline)
            else:
                IN_FLIGHT.done(key)
                self.judge_failure(r, data, "order")
                return None
        if data["status"] in TERMINAL:
            IN_FLIGHT.done(key)
            fire_flow(self.environment, started)
            return data
        if not FOLLOW_ORDERS:
            return data
        return self.follow(
            data,
            key=key,
            decline=decline,
            started=started,
            resend={
                "method": "POST",
                "path": "/api/orders/",
                "json": body,
                "headers": {"Idempotency-Key": key},
                "name": "/api/orders/ [resume]",
            },
        )

    def judge_outcome(self, response, order: dict, *, decline: bool) -> None:
        """Judge an order that reached a final status against what the scenario expected."""
        status, reason = order["status"], order.get("status_reason") or ""
        self.remember(order)
        if status == "CANCELLED" and decline and "declin" in reason.lower():
            relabel(response, "declined card, expected")
            response.success()
        elif status in TERMINAL and status != "CANCELLED" and not decline:
            response.success()
        elif decline:
            response.failure(f"the declined test card ended {status} ({reason})")
        else:
            self.judge_failure(response, order, "order", f"order {order['id']} {status}: {reason}")

    def follow(self, order: dict, *, key: str, decline: bool, started: float, resend: dict) -> dict:
        """Poll an order until it is final (bounded by POLL_TIMEOUT and MAX_POLLS); resume a paused saga."""
        deadline = time.monotonic() + POLL_TIMEOUT
        last_sent = time.monotonic()
        delay = 0.1
        for _ in range(MAX_POLLS):
            if time.monotonic() >= deadline:
                break
            gevent.sleep(delay)
            delay = min(delay * 1.5, 1.0)
            if self._paused(order) and time.monotonic() - last_sent >= RESUME_AFTER:
                last_sent = time.monotonic()
                finished = False
                with self.call(
                    resend["method"],
                    "order",
                    resend["path"],
                    name=resend["name"],
                    json=resend.get("json"),
                    headers=resend.get("headers"),
                    catch_response=True,
                ) as r:
                    data = _json(r)
                    if r.status_code in (200, 201, 202) and "status" in data:
                        order = data
                        finished = self._final(order)
                        if finished:
                            self._finish(order, key=key, decline=decline, started=started, via=r)
                        else:
                            r.success()
                    else:
                        self.judge_failure(r, data, "order")
                if finished:
                    return order
                continue
            with self.call(
                "GET", "order", f"/api/orders/{order['id']}/", name="/api/orders/[id]/ [poll]", catch_response=True
            ) as r:
                data = _json(r)
                if r.status_code != 200 or "status" not in data:
                    self.judge_failure(r, data, "order")
                    continue
                order = data
                if self._final(order):
                    return self._finish(order, key=key, decline=decline, started=started, via=r)
                r.success()
        # Still not final: leave it to the settling at the end of the run.
        label = self.explain(None, order, "order")
        self.environment.events.request.fire(
            request_type="GET",
            name="/api/orders/[id]/ [poll]" + (f" [explained: {label}]" if label else ""),
            response_time=POLL_TIMEOUT * 1000,
            response_length=0,
            context={},
            exception=None
            if label
            else Exception(
                f"order {order['id']} still {order['status']} "
                f"at step {order.get('saga_step')} after {POLL_TIMEOUT:.0f}s"
            ),
        )
        return order

    def _finish(self, order: dict, *, key: str, decline: bool, started: float, via) -> dict:
        IN_FLIGHT.done(key)
        self.judge_outcome(via, order, decline=decline)
        fire_flow(self.environment, started)
        return order

    def _final(self, order: dict) -> bool:
        """The order reached its final status and nothing is left to undo."""
        return order.get("status") in TERMINAL and order.get("saga_step") != "compensating" and not self._paused(order)

    @staticmethod
    def _paused(order: dict) -> bool:
        history = order.get("history") or []
        return bool(history) and history[-1].get("step") == "paused"

    def view_orders(self) -> None:
        self.ensure_signed_in()
        with self.call(
            "GET", "order", "/api/orders/?page_size=10", name="/api/orders/?page_size=10", catch_response=True
        ) as r:
            if r.status_code == 200:
                r.success()
            else:
                self.judge_failure(r, _json(r), "order")

    def view_order(self) -> None:
        if not self.orders:
            return self.view_orders()
        self.ensure_signed_in()
        with self.call(
            "GET", "order", f"/api/orders/{random.choice(self.orders)}/", name="/api/orders/[id]/", catch_response=True
        ) as r:
            if r.status_code == 200:
                r.success()
            else:
                self.judge_failure(r, _json(r), "order")

    def cart(self) -> None:
        """A cart: a draft order, sometimes changed, then checked out, cancelled or abandoned."""
        draft = self.place_order(draft=True, decline=False)
        if not draft:
            return
        created = self.last_request
        if random.random() < 0.5:
            lines = [{"sku": CATALOG.sku_in_stock(), "quantity": random.randint(1, 2)}]
            with self.call(
                "PATCH",
                "order",
                f"/api/orders/{draft['id']}/",
                name="/api/orders/[id]/",
                json={"lines": lines},
                catch_response=True,
            ) as r:
                if r.status_code == 200:
                    r.success()
                else:
                    self.judge_failure(r, _json(r), "order")
                    return
        choice = random.random()
        if choice < 0.4:
            self.checkout_draft(draft, created)
        elif choice < 0.6:
            self.cancel(draft["id"], name="/api/orders/[id]/cancel/ [draft]")

    def checkout_draft(self, draft: dict, created: dict) -> None:
        """Check a draft out. If its saga pauses, the draft's own create request, sent again, resumes it
        (a replay resumes an interrupted saga; ``/checkout/`` again would be a 409: no longer a draft)."""
        path = f"/api/orders/{draft['id']}/checkout/"
        key = f"draft-{draft['id']}"
        IN_FLIGHT.add(
            key,
            {
                "method": "POST",
                "url": URLS["order"] + created["path"],
                "body": created["json"],
                "order_id": draft["id"],
                "headers": {**created["headers"], "Authorization": f"Bearer {self.token}"},
            },
        )
        started = time.perf_counter()
        with self.call("POST", "order", path, name="/api/orders/[id]/checkout/", catch_response=True) as r:
            data = _json(r)
            if r.status_code not in (200, 202) or "status" not in data:
                IN_FLIGHT.done(key)
                self.judge_failure(r, data, "order")
                return
            if data["status"] in TERMINAL:
                IN_FLIGHT.done(key)
                self.judge_outcome(r, data, decline=False)
                fire_flow(self.environment, started)
                return
            r.success()
        self.follow(
            data,
            key=key,
            decline=False,
            started=started,
            resend={
                "method": "POST",
                "path": created["path"],
                "json": created["json"],
                "headers": created["headers"],
                "name": "/api/orders/ [resume]",
            },
        )

    def cancel(self, order_id: int, *, name: str = "/api/orders/[id]/cancel/") -> None:
        path = f"/api/orders/{order_id}/cancel/"
        key = f"cancel-{order_id}"
        IN_FLIGHT.add(
            key,
            {
                "method": "POST",
                "url": URLS["order"] + path,
                "body": None,
                "order_id": order_id,
                "headers": {"Authorization": f"Bearer {self.token}"},
                "expect": "CANCELLED",
            },
        )
        with self.call("POST", "order", path, name=name, catch_response=True) as r:
            data = _json(r)
            if r.status_code == 200 and data.get("status") == "CANCELLED":
                IN_FLIGHT.done(key)
                self.confirmed = [i for i in self.confirmed if i != order_id]
                r.success()
            elif r.status_code in (200, 202) and "status" in data:
                self.judge_failure(
                    r, data, "order", f"order {order_id} still {data['status']} after cancel ({data.get('saga_step')})"
                )
            else:
                if r.status_code == 409:  # not cancellable (already cancelled or shipped): nothing to settle
                    IN_FLIGHT.done(key)
                self.judge_failure(r, data, "order")

    def cancel_confirmed(self) -> None:
        if self.confirmed:
            self.ensure_signed_in()
            self.cancel(self.confirmed.pop(0))


# ------------------------------------------------------- before a run that buys


def admin_session(timeout: float = 10.0) -> requests.Session:
    """A requests session logged in as the lab's staff account."""
    email = os.environ.get("LAB_ADMIN_EMAIL", "admin@lab.local")
    password = os.environ.get("LAB_ADMIN_PASSWORD", "admin-lab-2024")
    session = requests.Session()
    response = session.post(
        URLS["user"] + "/api/auth/login/", json={"email": email, "password": password}, timeout=timeout
    )
    response.raise_for_status()
    session.headers["Authorization"] = f"Bearer {response.json()['access']}"
    return session


def ensure_stock(floor: int | None = None, *, echo=print) -> int:
    """Restock every active product below ``floor`` units up to it (STOCK_FLOOR); return how many were."""
    floor = int(env_float("STOCK_FLOOR", 500)) if floor is None else floor
    if floor <= 0:
        return 0
    session = admin_session()
    products = session.get(URLS["inventory"] + "/api/products/", params={"page_size": 100}, timeout=10).json()[
        "results"
    ]
    restocked = 0
    for product in products[:100]:
        missing = floor - product.get("available", 0)
        if product.get("active", True) and missing > 0:
            response = post_waiting_out_limits(
                session,
                URLS["inventory"] + f"/api/products/{product['sku']}/restock/",
                json={"quantity": missing, "note": "load test: stock floor"},
                timeout=10,
            )
            response.raise_for_status()
            restocked += 1
    if restocked:
        echo(f"[load] restocked {restocked} product(s) up to {floor} units (STOCK_FLOOR)")
    return restocked


def restock_before_buying(environment, **_kwargs) -> None:
    """test_start listener for scenarios that buy: keep every shelf above STOCK_FLOOR."""
    if is_worker(environment):
        return
    try:
        ensure_stock()
    except Exception as exc:  # noqa: BLE001 — the run still tells what happens without enough stock
        print(f"[load] could not restock before the run: {exc}", flush=True)


def listen_restock() -> None:
    events.test_start.add_listener(restock_before_buying)


# ------------------------------------------------------------ final figures


def write_final_stats(environment, **_kwargs) -> None:
    """On quitting, write the run's final figures to LOAD_STATS_FILE (labctl load reads them).

    Locust's CSV is rewritten once a second and its JSON export empties the
    stats; this is the complete picture, taken once every request is in.
    """
    path = os.environ.get("LOAD_STATS_FILE")
    if not path or is_worker(environment):
        return
    stats = environment.stats
    entries = []
    for entry in list(stats.entries.values()):
        if not entry.num_requests and not entry.num_failures:
            continue
        entries.append(
            {
                "method": entry.method,
                "name": entry.name,
                "requests": entry.num_requests,
                "failures": entry.num_failures,
                "rps": round(entry.total_rps, 3),
                "avg_ms": round(entry.avg_response_time, 2),
                "p50_ms": entry.get_response_time_percentile(0.5),
                "p95_ms": entry.get_response_time_percentile(0.95),
                "p99_ms": entry.get_response_time_percentile(0.99),
                "min_ms": entry.min_response_time,
                "max_ms": entry.max_response_time,
            }
        )
    errors = [
        {"method": e.method, "name": e.name, "error": str(e.error), "occurrences": e.occurrences}
        for e in list(stats.errors.values())
    ]
    total = stats.total  # Locust's own "Aggregated" row: every entry above, the FLOW ones included
    aggregated = {
        "requests": total.num_requests,
        "failures": total.num_failures,
        "rps": round(total.total_rps, 3),
        "p50_ms": total.get_response_time_percentile(0.5),
        "p95_ms": total.get_response_time_percentile(0.95),
        "p99_ms": total.get_response_time_percentile(0.99),
    }
    measured = (stats.last_request_timestamp or 0) - (stats.start_time or 0)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(
            {"entries": entries, "aggregated": aggregated, "errors": errors, "seconds": round(max(measured, 0.0), 3)},
            handle,
            indent=2,
        )


events.quitting.add_listener(write_final_stats)
