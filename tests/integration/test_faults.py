"""Each fault kind, injected over ``/_lab/faults/`` and observed from outside on real processes.

Timings use generous bounds (an injected delay must show at 0.7 × its size);
what is asserted is behaviour: the status codes, the error codes, who is hit
and who is not.
"""

from __future__ import annotations

import concurrent.futures
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests

from labctl import process, supervisor
from labctl.config import Paths

from .conftest_lab import SPREAD_SECONDS, history_notes, wait_until
from .harness import ROOT, free_port


def _timed_get(url: str, **kwargs) -> tuple[int, float]:
    started = time.monotonic()
    response = requests.get(url, timeout=30, **kwargs)
    return response.status_code, time.monotonic() - started


# ----------------------------------------------------------------------------- latency


def test_latency_fault_delays_the_requests_in_its_scope(lab, lab_admin):
    """Ensure a latency fault delays GETs under its path prefix by about its delay, and nothing else."""
    products = f"{lab.urls['inventory']}/api/products/?page_size=1"
    health = f"{lab.urls['inventory']}/health/"
    lab_admin.add_fault(
        "inventory", kind="latency", delay_ms=600, jitter_ms=50, path_prefix="/api/products/", method="GET"
    )

    delayed = [_timed_get(products) for _ in range(5)]
    untouched = [_timed_get(health) for _ in range(5)]

    assert all(status == 200 for status, _ in delayed + untouched)
    assert min(seconds for _, seconds in delayed) >= 0.7 * 0.55, delayed
    assert statistics.median(seconds for _, seconds in untouched) < 0.7 * 0.55, untouched

    lab_admin.clear_faults("inventory")
    assert statistics.median(_timed_get(products)[1] for _ in range(5)) < 0.7 * 0.55


# ----------------------------------------------------------------------------- error


def test_error_fault_fails_about_its_probability_of_requests(lab, lab_admin):
    """Ensure an error fault with p=0.3 answers its status to 20–40 % of 200 calls, the rest succeed."""
    lab_admin.add_fault("inventory", kind="error", status=502, probability=0.3)
    session = requests.Session()

    answers = [
        session.get(f"{lab.urls['inventory']}/api/products/", params={"page_size": 1}, timeout=30) for _ in range(200)
    ]

    failed = [a for a in answers if a.status_code != 200]
    assert {a.status_code for a in failed} == {502}
    assert {a.json()["code"] for a in failed} == {"injected_error"}
    assert all(a.headers.get("X-Lab-Fault") for a in failed)
    assert 0.2 <= len(failed) / len(answers) <= 0.4, len(failed)


# ----------------------------------------------------------------------------- outage


def test_outage_answers_503_to_every_route_but_the_lab_controls(lab, lab_admin, customer, anonymous):
    """Ensure an outage makes every route answer 503 (health, API, internal, unknown); /_lab/ and /metrics work."""
    card = customer.add_card()
    lab_admin.add_fault("payment", kind="outage", ttl_seconds=120)

    answers = {
        "health": anonymous.get("payment", "/health/"),
        "list": customer.get("payment", "/api/payment-methods/"),
        "detail": customer.delete("payment", f"/api/payment-methods/{card}/"),
        "add card": customer.post("payment", "/api/payment-methods/", json={"card_number": "4242424242424242"}),
        "internal": anonymous.post("payment", "/internal/charges/", json={}),
        "schema": anonymous.get("payment", "/api/schema/"),
        "unknown": anonymous.get("payment", "/no/such/page/"),
    }

    assert {name: a.status_code for name, a in answers.items()} == dict.fromkeys(answers, 503)
    assert {a.json()["code"] for a in answers.values()} == {"service_outage"}
    assert [f["kind"] for f in lab_admin.faults("payment")] == ["outage"]
    assert requests.get(f"{lab.urls['payment']}/metrics", timeout=10).status_code == 200

    lab_admin.clear_faults("payment")
    assert anonymous.get("payment", "/health/").status_code == 200
    assert customer.get("payment", "/api/payment-methods/").status_code == 200


def test_a_fault_expires_by_itself_after_its_ttl(lab, lab_admin, anonymous):
    """Ensure a fault with a TTL stops biting, and leaves the list, once the TTL is over."""
    lab_admin.add_fault("user", kind="outage", ttl_seconds=2)
    assert anonymous.get("user", "/health/").status_code == 503

    wait_until(
        lambda: anonymous.get("user", "/health/").status_code == 200,
        timeout=2 + 3 * SPREAD_SECONDS,
        message="user healthy again after its outage's TTL",
    )
    assert lab_admin.faults("user") == []


# ----------------------------------------------------------------------------- database


