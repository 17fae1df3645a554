"""Chaos: hundreds of orders while faults rotate across every service, then the audit must find nothing wrong.

Eight customers order concurrently (one with a card that is declined, one
with a card short of funds, one product almost sold out) while a rotation
injects a new fault every few seconds on user, order, inventory or payment:
latency, errors at p=0.2, short outages, failing or slow databases, failing
or delayed dependencies. The first half runs the saga in the request (sync)
and SIGKILLs one gunicorn worker of the order service half-way (its master
starts another); the second half, when the harness can run the order service's Celery worker,
runs it in the worker (async) and SIGKILLs that worker mid-run, then starts
it again. Then every fault is cleared, every order is brought to its end
(a replay of the same request resumes a paused saga; the worker finishes the
async ones), and the audit checks the invariants of docs/architecture.md over every
service's own data: no violation, every order terminal, no payment captured twice.
"""

from __future__ import annotations

import collections
import json
import random
import subprocess
import sys
import threading
import time

import pytest

from labctl import audit
from labctl.labapi import LabApiError

from .conftest_lab import SERVICES, SPREAD_SECONDS, TERMINAL, Shopper
from .harness import ROOT, Lab
from .harness import SERVICES as SERVICE_DIRS

MIN_ORDERS = 200
PHASE_SECONDS = 15  # each phase places its orders over about this long, so that they meet many faults
SLOT_SECONDS = 2  # how long each fault of the rotation lasts
# A checkout whose request died mid-saga (say, under the order database fault)
# keeps its request lease (ORDER_SAGA_LEASE_SECONDS of the order service, 120 s
# by default; WORKER_ENV shortens only the worker's task lease): nobody may resume it
# before that lease ends. Settling must outlast it, or such an order is still
# PENDING when the test gives up, and the next audit sees it past its deadline.
REQUEST_LEASE_SECONDS = 120
SETTLE_SECONDS = REQUEST_LEASE_SECONDS + 45
CAN_RUN_WORKER = hasattr(Lab, "start_worker")
# As in test_async_saga: a killed worker's sagas come back within seconds, not minutes.
WORKER_TASK_LEASE_SECONDS = 8
WORKER_ENV = {
    "ORDER_SAGA_TASK_LEASE_SECONDS": str(WORKER_TASK_LEASE_SECONDS),
    "ORDER_SAGA_RETRY_BACKOFF_SECONDS": "0.5",
    "ORDER_SAGA_RETRY_BACKOFF_MAX_SECONDS": "3",
    "ORDER_SHIPPING_AFTER_SECONDS": "3600",
}
BEAT_ENV = {"ORDER_RECOVERY_INTERVAL_SECONDS": "2"}
# Mid-way through the sync phase one gunicorn worker of this service is SIGKILLed: the sagas it
# was running in requests stop wherever they were, and its master starts a new worker.
KILLED_SERVICE = "order"

ROTATION = [
    ("inventory", {"kind": "latency", "delay_ms": 250, "jitter_ms": 100}),
    ("payment", {"kind": "error", "status": 503, "probability": 0.2}),
    ("order", {"kind": "dependency", "target": "payment", "mode": "fail", "probability": 0.5}),
    ("user", {"kind": "outage"}),
    ("inventory", {"kind": "error", "status": 502, "probability": 0.2}),
    ("payment", {"kind": "outage"}),
    ("order", {"kind": "latency", "delay_ms": 150, "probability": 0.5}),
    ("inventory", {"kind": "outage"}),
    ("order", {"kind": "dependency", "target": "inventory", "mode": "delay", "delay_ms": 200}),
    ("payment", {"kind": "database", "mode": "fail", "probability": 0.3}),
    ("order", {"kind": "database", "mode": "fail", "probability": 0.2}),
    ("inventory", {"kind": "database", "mode": "slow", "delay_ms": 150}),
    ("payment", {"kind": "latency", "delay_ms": 300, "jitter_ms": 100, "probability": 0.5}),
    ("order", {"kind": "error", "status": 500, "probability": 0.2, "path_prefix": "/api/orders/"}),
]


