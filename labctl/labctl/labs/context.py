"""How a lab's checks and solves see and touch the running lab: over HTTP only, like a student.

Three identities, each for what it may do:

- the lab admin's service identity (:class:`labctl.labapi.LabApi`) for
  ``/_lab/`` (faults, switches, saga mode), ``/health/`` and the audit;
- a staff user's access token (``staff_token``) to read every customer's
  orders and payments through the public APIs;
- customers of its own that a solve registers, as a student would with curl.

Checks call only the reading methods; solves may change the lab. Every
failure to reach a service becomes a :class:`~labctl.labs.model.CheckError`
whose message says which service and why.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import requests

from chassis import parts

from .. import config
from ..labapi import LabApi, LabApiError
from .model import CheckError, SolveError

SERVICES = parts.SERVICE_NAMES
APPROVED_CARD = "4242424242424242"
DECLINED_CARD = "4000000000000002"
TERMINAL = ("CONFIRMED", "CANCELLED", "SHIPPED", "DELIVERED")
# Every worker process of a service follows a change of its lab state within a second.
SPREAD_SECONDS = 1.1
WORKER_PROGRAM = config.WORKERS[0].short  # the order service's Celery worker, as supervisord names it

_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_time(value: str | None) -> float | None:
    """An ISO 8601 time from an API as a Unix timestamp (None for None)."""
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, tz=UTC).isoformat(timespec="milliseconds")


class Metrics:
    """One scrape of a service's ``/metrics`` (Prometheus text)."""

    def __init__(self, text: str):
        self.samples: list[tuple[str, dict, float]] = []
        for line in text.splitlines():
            match = _SAMPLE.match(line.strip())
            if match and not line.startswith("#"):
                try:
                    value = float(match["value"])
                except ValueError:
                    continue
                self.samples.append((match["name"], dict(_LABEL.findall(match["labels"] or "")), value))

    def total(self, name: str, **labels: str) -> float:
        """The sum of the samples of ``name`` whose labels include ``labels``."""
        return sum(
            v for n, found, v in self.samples if n == name and all(found.get(k) == want for k, want in labels.items())
        )


class Customer:
    """A shopper a solve registers and uses, through the public APIs."""

    def __init__(self, ctx: LabContext, email: str, token: str):
        self.ctx = ctx
        self.email = email
        self.session = requests.Session()
        self.session.headers.update({"Authorization": f"Bearer {token}", "Connection": "close"})
        self.card = ""
        self.password = ""

    def remembered(self) -> dict:
        """What :meth:`LabContext.login` needs to log this customer in again, in a later request."""
        return {"email": self.email, "password": self.password, "card": self.card}

    def call(self, method: str, service: str, path: str, *, timeout: float = 60, **kwargs) -> requests.Response:
        try:
            return self.session.request(method, self.ctx.urls[service] + path, timeout=timeout, **kwargs)
        except requests.RequestException as exc:
            raise SolveError(f"{service} did not answer {method} {path}: {type(exc).__name__}") from exc

    def add_card(self, number: str = APPROVED_CARD) -> str:
        response = self.call(
            "POST",
            "payment",
            "/api/payment-methods/",
            json={"card_number": number, "exp_month": 12, "exp_year": 2035, "cvc": "123"},
        )
        if response.status_code != 201:
            raise SolveError(f"payment refused the card ({response.status_code}): {response.text[:200]}")
        self.card = response.json()["token"]
        return self.card

    def order(
        self, sku: str, quantity: int = 1, *, card: str | None = None, key: str | None = None, timeout: float = 60
    ) -> requests.Response:
        """POST one order (sync mode answers with its final state); the response, whatever it is."""
        return self.call(
            "POST",
            "order",
            "/api/orders/",
            timeout=timeout,
            json={"lines": [{"sku": sku, "quantity": quantity}], "payment_method": card or self.card},
            headers={"Idempotency-Key": key or f"lab-{uuid.uuid4().hex}"},
        )