def test_database_fault_answers_503_never_500(lab, lab_admin, customer, anonymous, product):
    """Ensure failing queries give 503 database_unavailable on API routes and health, and no 500 anywhere."""
    sku = product(stock=5)
    card = customer.add_card()
    lab_admin.add_fault("order", kind="database", mode="fail")

    health = anonymous.get("order", "/health/")
    listing = customer.get("order", "/api/orders/")
    creating = customer.order([{"sku": sku, "quantity": 1}], card)

    assert health.status_code == 503
    assert health.json()["checks"]["database"]["status"] != "ok"
    for answer in (listing, creating):
        assert answer.status_code == 503, answer.text
        assert answer.json()["code"] == "database_unavailable"

    lab_admin.clear_faults("order")
    assert anonymous.get("order", "/health/").status_code == 200
    assert list(customer.get("order", "/api/orders/").json()["results"]) == []  # nothing half-written


def test_slow_database_fault_slows_every_query(lab, lab_admin, anonymous):
    """Ensure a slow database fault makes a request that queries the database take at least the delay."""
    lab_admin.add_fault("inventory", kind="database", mode="slow", delay_ms=400, path_prefix="/api/products/")

    status, seconds = _timed_get(f"{lab.urls['inventory']}/api/products/?page_size=1")

    assert status == 200
    assert seconds >= 0.7 * 0.4


# ----------------------------------------------------------------------------- dependency


def test_dependency_fault_bites_only_the_caller(lab, lab_admin, shopper, anonymous):
    """Ensure order→payment failing stops order's checkout (payment unavailable) while payment itself answers."""
    lab_admin.add_fault("order", kind="dependency", target="payment", mode="fail")

    placed = shopper.order(shopper.sku)

    order = placed["data"]
    # Nothing reached payment, yet order cannot know that for sure (the charge's outcome is unknown
    # and the lookup of it fails too): the saga pauses at the charge, 202 PENDING, the stock still held.
    assert placed["status_code"] == 202, order
    assert (order["status"], order["saga_step"]) == ("PENDING", "charging"), order
    assert "paused: payment unavailable" in history_notes(order).lower(), order
    assert anonymous.get("payment", "/health/").status_code == 200
    assert shopper.api.get("payment", "/api/payment-methods/").status_code == 200
    assert anonymous.get("inventory", "/health/").status_code == 200
    assert lab_admin.faults("payment") == []  # the fault lives on the caller only

    lab_admin.clear_faults("order")
    [settled] = shopper.settle()  # the replay resumes the charge with the same key: captured once
    assert settled["data"]["status"] == "CONFIRMED", settled
    charges = shopper.api.get("payment", "/api/payments/").json()["results"]
    assert [(c["order_id"], c["status"]) for c in charges] == [(str(order["id"]), "CAPTURED")], charges


def test_hanging_dependency_waits_for_the_callers_timeout(lab, lab_admin, shopper):
    """Ensure a hanging peer costs the caller its read timeout per attempt; the reservation's outcome then unknown,
    the order is kept PENDING to be settled (a sync checkout has no product lookup to fail first), nothing charged."""
    lab_admin.set_switches("order", timeouts={"read": 0.3}, retries={"attempts": 2, "backoff": 0.0})
    lab_admin.add_fault("order", kind="dependency", target="inventory", mode="hang")

    placed = shopper.order(shopper.sku)

    assert placed["status_code"] == 202, placed
    assert placed["data"]["status"] == "PENDING", placed
    assert placed["seconds"] >= 2 * 0.3 * 0.7
    assert shopper.api.get("payment", "/api/payments/").json()["count"] == 0


# ----------------------------------------------------------------------------- all workers


def test_every_worker_applies_a_fault_within_a_second(lab, lab_admin):
    """Ensure, one second after a fault is set (and after it is cleared), every worker process agrees.

    Each call opens a new connection and eight run at once, so gunicorn's two
    workers of the service share them.
    """
    url = f"{lab.urls['inventory']}/health/"

    def statuses():
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            return list(
                pool.map(
                    lambda _: requests.get(url, timeout=30, headers={"Connection": "close"}).status_code, range(48)
                )
            )

    assert set(statuses()) == {200}  # every worker has read the (empty) fault list
    lab_admin.add_fault("inventory", kind="outage", spread=False)
    time.sleep(1.0)
    assert set(statuses()) == {503}

    lab_admin.clear_faults("inventory", spread=False)
    time.sleep(1.0)
    assert set(statuses()) == {200}


# ----------------------------------------------------------------------------- who may