class Rotation(threading.Thread):
    """Injects the next fault of :data:`ROTATION` every :data:`SLOT_SECONDS`, clearing the previous one."""

    def __init__(
        self,
        admin,
        *,
        first_slot: int = 0,
        kill_worker_at: float | None = None,
        kill_service_worker_at: float | None = None,
        lab=None,
    ):
        super().__init__(daemon=True)
        self.slot = first_slot
        self.admin, self.lab = admin, lab
        self.kill_worker_at = kill_worker_at  # monotonic time of the Celery worker's SIGKILL, if any
        # ... and of the SIGKILL of one gunicorn worker of KILLED_SERVICE, if any
        self.kill_service_worker_at = kill_service_worker_at
        self.stop = threading.Event()
        self.log: list[str] = []
        self.errors: list[str] = []
        self.kinds: collections.Counter = collections.Counter()
        self.worker_kills = 0
        self.service_worker_kills = 0

    def run(self):
        current = None
        while not self.stop.is_set():
            try:
                if current:
                    self.admin.api.json("DELETE", current[0], f"/_lab/faults/{current[1]}/")
                    current = None
                service, fault = ROTATION[self.slot % len(ROTATION)]
                added = self.admin.add_fault(service, spread=False, ttl_seconds=30, **fault)
                current = (service, added["id"])
                self.kinds[(service, fault["kind"])] += 1
                self.log.append(f"{time.strftime('%H:%M:%S')} {service} {fault}")
            except LabApiError as exc:  # an outage never hides /_lab/, so this is a real failure
                self.errors.append(str(exc))
            self.slot += 1
            if self.kill_worker_at is not None and time.monotonic() >= self.kill_worker_at:
                self.kill_worker_at = None
                self._kill_worker()
            if self.kill_service_worker_at is not None and time.monotonic() >= self.kill_service_worker_at:
                self.kill_service_worker_at = None
                self._kill_service_worker()
            self.stop.wait(SLOT_SECONDS)
        if current:
            try:
                self.admin.api.json("DELETE", current[0], f"/_lab/faults/{current[1]}/")
            except LabApiError as exc:
                self.errors.append(str(exc))

    def _kill_worker(self):
        try:
            self.lab.kill_worker()  # SIGKILL to the worker and its pool, mid-task
            self.worker_kills += 1
            self.log.append(f"{time.strftime('%H:%M:%S')} worker SIGKILLed")
            time.sleep(1)
            self.lab.start_worker(env=WORKER_ENV)
            self.log.append(f"{time.strftime('%H:%M:%S')} worker started again")
        except Exception as exc:  # noqa: BLE001 — reported by the test, not lost in a thread
            self.errors.append(f"worker kill/restart: {exc!r}")

    def _kill_service_worker(self):
        try:
            pid = self.lab.kill_service_worker(KILLED_SERVICE)  # its requests in flight die with it
            self.service_worker_kills += 1
            self.log.append(f"{time.strftime('%H:%M:%S')} {KILLED_SERVICE} gunicorn worker {pid} SIGKILLed, replaced")
        except Exception as exc:  # noqa: BLE001 — reported by the test, not lost in a thread
            self.errors.append(f"{KILLED_SERVICE} worker kill: {exc!r}")


