"""Chaos timeline: shoppers keep buying while faults come and go on a schedule; then the audit.

The run (``--run-time``, default 120 s) follows this timeline, as shares of it:

====== ====== ===================================================================
from   to     fault
====== ====== ===================================================================
15 %   35 %   payment outage: payment_service answers 503 to everything
45 %   65 %   slow inventory: every inventory request waits CHAOS_DELAY_MS (400) ± 100 ms
72 %          worker kill: ``supervisorctl signal KILL worker`` (only if supervisor
              runs a ``worker`` program for the order service this run targets)
85 %          every fault cleared (each one also carries a TTL, so a run that dies
              leaves nothing broken for long)
====== ====== ===================================================================

A request that fails while a fault is active, or within ``CHAOS_GRACE``
seconds (default 15: a breaker's reset timeout and some retries) after it, in
the way that fault explains (503s and cancellations naming payment during the
outage, timeouts and inventory errors while it is slow, orders left unfinished
while the worker is down) is a success reported on its own row
``<name> [explained: <fault>]``. Anything else is a failure.

At the end of the run: every fault is cleared and the breakers reset, orders
the users left unfinished are settled (the same request again, then polling;
at most ``CHAOS_SETTLE_SECONDS``, default 60), the run waits for the order
service to have no saga in progress (same bound), and the audit checks the
invariants. A broken invariant prints its violations and makes the run exit
with 1.

Usage: labctl load --scenario chaos_timeline --users 20 --spawn-rate 5 --duration 2m
       SAGA_MODE=async labctl load --scenario chaos_timeline ...

Environment: CHAOS_DELAY_MS, CHAOS_GRACE, CHAOS_SETTLE_SECONDS, SAGA_MODE,
DECLINE_SHARE, THINK_TIME (default "0.5-1.5"), STOCK_FLOOR.
Expected failures: none that a fault does not explain; a clean audit.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import gevent
import requests
from locust import LoadTestShape, events, task

from common import IN_FLIGHT, SERVICES, TERMINAL, URLS, ShopUser, env_float, is_worker, listen_restock, think_time
from labhooks import SagaModeSwitch, lab_api

listen_restock()
SAGA_SWITCH = SagaModeSwitch(os.environ.get("SAGA_MODE", ""))
DEFAULT_DURATION = 120.0
GRACE = env_float("CHAOS_GRACE", 15.0)
SETTLE_SECONDS = min(max(env_float("CHAOS_SETTLE_SECONDS", 60.0), 5.0), 600.0)
INVENTORY_DELAY_MS = int(env_float("CHAOS_DELAY_MS", 400))
OUTAGE_STATUSES = {0, 502, 503, 504}


def _text(data: dict) -> str:
    """What an answer says about why it failed, lower-cased, to match against a fault."""
    history = data.get("history") or []
    parts = [
        data.get("code"),
        data.get("message"),
        data.get("status_reason"),
        history[-1].get("note") if history else None,
    ]
    return " ".join(str(p) for p in parts if p).lower()


# ------------------------------------------------------------- the timeline


@dataclass
class Fault:
    """One entry of the timeline: what to break, when, and which failures it explains."""

    label: str
    start: float  # share of the run
    end: float | None  # None: an instant action (a kill)
    inject: Callable
    clear: Callable | None
    explains: Callable[[str, int | None, dict], bool]
    notes: list[str] = field(default_factory=list)


def _put_fault(service: str, fault: dict, seconds: float):
    def inject(api):
        body = {**fault, "ttl_seconds": max(1, int(seconds + 30))}
        api.json("PUT", service, "/_lab/faults/", json=body)
        return f"{fault['kind']} fault {fault['id']} on {service}"

    return inject


def _delete_fault(service: str, fault_id: str):
    def clear(api):
        response = api.call("DELETE", service, f"/_lab/faults/{fault_id}/")
        return f"cleared {fault_id} on {service} (HTTP {response.status_code})"

    return clear


def _payment_explains(service: str, status: int | None, data: dict) -> bool:
    if service == "payment":
        return status in OUTAGE_STATUSES
    text = _text(data)
    return service == "order" and (status in OUTAGE_STATUSES or "payment" in text)


def _inventory_explains(service: str, status: int | None, data: dict) -> bool:
    text = _text(data)
    return (
        status in OUTAGE_STATUSES or status is None or "inventory" in text or "timed out" in text or "timeout" in text
    )


def _worker_explains(service: str, status: int | None, data: dict) -> bool:
    # A killed worker leaves accepted orders unfinished (a poll that gives up) until it is back.
    return service == "order" and (status is None or status in OUTAGE_STATUSES)


def kill_worker(api) -> str:
    """``supervisorctl signal KILL`` the order worker, when this run targets the supervised lab and it has one."""
    from labctl import config, supervisor

    paths = config.Paths(config.find_root())
    if URLS["order"] != config.SERVICE_BY_NAME["order"].url:
        return f"worker kill skipped: this run targets {URLS['order']}, not the lab supervisor runs"
    if not supervisor.is_running(paths):
        return "worker kill skipped: supervisord is not running"
    infos = supervisor.process_info(paths)
    names = [name for name, info in infos.items() if info.get("group") == "worker" or name == "worker"]
    if not names:
        return "worker kill skipped: supervisor has no program named worker (no async worker in this lab yet)"
    target = "worker" if "worker" in infos else "worker:*"
    result = supervisor.ctl(paths, "signal", "KILL", target, check=False, capture=True)
    return f"worker kill: supervisorctl signal KILL {target}: {result.stdout.strip()}"


def build_timeline(duration: float) -> list[Fault]:
    def seconds(a: float, b: float) -> float:
        return (b - a) * duration

    return [
        Fault(
            "payment outage",
            0.15,
            0.35,
            _put_fault("payment", {"id": "chaos-payment-outage", "kind": "outage"}, seconds(0.15, 0.35)),
            _delete_fault("payment", "chaos-payment-outage"),
            _payment_explains,
        ),
        Fault(
            "slow inventory",
            0.45,
            0.65,
            _put_fault(
                "inventory",
                {
                    "id": "chaos-slow-inventory",
                    "kind": "latency",
                    "delay_ms": INVENTORY_DELAY_MS,
                    "jitter_ms": min(100, INVENTORY_DELAY_MS),
                },
                seconds(0.45, 0.65),
            ),
            _delete_fault("inventory", "chaos-slow-inventory"),
            _inventory_explains,
        ),
        Fault("worker kill", 0.72, None, kill_worker, None, _worker_explains),
    ]


class Clock:
    """Seconds since this process saw the run start; every node keeps its own."""

    def __init__(self):
        self.started: float | None = None
        self.duration = DEFAULT_DURATION
        self.timeline: list[Fault] = build_timeline(self.duration)

    def start(self, duration: float) -> None:
        self.started = time.monotonic()
        self.duration = duration
        self.timeline = build_timeline(duration)

    def elapsed(self) -> float:
        return time.monotonic() - self.started if self.started is not None else 0.0

    def explaining(self) -> list[Fault]:
        """The faults active now or within GRACE seconds of ending (an instant one: GRACE + 30 s after)."""
        now = self.elapsed()
        active = []
        for fault in self.timeline:
            start = fault.start * self.duration
            end = (fault.end * self.duration if fault.end is not None else start + 30.0) + GRACE
            if start <= now <= end:
                active.append(fault)
        return active


CLOCK = Clock()


def run_duration(environment) -> float:
    options = getattr(environment, "parsed_options", None)
    run_time = getattr(options, "run_time", None)
    return float(run_time) if run_time else DEFAULT_DURATION


def _say(message: str) -> None:
    print(f"[chaos t={CLOCK.elapsed():5.1f}s] {message}", flush=True)


def play_timeline(duration: float) -> None:
    """Inject and clear the faults at their times (master or single process only)."""
    api = lab_api()
    actions = []
    for fault in CLOCK.timeline:
        actions.append((fault.start * duration, f"inject {fault.label}", fault.inject))
        if fault.clear:
            actions.append((fault.end * duration, f"clear {fault.label}", fault.clear))
    actions.append((0.85 * duration, "clear every fault", lambda api: clear_everything(api)))
    for at, what, action in sorted(actions, key=lambda a: a[0]):
        gevent.sleep(max(0.0, at - CLOCK.elapsed()))
        try:
            _say(f"{what}: {action(api)}")
        except Exception as exc:  # noqa: BLE001 — a failed action is printed in the timeline; the run goes on
            _say(f"{what} FAILED: {exc}")


def clear_everything(api) -> str:
    done = []
    for service in SERVICES:
        try:
            cleared = api.json("DELETE", service, "/_lab/faults/").get("cleared", 0)
            api.json("PUT", service, "/_lab/resilience/", json={"reset_breakers": True})
            done.append(f"{service}: {cleared} cleared")
        except Exception as exc:  # noqa: BLE001 — one unreachable service must not keep the others' faults on
            done.append(f"{service}: {exc}")
    return ", ".join(done)


# ---------------------------------------------------------- end of the run


def settle_in_flight(deadline: float) -> tuple[int, int]:
    """Send again every request whose order this process did not see finish, then poll it (bounded)."""
    session = requests.Session()
    settled = left = 0
    for number, (key, record) in enumerate(list(IN_FLIGHT.records.items())):
        if time.monotonic() > deadline:
            left += 1
            continue
        headers = {**record["headers"], "X-Request-ID": f"chaos-settle-{number}"}
        order = None
        try:
            response = session.request(
                record["method"], record["url"], json=record["body"], headers=headers, timeout=30
            )
            order = response.json() if response.headers.get("content-type", "").startswith("application/json") else None
            order_id = (order or {}).get("id") or record.get("order_id")
            for _ in range(120):  # ~60 s at most, and never past the deadline
                if order and order.get("status") in TERMINAL and order.get("saga_step") != "compensating":
                    break
                if not order_id or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
                order = session.get(f"{URLS['order']}/api/orders/{order_id}/", headers=headers, timeout=10).json()
        except (requests.RequestException, ValueError) as exc:
            print(f"[chaos] could not settle {key}: {exc}", flush=True)
        if order and order.get("status") in TERMINAL:
            settled += 1
            IN_FLIGHT.done(key)
        else:
            left += 1
    return settled, left


def sagas_in_progress(api) -> list[dict]:
    rows = api.all_pages("order", "/internal/reconciliation/orders/")
    return [o for o in rows if o["status"] not in TERMINAL and o.get("saga_step") not in (None, "", "none")]


def wait_until_quiet(api, deadline: float) -> list[dict]:
    """Wait (bounded) until the order service runs no saga; return those still running at the deadline."""
    running = sagas_in_progress(api)
    while running and time.monotonic() < deadline:
        time.sleep(2)
        running = sagas_in_progress(api)
    return running


def _retrying(action, attempts: int = 3):
    """``action()``, tried again after a connection that dropped (a keep-alive closed under it)."""
    from labctl.labapi import LabApiError

    for attempt in range(1, attempts + 1):
        try:
            return action()
        except LabApiError as exc:
            if "unreachable" not in str(exc) or attempt == attempts:
                raise
            time.sleep(1)


RESULT: dict = {}


@events.test_start.add_listener
def _on_start(environment, **_kwargs):
    CLOCK.start(run_duration(environment))
    if is_worker(environment):
        return
    SAGA_SWITCH.apply()
    plan = ", ".join(
        f"{f.label} at {f.start * CLOCK.duration:.0f}s"
        + (f"-{f.end * CLOCK.duration:.0f}s" if f.end is not None else "")
        for f in CLOCK.timeline
    )
    _say(f"timeline over {CLOCK.duration:.0f}s: {plan}; everything cleared at {0.85 * CLOCK.duration:.0f}s")
    RESULT["timeline"] = gevent.spawn(play_timeline, CLOCK.duration)


@events.test_stop.add_listener
def _on_stop(environment, **_kwargs):
    deadline = time.monotonic() + SETTLE_SECONDS
    if not is_worker(environment):
        timeline = RESULT.pop("timeline", None)
        if timeline is not None:
            timeline.kill(block=True, timeout=5)
        api = lab_api()
        _say(f"end of the run: {clear_everything(api)}")
    if IN_FLIGHT.records:  # only where users ran: a single process or a worker
        settled, left = settle_in_flight(deadline)
        _say(f"settled {settled} unfinished order(s)" + (f", {left} still unfinished" if left else ""))
    if is_worker(environment):
        return
    from labctl.audit import render, run_audit

    try:
        running = _retrying(lambda: wait_until_quiet(lab_api(), deadline))
        if running:
            _say(
                f"{len(running)} saga(s) still in progress after {SETTLE_SECONDS:.0f}s: "
                + ", ".join(f"{o['id']}@{o.get('saga_step')}" for o in running[:20])
            )
        SAGA_SWITCH.restore()
        result = _retrying(lambda: run_audit(lab_api()))
    except Exception as exc:  # noqa: BLE001 — the run's verdict says the audit could not run
        cause = f" ({exc.__cause__!r})" if exc.__cause__ else ""
        print(f"[chaos] the audit could not run: {exc}{cause}", flush=True)
        environment.process_exit_code = 1
        RESULT["audit"] = {"ok": False, "error": str(exc)}
        return
    print(render(result), flush=True)
    RESULT["audit"] = result
    if not result["ok"]:
        environment.process_exit_code = 1


@events.quitting.add_listener
def _on_quit(environment, **_kwargs):
    audit = RESULT.get("audit")
    if audit is not None and not audit.get("ok"):
        environment.process_exit_code = 1
    if audit is not None and os.environ.get("CHAOS_AUDIT_FILE"):
        with open(os.environ["CHAOS_AUDIT_FILE"], "w", encoding="utf-8") as handle:
            json.dump(audit, handle, indent=2, default=str)


# ------------------------------------------------------------------ users


class ChaosShopper(ShopUser):
    """A shopper who buys more than most, so faults on the way to a sale show."""

    wait_time = think_time("0.5-1.5")

    def explain(self, response, data, service):
        status = response.status_code if response is not None else None
        for fault in CLOCK.explaining():
            if fault.explains(service, status, data or {}):
                return fault.label
        return None

    @task(25)
    def list_products(self):
        self.browse_list()

    @task(15)
    def product_detail(self):
        self.browse_detail()

    @task(5)
    def my_orders(self):
        self.view_orders()

    @task(5)
    def cart(self):
        super().cart()

    @task(25)
    def checkout(self):
        self.place_order()

    @task(3)
    def cancel_confirmed_order(self):
        self.cancel_confirmed()


class ChaosShape(LoadTestShape):
    """``--users`` shoppers (default 20) for ``--run-time`` (default 120 s), then the end-of-run checks."""

    use_common_options = True

    def tick(self):
        options = getattr(self.runner.environment, "parsed_options", None)
        users = getattr(options, "num_users", None) or 20
        spawn_rate = getattr(options, "spawn_rate", None) or users
        if self.get_run_time() >= run_duration(self.runner.environment):
            return None
        return (users, spawn_rate)