@pytest.mark.parametrize("path", ["/_lab/faults/", "/_lab/resilience/"])
def test_only_the_lab_admin_reads_or_changes_the_lab(lab, lab_admin, customer, anonymous, admin, path):
    """Ensure anonymous callers get 401, customers 403, staff and the dashboard identity 200, nothing changed."""
    body = {"kind": "outage"} if "faults" in path else {"retries": {"enabled": False}}
    for method in ("GET", "PUT", "DELETE"):
        if method == "DELETE" and "resilience" in path:
            continue
        assert anonymous.session.request(method, anonymous.url("order", path), json=body, timeout=10).status_code == 401
        assert customer.session.request(method, customer.url("order", path), json=body, timeout=10).status_code == 403
    assert admin.get("order", path).status_code == 200
    assert lab_admin.faults("order") == []
    assert lab_admin.resilience("order")["switches"]["retries"]["enabled"] is True


# ----------------------------------------------------------------------------- labctl itself


def _labctl(lab, *argv, env=None, timeout=60):
    urls = ",".join(f"{name}={url}" for name, url in lab.urls.items())
    return subprocess.run(
        [sys.executable, "-m", "labctl", *argv, "--urls", urls],
        cwd=ROOT,
        text=True,
        capture_output=True,
        timeout=timeout,
        env={**os.environ, "LAB_ROOT": str(ROOT), **(env or {})},
    )


def test_labctl_fault_commands_drive_a_real_lab(lab, lab_admin, anonymous):
    """Ensure `labctl fault add/list/clear` and `labctl resilience` act on the services and say so."""
    added = _labctl(lab, "fault", "add", "payment", "outage", "--ttl", "60")
    assert added.returncode == 0, added.stderr
    assert "on payment: outage" in added.stdout
    time.sleep(SPREAD_SECONDS)  # another worker may answer the next call from what it read up to 0.5 s ago
    [fault] = lab_admin.faults("payment")
    assert fault["kind"] == "outage" and fault["expires_at"]

    refused = _labctl(lab, "fault", "add", "order", "latency")
    assert refused.returncode == 1
    assert "delay_ms: A latency fault needs delay_ms > 0." in refused.stderr

    listing = _labctl(lab, "fault", "list")
    assert listing.returncode == 0, listing.stderr
    [row] = listing.stdout.splitlines()[2:]
    assert row.split()[:3] == [fault["id"], "payment", "outage"]

    assert anonymous.get("payment", "/health/").status_code == 503
    cleared = _labctl(lab, "fault", "clear", "--all")
    assert cleared.returncode == 0, cleared.stderr
    assert "payment: cleared 1 fault(s)" in cleared.stdout
    time.sleep(SPREAD_SECONDS)
    assert lab_admin.faults("payment") == []
    assert anonymous.get("payment", "/health/").status_code == 200

    switched = _labctl(lab, "resilience", "order", "--set", "breaker.fail_max=3", "--set", "retries.enabled=false")
    assert switched.returncode == 0, switched.stderr
    time.sleep(SPREAD_SECONDS)
    switches = lab_admin.resilience("order")["switches"]
    assert switches["breaker"]["fail_max"] == 3 and switches["retries"]["enabled"] is False
    assert ["order", "payment", "closed", "0", "3"] in [line.split()[:5] for line in switched.stdout.splitlines()]


def test_labctl_audit_of_a_real_lab(lab, lab_admin, shopper):
    """Ensure `labctl audit` reads every service's reconciliation data and finds a clean lab clean (exit 0)."""
    assert shopper.order(shopper.sku)["data"]["status"] == "CONFIRMED"

    audited = _labctl(lab, "audit")

    assert audited.returncode == 0, audited.stdout + audited.stderr
    assert "All invariants hold." in audited.stdout


# ----------------------------------------------------------------------------- process (a real supervisord)


@pytest.fixture(scope="module")
def supervised_payment(lab, tmp_path_factory):
    """A supervisord of its own, in a temp dir, running ONE real payment_service (gunicorn) on a free port.

    The program gets the harness payment's environment (its database, keys,
    Redis), so it is the same service; only its port and metrics dir differ.
    """
    root = tmp_path_factory.mktemp("supervised")
    paths, port = Paths(root), free_port()
    env = {**lab.envs["payment"], "PROMETHEUS_MULTIPROC_DIR": str(root / "prometheus")}
    (root / "prometheus").mkdir()
    paths.run.mkdir(parents=True)
    paths.log.mkdir(parents=True)
    gunicorn = (
        f"{sys.executable} -m gunicorn config.wsgi:application --bind 127.0.0.1:{port}"
        " --config python:chassis.gunicorn_conf --workers 2 --threads 2 --worker-class gthread --timeout 30"
    )
    paths.supervisord_conf.write_text(f"""[unix_http_server]
file={paths.supervisor_socket}
chmod=0700

[supervisord]
logfile={paths.log / "supervisord.log"}
pidfile={paths.supervisord_pidfile}
childlogdir={paths.log}
directory={root}

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{paths.supervisor_socket}

[program:payment]
command={gunicorn}
directory={ROOT / "payment_service"}
autostart=true
autorestart=true
startsecs=1
startretries=5
stopasgroup=true
killasgroup=true
stopwaitsecs=10
redirect_stderr=true
stdout_logfile={paths.log / "payment.log"}
""")
    subprocess.run(
        [str(Path(sys.executable).parent / "supervisord"), "-c", str(paths.supervisord_conf)],
        env=env,
        check=True,
        timeout=30,
    )
    served = SimpleNamespace(paths=paths, url=f"http://127.0.0.1:{port}", log=paths.log / "payment.log")
    try:
        _wait_running(served, timeout=60)
        yield served
    finally:
        supervisor.shutdown(paths)