def _shop(shoppers: list[Shopper], skus: list[str], *, count: int, seconds: float, errors: list[str]) -> None:
    """The shoppers place ``count`` orders in all, concurrently, spread over about ``seconds``."""
    pause = seconds * len(shoppers) / count
    share = [count // len(shoppers) + (1 if i < count % len(shoppers) else 0) for i in range(len(shoppers))]

    def shop(shopper: Shopper, orders: int, rng: random.Random):
        for _ in range(orders):
            started = time.monotonic()
            try:
                shopper.order(rng.choice(skus), quantity=rng.choice((1, 1, 2)), timeout=45)
            except Exception as exc:  # noqa: BLE001 — the request is kept; a replay settles it later
                errors.append(f"{type(exc).__name__}: {exc}")
            time.sleep(max(0.0, pause - (time.monotonic() - started)) * rng.uniform(0.5, 1.5))

    threads = [
        threading.Thread(target=shop, args=(s, n, random.Random(i)), daemon=True)
        for i, (s, n) in enumerate(zip(shoppers, share, strict=True))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + 120)
    assert not any(thread.is_alive() for thread in threads), "a shopper is still waiting for an answer"


def _settle(shoppers: list[Shopper], *, timeout: float) -> dict[int, dict]:
    """Bring every placed order to its end: replay what is not terminal (same key, same body), poll the rest.

    A replay creates an order whose first request failed before anything was
    written, resumes a sync saga paused by an outage, and re-queues an async
    one; the worker finishes those. Returns every order by id.
    """
    deadline = time.monotonic() + timeout
    while True:
        pending = [p for s in shoppers for p in s.placed if p["data"].get("status") not in TERMINAL]
        for shopper in shoppers:
            for placed in [p for p in shopper.placed if p in pending]:
                if "id" not in placed["data"] or placed.get("replayed_at", 0) < time.monotonic() - 5:
                    shopper.replay(placed, timeout=45)
                    placed["replayed_at"] = time.monotonic()
                else:  # queued again for the worker a moment ago: watch it
                    response = shopper.api.get("order", f"/api/orders/{placed['data']['id']}/")
                    if response.status_code == 200:
                        placed["data"] = response.json()
        pending = [p for p in pending if p["data"].get("status") not in TERMINAL]
        if not pending or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert not pending, "not terminal after the faults were cleared: " + "; ".join(
        f"{p['status_code']} {p['data'].get('id')} {p['data'].get('status')}/{p['data'].get('saga_step')}"
        for p in pending[:20]
    )
    return {p["data"]["id"]: p["data"] for s in shoppers for p in s.placed}


def _order_settings(lab, env: dict[str, str], names) -> dict:
    """The order service's settings ``names`` as a process started with ``env`` (the worker, say) reads them."""
    script = (
        "import json; from django.conf import settings; "
        f"print(json.dumps({{name: getattr(settings, name, None) for name in {sorted(names)!r}}}))"
    )
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", script],
        cwd=ROOT / SERVICE_DIRS["order"][0],
        env={**lab.envs["order"], **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_worker_and_beat_env_set_settings_the_order_service_reads(lab):
    """Ensure every variable WORKER_ENV and BEAT_ENV set is a setting of the order service that takes effect,
    and the worker's task lease (the one a killed worker's sagas wait out) is the short one: with a misspelt
    or wrong name it would stay at its default of 30 s."""
    for env in (WORKER_ENV, BEAT_ENV):
        seen = _order_settings(lab, env, env)
        missing = sorted(name for name in env if seen[name] is None)
        assert not missing, f"no such order_service setting: {missing}"
        assert {name: type(seen[name])(value) for name, value in env.items()} == seen, seen
    worker = _order_settings(lab, WORKER_ENV, ["ORDER_SAGA_TASK_LEASE_SECONDS"])
    assert worker == {"ORDER_SAGA_TASK_LEASE_SECONDS": WORKER_TASK_LEASE_SECONDS}, worker
    # Settling outlasts the request lease of the order service itself (not shortened).
    service = _order_settings(lab, {}, ["ORDER_SAGA_LEASE_SECONDS"])
    assert service == {"ORDER_SAGA_LEASE_SECONDS": REQUEST_LEASE_SECONDS}, service


@pytest.fixture
def worker(lab, lab_admin):
    """The order service's Celery worker and beat, stopped again afterwards (when the harness can run them)."""
    if not CAN_RUN_WORKER:
        yield None
        return
    lab.start_worker(env=WORKER_ENV)
    lab.start_beat(env=BEAT_ENV)
    try:
        yield lab
    finally:
        lab.stop_celery()


def test_chaos_then_audit_finds_every_invariant_kept(lab, lab_admin, new_customer, product, worker):
    """Ensure ≥ 200 orders under rotating faults (errors and outages among them), a SIGKILLed order gunicorn
    worker in sync mode and a SIGKILLed Celery worker in async mode all end terminal, with zero audit
    violations and no payment captured twice."""
    skus = [
        product(stock=400, price_cents=1250),
        product(stock=400, price_cents=799),
        product(stock=400, price_cents=4999),
        product(stock=15, price_cents=300),
    ]
    cards = ["4242424242424242"] * 6 + ["4000000000000002", "4000000000009995"]
    shoppers = []
    for i, number in enumerate(cards):
        customer = new_customer(f"Chaos customer {i}")
        shoppers.append(Shopper(customer, customer.add_card(number)))
    lab_admin.set_switches("order", breaker={"fail_max": 5, "reset_timeout": 2}, spread=False)
    errors: list[str] = []
    phases = ["sync", "async"] if worker is not None else ["sync"]
    per_phase = MIN_ORDERS // len(phases)

    started = time.monotonic()
    rotations = []
    for mode in phases:
        if worker is not None:
            lab_admin.api.json("PUT", "order", "/_lab/saga/", json={"mode": mode})
            time.sleep(SPREAD_SECONDS)
        rotation = Rotation(
            lab_admin,
            lab=lab,
            first_slot=rotations[-1].slot if rotations else 0,
            kill_worker_at=time.monotonic() + PHASE_SECONDS / 2 if mode == "async" else None,
            kill_service_worker_at=time.monotonic() + PHASE_SECONDS / 2 if mode == "sync" else None,
        )
        rotation.start()
        try:
            _shop(shoppers, skus, count=per_phase, seconds=PHASE_SECONDS, errors=errors)
        finally:
            rotation.stop.set()
            rotation.join(timeout=60)
        rotations.append(rotation)
    chaos_seconds = time.monotonic() - started

    lab_admin.clear_faults(spread=False)
    for service in SERVICES:
        lab_admin.set_switches(service, reset_breakers=True, spread=False)
    time.sleep(SPREAD_SECONDS)
    orders = _settle(shoppers, timeout=SETTLE_SECONDS)

    log = "\n".join(line for r in rotations for line in r.log)
    assert not [e for r in rotations for e in r.errors], [e for r in rotations for e in r.errors]
    assert sum(len(s.placed) for s in shoppers) >= MIN_ORDERS
    assert len(orders) >= MIN_ORDERS, len(orders)
    assert chaos_seconds <= 90, chaos_seconds
    faulted = {service for r in rotations for service, _ in r.kinds}
    assert faulted == set(SERVICES), faulted
    if worker is not None:
        assert sum(r.worker_kills for r in rotations) >= 1, log
    assert sum(r.service_worker_kills for r in rotations) >= 1, log
    kinds = {kind for r in rotations for _, kind in r.kinds}
    assert {"error", "outage"} <= kinds, kinds
    statuses = collections.Counter(o["status"] for o in orders.values())
    assert statuses["CONFIRMED"] > 0 and statuses["CANCELLED"] > 0, statuses

    replayed = sum(1 for s in shoppers for p in s.placed if p.get("replayed_at"))
    print(
        f"chaos: {len(orders)} orders in {chaos_seconds:.0f} s ({', '.join(phases)}), {dict(statuses)}, "
        f"{replayed} replayed to finish, {sum(r.worker_kills for r in rotations)} worker SIGKILL, "
        f"{sum(r.service_worker_kills for r in rotations)} {KILLED_SERVICE} gunicorn worker SIGKILL, "
        f"{len(errors)} lost answers; faults:\n{log}"
    )

    data = audit.collect(lab_admin.api)
    result = audit.check(data)
    violations = [f"{c['name']}: {v['message']} {v['ids']}" for c in result["checks"] for v in c["violations"]]
    assert result["ok"], "\n".join(violations[:40]) + f"\n(statuses {dict(statuses)}; faults:\n{log})"

    unfinished = [o for o in data["orders"] if o["status"] not in TERMINAL and o["saga_step"] not in ("none", "")]
    assert not unfinished, unfinished[:10]
    captured = collections.Counter(str(c["order_id"]) for c in data["charges"] if c["status"] == "CAPTURED")
    assert [order for order, count in captured.items() if count > 1] == []
    mine = {str(order_id) for order_id in orders}
    by_id = {str(o["id"]): o for o in data["orders"]}
    assert mine <= set(by_id), "an order the customers saw is missing from the order service's own data"
    assert all((by_id[i]["status"] == "CANCELLED") == (orders[int(i)]["status"] == "CANCELLED") for i in mine)