class LabContext:
    """The running lab as a lab's checks and solves see it.

    ``urls`` names every service's base URL and the dashboard's
    (``"dashboard"``, for its trace API); ``staff_token`` returns a staff
    user's access token (called when needed, so it may log in lazily).
    ``progress`` is the student's record of this lab, set by the engine
    before each check, so a check can use what earlier steps observed.

    ``kill_worker`` and ``start_worker`` do to the order service's Celery
    worker what the process manager can (each returns a sentence saying what
    was done). Left out, they go through supervisord (``labctl.process``), as
    the Faults page's “Kill the worker” does under ``make up``; a lab started
    another way (the tests' lab) passes its own.

    ``scale`` restarts one service with N gunicorn worker processes (None: its
    default) and ``service_workers`` counts the worker processes that really
    run now (None: not known). Left out, they go through ``labctl scale``
    (supervisord) and ``/proc``; the tests' lab passes its own.
    """

    def __init__(
        self,
        *,
        api: LabApi,
        urls: dict[str, str],
        staff_token: Callable[[], str],
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        kill_worker: Callable[[], str] | None = None,
        start_worker: Callable[[], str] | None = None,
        scale: Callable[[str, int | None], str] | None = None,
        service_workers: Callable[[str], int | None] | None = None,
    ):
        self.api = api
        self.urls = urls
        self._staff_token = staff_token
        self.clock = clock
        self.sleep = sleep
        self._kill_worker = kill_worker
        self._start_worker = start_worker
        self._scale = scale
        self._service_workers = service_workers
        self.progress: dict = {}
        self._staff: requests.Session | None = None

    # --- what the engine tells a check ------------------------------------------------

    @property
    def started_at(self) -> float:
        """When the student started this lab (its first check); the window a check looks in."""
        return parse_time(self.progress.get("started_at")) or 0.0

    def observed(self, step_key: str) -> dict:
        """What step ``step_key``'s check measured when it last passed (empty if it has not)."""
        return dict((self.progress.get("steps", {}).get(step_key) or {}).get("observed") or {})

    @property
    def state(self) -> dict:
        """What a solve keeps for a later one (a customer's login...), saved with the progress."""
        return self.progress.setdefault("state", {})

    def passed_at(self, step_key: str) -> float | None:
        return parse_time((self.progress.get("steps", {}).get(step_key) or {}).get("passed_at"))

    def since_passed(self, step_key: str) -> float:
        """When step ``step_key`` last passed, else the lab's start: where the next step's evidence begins."""
        return self.passed_at(step_key) or self.started_at

    def figure(self, step_key: str, key: str):
        """The figure ``key`` step ``step_key``'s check recorded; a question asked before it raises CheckError."""
        value = self.observed(step_key).get(key)
        if value in (None, ""):
            raise CheckError(f"pass step “{step_key}” first")
        return value

    # --- the lab admin's surfaces ---------------------------------------------------------

    def admin(self, method: str, service: str, path: str, **kwargs):
        try:
            return self.api.json(method, service, path, **kwargs)
        except LabApiError as exc:
            raise CheckError(str(exc)) from exc

    def health(self, service: str) -> tuple[int | None, dict]:
        """``(status, body)`` of ``service``'s ``/health/``; ``(None, {})`` when it does not answer."""
        try:
            response = requests.get(self.urls[service] + "/health/", timeout=5)
        except requests.RequestException:
            return None, {}
        try:
            return response.status_code, response.json()
        except ValueError:
            return response.status_code, {}

    def faults(self, service: str) -> list[dict]:
        return self.admin("GET", service, "/_lab/faults/")["faults"]

    def resilience(self, service: str) -> dict:
        return self.admin("GET", service, "/_lab/resilience/")

    def breaker(self, service: str, peer: str) -> dict:
        return self.resilience(service)["breakers"][peer]

    def saga(self) -> dict:
        return self.admin("GET", "order", "/_lab/saga/")

    def metrics(self, service: str) -> Metrics:
        try:
            response = requests.get(self.urls[service] + "/metrics", timeout=10)
        except requests.RequestException as exc:
            raise CheckError(f"{service}'s /metrics did not answer: {type(exc).__name__}") from exc
        if response.status_code != 200:
            raise CheckError(f"{service}'s /metrics answered {response.status_code}")
        return Metrics(response.text)

    def audit(self) -> dict:
        from ..audit import run_audit

        try:
            return run_audit(self.api)
        except LabApiError as exc:
            raise CheckError(f"the audit could not read the services: {exc}") from exc

    # --- a staff user's reads -------------------------------------------------------------

    def staff(self, method: str, service: str, path: str, **kwargs) -> requests.Response:
        if self._staff is None:
            self._staff = requests.Session()
            self._staff.headers.update({"Authorization": f"Bearer {self._staff_token()}", "Connection": "close"})
        try:
            return self._staff.request(method, self.urls[service] + path, timeout=10, **kwargs)
        except requests.RequestException as exc:
            raise CheckError(f"{service} did not answer {method} {path}: {type(exc).__name__}") from exc

    def staff_json(self, service: str, path: str, **params) -> dict:
        response = self.staff("GET", service, path, params=params)
        if response.status_code != 200:
            raise CheckError(f"{service} answered {response.status_code} to GET {path}: {response.text[:160]}")
        return response.json()

    def orders_since(self, since: float | None = None, *, limit: int = 500) -> list[dict]:
        """Every customer's orders created since ``since`` (default: the lab's start), newest first."""
        since = self.started_at if since is None else since
        found, page = [], 1
        while len(found) < limit and page <= 20:
            body = self.staff_json("order", "/api/orders/", page=page, page_size=100)
            for order in body.get("results", []):
                if (parse_time(order.get("created_at")) or 0) < since:
                    return found
                found.append(order)
            if not body.get("next"):
                break
            page += 1
        return found

    def order(self, order_id: int) -> dict:
        return self.staff_json("order", f"/api/orders/{order_id}/")

    def product(self, sku: str) -> dict:
        return self.staff_json("inventory", f"/api/products/{sku}/")

    # --- the dashboard's trace API --------------------------------------------------------

    def traces(self, **params) -> list[dict]:
        try:
            response = requests.get(self.urls["dashboard"] + "/api/traces/", params=params, timeout=10)
            response.raise_for_status()
        except (requests.RequestException, KeyError) as exc:
            raise CheckError(f"the dashboard's trace API did not answer: {exc}") from exc
        return response.json().get("results", [])

    def trace(self, trace_id: str) -> dict:
        try:
            response = requests.get(f"{self.urls['dashboard']}/api/traces/{trace_id}/", timeout=10)
        except requests.RequestException as exc:
            raise CheckError(f"the dashboard's trace API did not answer: {type(exc).__name__}") from exc
        if response.status_code != 200:
            raise CheckError(f"trace {trace_id} is not in the dashboard's collector ({response.status_code})")
        return response.json()

    # --- load runs (the Load page's and labctl load's, under var/loadtests/) ---------------

    def finished_run(self, scenario: str, since: float) -> dict | None:
        """The newest run of ``scenario`` started since ``since`` that has finished (its summary written)."""
        return next((run for run in self.load_runs(scenario, since=since) if run.get("summary")), None)

    def running_run(self, scenario: str, since: float) -> dict | None:
        """The newest run of ``scenario`` started since ``since`` that is starting or running."""
        return next((r for r in self.load_runs(scenario, since=since) if r["state"] in ("starting", "running")), None)

    def load_runs(self, scenario: str, *, since: float | None = None) -> list[dict]:
        """Runs of ``scenario`` against this lab's services started since ``since`` (default: the lab's
        start), newest first, each ``run_status`` (state, parameters, and ``summary`` once finished)."""
        from .. import load

        since = self.started_at if since is None else since
        found = []
        for run in load.list_runs(self.api.paths, limit=40):
            urls = (run.get("parameters") or {}).get("urls") or {}
            if run.get("scenario") != scenario or urls.get("order", "").rstrip("/") != self.urls["order"]:
                continue
            if (parse_time(run.get("started_at")) or 0) < since:
                break
            found.append(load.run_status(run["run_id"], self.api.paths, history_points=600))
        return found

    def run_load(
        self,
        scenario: str,
        *,
        users: int,
        duration: str,
        spawn_rate: float = 2,
        env: dict[str, str] | None = None,
        timeout: float = 400,
        wait_for_others: float = 0,
    ) -> dict:
        """Start a run as the Load page does (against this lab's services) and wait for its end; its status.

        ``env``: what the page's step fields and think time give the locustfile (``STEPS``, ``THINK_TIME``...).
        ``wait_for_others``: how long to wait, if another run is still going (one at a time), for it to end.
        """
        from .. import load

        spec = load.RunSpec(
            scenario=scenario,
            users=users,
            spawn_rate=spawn_rate,
            duration=duration,
            urls={service: self.urls[service] for service in SERVICES},
            env=dict(env or {}),
        )
        others_until = time.monotonic() + wait_for_others
        while True:
            try:
                run_id = load.start_run(spec, self.api.paths)
                break
            except load.LoadError as exc:
                if "one run at a time" not in str(exc) or time.monotonic() > others_until:
                    raise SolveError(f"the load run did not start: {exc}") from exc
            self.sleep(3)
        deadline = time.monotonic() + timeout
        dead_since = None
        while time.monotonic() < deadline:
            status = load.run_status(run_id, self.api.paths)
            if status.get("summary") or status["state"] in ("finished", "failed", "stopped"):
                return status
            # "died" is read from the processes' command lines: believe it only when it lasts.
            dead_since = (dead_since or time.monotonic()) if status["state"] == "died" else None
            if dead_since and time.monotonic() - dead_since > 20:
                raise SolveError(f"load run {run_id} died before its end; see var/loadtests/{run_id}/")
            self.sleep(2)
        load.stop_run(run_id, self.api.paths)
        raise SolveError(f"load run {run_id} was still running after {timeout:.0f} s; asked it to stop")

    # --- what solves (and the reset) do ---------------------------------------------------

    def add_fault(self, service: str, **fault) -> dict:
        added = self.admin("PUT", service, "/_lab/faults/", json=fault)["added"]
        self.sleep(SPREAD_SECONDS)
        return added

    def clear_faults(self, *services: str) -> None:
        for service in services or SERVICES:
            self.admin("DELETE", service, "/_lab/faults/")
        self.sleep(SPREAD_SECONDS)

    def set_switches(self, service: str, **changes) -> dict:
        body = self.admin("PUT", service, "/_lab/resilience/", json=changes)
        self.sleep(SPREAD_SECONDS)
        return body

    def set_saga(self, **changes) -> dict:
        body = self.admin("PUT", "order", "/_lab/saga/", json=changes)
        self.sleep(SPREAD_SECONDS)
        return body

    def restore_defaults(self) -> None:
        """Every fault cleared, every switch at its default, every breaker closed, the saga sync; then what an
        unsafe switch took twice refunded (:meth:`repair_money`)."""
        for service in SERVICES:
            self.admin("DELETE", service, "/_lab/faults/")
            self.admin("DELETE", service, "/_lab/resilience/")
        self.admin("DELETE", "order", "/_lab/saga/")
        self.sleep(SPREAD_SECONDS)
        try:
            self.repair_money()
        except CheckError:
            pass  # a service does not answer: the steady-state check that follows a reset says which

    def repair_money(self) -> list[int]:
        """Refund the captures no order accounts for (a charge taken twice under an unsafe switch), for each
        order the audit's money checks name; their ids. The saga's own records are left as they are."""
        from ..audit import money_orders

        orders = money_orders(self.audit())
        if orders:
            self.admin("POST", "order", "/_lab/repair/", json={"order_ids": orders})
        return orders

    def kill_worker(self) -> str:
        """SIGKILL the order service's Celery worker, mid-task if it is busy; what was done.

        Under ``make up`` supervisord's autorestart starts it again within seconds.
        """
        if self._kill_worker is not None:
            return self._kill_worker()
        from .. import process

        if not self._supervised():
            raise SolveError(
                f"this lab's order service is {self.urls.get('order')}, not the one supervisord runs "
                f"({config.SERVICE_BY_NAME['order'].url}): its worker is not supervisord's to kill"
            )
        try:
            return "; ".join(process.process_fault(self.api.paths, program=WORKER_PROGRAM, action="kill"))
        except process.ProcessFaultError as exc:
            raise SolveError(f"could not kill the worker: {exc}") from exc

    def start_worker(self) -> str:
        """Start the order service's Celery worker if it is not running (part of a reset); what was done."""
        if self._start_worker is not None:
            return self._start_worker()
        from .. import process, supervisor

        if not self._supervised() or not supervisor.is_running(self.api.paths):
            return "no supervisord runs this lab's worker: nothing to start"
        try:
            return "; ".join(process.start(self.api.paths, WORKER_PROGRAM)) or "the worker runs"
        except process.ProcessFaultError as exc:
            raise SolveError(f"could not start the worker: {exc}") from exc

    def service_workers(self, service: str) -> int | None:
        """How many gunicorn worker processes ``service`` runs now (its master's children); None if unknown."""
        if self._service_workers is not None:
            return self._service_workers(service)
        if not self._supervised():
            return None
        from .. import scale

        try:
            return scale.running_workers(self.api.paths).get(service)
        except (OSError, scale.ScaleError) as exc:
            raise CheckError(f"could not count {service}'s workers: {exc}") from exc

    def scale(self, service: str, workers: int | None) -> str:
        """Restart ``service`` with ``workers`` gunicorn workers (None: the default), as ``labctl scale`` does;
        returns once it is healthy again, with what was done."""
        if self._scale is not None:
            return self._scale(service, workers)
        from .. import scale, supervisor

        if not self._supervised() or not supervisor.is_running(self.api.paths):
            if workers is None:  # a reset: nothing of supervisord's to scale back
                return "no supervisord runs this lab's services: nothing to scale back"
            raise SolveError(
                f"this lab's services are not the ones supervisord runs ({config.SERVICE_BY_NAME['order'].url}): "
                "scale them the way they were started"
            )
        said: list[str] = []
        try:
            code = scale.apply_scale(self.api.paths, {service: workers}, echo=said.append)
        except scale.ScaleError as exc:
            raise SolveError(f"could not scale {service}: {exc}") from exc
        if code != 0:
            raise SolveError(f"{service} did not come back healthy: " + " ".join(said)[-300:])
        return said[0] if said else f"{service} already runs that many workers"

    def _supervised(self) -> bool:
        """Whether these URLs reach the lab supervisord runs (never touch another lab's processes)."""
        return self.urls.get("order", "").rstrip("/") == config.SERVICE_BY_NAME["order"].url

    def new_customer(self, *, card: str | None = APPROVED_CARD) -> Customer:
        """Register and log in a fresh customer (with a saved card unless ``card`` is None)."""
        email = f"lab-{uuid.uuid4().hex[:12]}@lab.local"
        password = f"Lab-{uuid.uuid4().hex[:12]}!"
        try:
            created = requests.post(
                self.urls["user"] + "/api/auth/register/",
                timeout=10,
                json={"email": email, "password": password, "name": "Lab Student"},
            )
            login = requests.post(
                self.urls["user"] + "/api/auth/login/", timeout=10, json={"email": email, "password": password}
            )
        except requests.RequestException as exc:
            raise SolveError(f"user_service did not answer: {type(exc).__name__}") from exc
        if created.status_code != 201 or login.status_code != 200:
            raise SolveError(f"could not register a customer: {created.status_code} {login.text[:160]}")
        customer = Customer(self, email, login.json()["access"])
        customer.password = password
        if card:
            customer.add_card(card)
        return customer

    def lab_customer(self) -> Customer:
        """The customer this lab's solves share: registered (with a card) once, then logged in again.

        It is remembered in the progress (``state``), so a solve in a later
        request, or after a fault that stops payment from saving cards, finds it.
        """
        saved = self.state.get("customer")
        if saved is None:
            customer = self.new_customer()
            self.state["customer"] = customer.remembered()
            return customer
        return self.login(saved["email"], saved["password"], card=saved["card"])

    def login(self, email: str, password: str, *, card: str = "") -> Customer:
        """Log in a customer registered earlier (``card``: the token of a card it saved)."""
        try:
            response = requests.post(
                self.urls["user"] + "/api/auth/login/", timeout=10, json={"email": email, "password": password}
            )
        except requests.RequestException as exc:
            raise SolveError(f"user_service did not answer: {type(exc).__name__}") from exc
        if response.status_code != 200:
            raise SolveError(f"{email} could not log in: {response.status_code} {response.text[:160]}")
        customer = Customer(self, email, response.json()["access"])
        customer.password = password
        customer.card = card
        return customer

    def in_stock_sku(self, quantity: int = 1) -> str:
        """The sku of an active product with the most stock (the catalog is public)."""
        try:
            body = requests.get(self.urls["inventory"] + "/api/products/", params={"page_size": 100}, timeout=10).json()
        except (requests.RequestException, ValueError) as exc:
            raise SolveError(f"inventory's catalog did not answer: {exc}") from exc
        products = [p for p in body.get("results", []) if p.get("active") and p.get("available", 0) >= quantity]
        if not products:
            raise SolveError("nothing in stock to order: restock a product first")
        return max(products, key=lambda p: p["available"])["sku"]


def history_seconds(order: dict) -> float:
    """How long the order's saga ran: from its first history entry to its last."""
    times = [parse_time(h.get("at")) for h in order.get("history", []) if h.get("at")]
    return (max(times) - min(times)) if len(times) > 1 else 0.0


def request_seconds(order: dict) -> float:
    """How long the checkout ran in its own request: to the saga's pause if it paused, else to its last entry.

    A paused saga is resumed by the worker, which appends its own entries
    (``queued``, ``waiting``…) later: those are not the customer's wait.
    """
    history = order.get("history") or []
    pause = next((h for h in history if h.get("step") == "paused"), None)
    if pause is None or not history:
        return history_seconds(order)
    return (parse_time(pause["at"]) or 0) - (parse_time(history[0]["at"]) or 0)