def _health(served, timeout: float = 2) -> int | None:
    try:
        return requests.get(f"{served.url}/health/", timeout=timeout).status_code
    except requests.RequestException:
        return None


def _wait_running(served, timeout: float = 30) -> None:
    """Until supervisord says RUNNING and payment answers its health check."""
    wait_until(
        lambda: _program(served)["statename"] == "RUNNING" and _health(served) == 200,
        timeout=timeout,
        message="supervised payment RUNNING and healthy",
    )


def _program(served) -> dict:
    return supervisor.rpc(served.paths).supervisor.getProcessInfo("payment")


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _labctl_at(root: Path, *argv):
    return subprocess.run(
        [sys.executable, "-m", "labctl", *argv],
        cwd=ROOT,
        text=True,
        capture_output=True,
        timeout=60,
        env={**os.environ, "LAB_ROOT": str(root)},
    )


def test_process_kill_really_kills_and_supervisord_brings_it_back(supervised_payment):
    """Ensure `fault add payment process --action kill` SIGKILLs master and workers, then autorestart revives it."""
    _wait_running(supervised_payment)
    before = _program(supervised_payment)
    assert _group_alive(before["pid"])
    probes, stop = [], threading.Event()

    def probe():  # health every 10 ms; a check that waits over 0.5 s counts as not answering
        while not stop.is_set():
            probes.append((time.monotonic(), _health(supervised_payment, timeout=0.5)))
            time.sleep(0.01)

    prober = threading.Thread(target=probe, daemon=True)
    prober.start()
    try:
        killed_at = time.monotonic()
        killed = _labctl_at(supervised_payment.paths.root, "fault", "add", "payment", "process", "--action", "kill")
        assert killed.returncode == 0, killed.stderr
        assert f"SIGKILL sent to process group {before['pid']}" in killed.stdout
        wait_until(
            lambda: not _group_alive(before["pid"]),
            timeout=5,
            interval=0.05,
            message="every process of the killed group gone",
        )
        _wait_running(supervised_payment)
    finally:
        stop.set()
        prober.join(timeout=5)

    # Gone for real: between the kill and the restart, payment did not answer.
    assert any(status != 200 for at, status in probes if at >= killed_at), probes[-20:]
    assert _program(supervised_payment)["pid"] != before["pid"]
    assert "exited: payment (terminated by SIGKILL" in (supervised_payment.paths.log / "supervisord.log").read_text()


def test_process_stop_with_ttl_comes_back_by_itself(supervised_payment):
    """Ensure a stop with a 2 s TTL really stops payment, shows in `fault list`, and starts again on its own."""
    _wait_running(supervised_payment)
    stopped = _labctl_at(
        supervised_payment.paths.root, "fault", "add", "payment", "process", "--action", "stop", "--ttl", "2"
    )

    assert stopped.returncode == 0, stopped.stderr
    assert "payment starts again in 2 s" in stopped.stdout
    assert _program(supervised_payment)["statename"] == "STOPPED"
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{supervised_payment.url}/health/", timeout=2)
    assert [f["program"] for f in process.active(supervised_payment.paths)] == ["payment"]

    _wait_running(supervised_payment)
    assert process.active(supervised_payment.paths) == []


def test_process_restart_and_clear(supervised_payment):
    """Ensure restart gives a new process at once, and a stop without TTL lasts until `fault clear`."""
    _wait_running(supervised_payment)
    before = _program(supervised_payment)["pid"]
    restarted = _labctl_at(supervised_payment.paths.root, "fault", "add", "payment", "process", "--action", "restart")
    assert restarted.returncode == 0, restarted.stderr
    assert _program(supervised_payment)["pid"] != before

    assert (
        _labctl_at(supervised_payment.paths.root, "fault", "add", "payment", "process", "--action", "stop").returncode
        == 0
    )
    time.sleep(1)
    assert _program(supervised_payment)["statename"] == "STOPPED"
    cleared = _labctl_at(
        supervised_payment.paths.root, "fault", "clear", "payment", "--urls", f"payment={supervised_payment.url}"
    )
    assert "payment:payment: started" in cleared.stdout, cleared.stdout + cleared.stderr
    _wait_running(supervised_payment)
