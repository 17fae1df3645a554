"""Tests of ``labctl fault``, ``labctl resilience`` and ``labctl audit`` without a running lab.

Argument parsing and rendering are checked on their own; the commands run
against a small fake service (a real HTTP server on a free port) that records
what labctl sent and answers like the chassis' ``/_lab/`` API would.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest

from labctl import cli, faultcli, process, supervisor
from labctl.faultcli import CliError

NOW = 1_800_000_000.0


def parse(*argv):
    return cli.build_parser().parse_args(list(argv))


# ------------------------------------------------------------------ a fake service


class FakeService:
    """A real HTTP server answering canned JSON by (method, path); records each request."""

    def __init__(self):
        self.answers: dict[tuple[str, str], tuple[int, object]] = {}
        self.requests: list[dict] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                fake.requests.append(
                    {
                        "method": self.command,
                        "path": self.path,
                        "headers": dict(self.headers),
                        "json": json.loads(body) if body else None,
                    }
                )
                status, data = fake.answers.get(
                    (self.command, self.path.split("?")[0]), (404, {"code": "not_found", "message": "No route."})
                )
                payload = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_PUT = do_DELETE = _answer

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def answer(self, method: str, path: str, status: int, data) -> None:
        self.answers[(method, path)] = (status, data)


@pytest.fixture
def fake():
    service = FakeService()
    service.thread.start()
    yield service
    service.server.shutdown()
    service.server.server_close()


@pytest.fixture
def run(lab_paths, monkeypatch, capsys):
    """Run ``labctl ARGS`` with the lab root under tmp_path; returns (exit code, stdout, stderr)."""
    monkeypatch.setenv("LAB_ROOT", str(lab_paths.root))
    for name in ("LAB_URLS", "USER_SERVICE_URL", "ORDER_SERVICE_URL", "INVENTORY_SERVICE_URL", "PAYMENT_SERVICE_URL"):
        monkeypatch.delenv(name, raising=False)

    def labctl(*argv):
        code = cli.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return labctl


def a_fault(**extra):
    base = {
        "id": "f-1",
        "kind": "latency",
        "probability": 1.0,
        "path_prefix": "",
        "method": "",
        "delay_ms": 0,
        "jitter_ms": 0,
        "status": 503,
        "mode": "",
        "target": "",
        "created_at": NOW,
        "expires_at": None,
    }
    return {**base, **extra}


# ------------------------------------------------------------------ where the services are


def test_urls_come_from_option_then_lab_urls_then_service_variables():
    """Ensure --urls beats LAB_URLS, which beats <NAME>_SERVICE_URL, which beats the default port."""
    environ = {
        "ORDER_SERVICE_URL": "http://127.0.0.1:7002/",
        "PAYMENT_SERVICE_URL": "http://127.0.0.1:7004",
        "LAB_URLS": "payment=http://127.0.0.1:6004,inventory=http://127.0.0.1:6003",
    }

    urls = faultcli.resolve_urls("inventory=http://127.0.0.1:5003", environ)

    assert urls == {
        "user": "http://127.0.0.1:8001",
        "order": "http://127.0.0.1:7002",
        "inventory": "http://127.0.0.1:5003",
        "payment": "http://127.0.0.1:6004",
    }


@pytest.mark.parametrize("text", ["order", "shop=http://127.0.0.1:1", "order=127.0.0.1:8002", "order="])
def test_bad_urls_are_refused_with_the_expected_form(text):
    """Ensure a malformed --urls item is an error that shows the expected NAME=URL form."""
    with pytest.raises(CliError, match="NAME=http://HOST:PORT"):
        faultcli.parse_urls(text)


# ------------------------------------------------------------------ fault add: the request body


def test_fault_add_options_become_the_request_body():
    """Ensure each option lands in its field, method upper-cased, --ttl as ttl_seconds, nothing else sent."""
    args = parse(
        "fault",
        "add",
        "inventory",
        "latency",
        "--delay-ms",
        "300",
        "--jitter-ms",
        "50",
        "--probability",
        "0.5",
        "--path-prefix",
        "/api/",
        "--method",
        "get",
        "--ttl",
        "60",
    )

    assert faultcli.fault_body(args) == {
        "kind": "latency",
        "delay_ms": 300,
        "jitter_ms": 50,
        "probability": 0.5,
        "path_prefix": "/api/",
        "method": "GET",
        "ttl_seconds": 60,
    }


def test_fault_add_dependency_body():
    """Ensure a dependency fault sends its target and mode, and only those."""
    args = parse("fault", "add", "order", "dependency", "--target", "payment", "--mode", "hang")

    assert faultcli.fault_body(args) == {"kind": "dependency", "target": "payment", "mode": "hang"}


def test_unknown_fault_kind_is_refused_by_the_parser(capsys):
    """Ensure a kind that does not exist never reaches a service."""
    with pytest.raises(SystemExit):
        parse("fault", "add", "order", "meteor")
    assert "invalid choice: 'meteor'" in capsys.readouterr().err


def test_fault_add_sends_put_as_the_dashboard_and_reports_the_fault(run, fake):
    """Ensure `fault add` PUTs the body to /_lab/faults/ with a dashboard service token and prints the result."""
    added = a_fault(id="f-abc", kind="outage", expires_at=NOW + 60)
    fake.answer("PUT", "/_lab/faults/", 201, {"service": "payment", "faults": [added], "added": added})

    code, out, err = run("fault", "add", "payment", "outage", "--ttl", "60", "--urls", f"payment={fake.url}")

    assert code == 0, err
    [request] = fake.requests
    assert request["method"] == "PUT" and request["path"] == "/_lab/faults/"
    assert request["json"] == {"kind": "outage", "ttl_seconds": 60}
    claims = jwt.decode(request["headers"]["Authorization"].split()[1], options={"verify_signature": False})
    assert (claims["iss"], claims["typ"], claims["aud"]) == ("dashboard", "service", "payment")
    assert "Added f-abc on payment: outage" in out


def test_fault_add_prints_the_services_validation_error_with_its_field(run, fake):
    """Ensure a 400 from the service is printed plainly, field by field, with exit 1."""
    fake.answer(
        "PUT",
        "/_lab/faults/",
        400,
        {
            "code": "invalid",
            "message": "Invalid input.",
            "fields": {"delay_ms": ["A latency fault needs delay_ms > 0."], "status": ["Too small."]},
        },
    )

    code, out, err = run("fault", "add", "order", "latency", "--urls", f"order={fake.url}")

    assert code == 1
    assert "order answered 400 invalid" in err
    assert "  delay_ms: A latency fault needs delay_ms > 0." in err
    assert "  status: Too small." in err
    assert "Traceback" not in err


def test_fault_add_to_a_service_that_does_not_answer(run, closed_port):
    """Ensure an unreachable service is named with its URL, exit 1, no traceback."""
    code, out, err = run("fault", "add", "order", "outage", "--urls", f"order=http://127.0.0.1:{closed_port}")

    assert code == 1
    assert f"order is unreachable at http://127.0.0.1:{closed_port}" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["fault", "add", "payment", "process"], "needs --action"),
        (["fault", "add", "payment", "process", "--action", "kill", "--delay-ms", "5"], "not --delay-ms"),
        (["fault", "add", "payment", "outage", "--action", "kill"], "--action belongs to process faults"),
        (["fault", "add", "worker", "latency", "--delay-ms", "5"], "takes process faults only"),
        (["fault", "clear"], "say which"),
        (["fault", "clear", "order", "--all"], "say which"),
    ],
)
def test_mistakes_are_explained_without_calling_anything(run, argv, message):
    """Ensure option mistakes are caught before any call, with a sentence that says what to do."""
    code, out, err = run(*argv, "--urls", "order=http://127.0.0.1:1")

    assert code == 1
    assert message in err


# ------------------------------------------------------------------ fault list and clear


def test_fault_table_describes_each_kind():
    """Ensure the table shows id, service, kind, parameters, scope and time left for each fault."""
    faults = [
        {
            **a_fault(
                id="f-lat",
                delay_ms=300,
                jitter_ms=50,
                probability=0.5,
                path_prefix="/api/",
                method="GET",
                expires_at=NOW + 45,
            ),
            "service": "inventory",
        },
        {**a_fault(id="f-err", kind="error", status=502, probability=0.25), "service": "user"},
        {**a_fault(id="f-db", kind="database", mode="slow", delay_ms=200, expires_at=NOW + 600), "service": "order"},
        {**a_fault(id="f-dep", kind="dependency", target="payment", mode="hang"), "service": "order"},
        {**a_fault(id="f-out", kind="outage"), "service": "payment"},
        {"id": "-", "kind": "process", "action": "stop", "service": "worker", "expires_at": NOW + 20},
    ]

    lines = faultcli.render_faults(faults, NOW).splitlines()

    assert lines[0].split() == ["id", "service", "kind", "parameters", "scope", "expires", "in"]
    rows = {line.split()[0]: line for line in lines[2:]}
    assert "inventory" in rows["f-lat"] and "delay 300 ms ±50, p=0.5" in rows["f-lat"]
    assert "GET /api/" in rows["f-lat"] and rows["f-lat"].endswith("45 s")
    assert "status 502, p=0.25" in rows["f-err"] and "all requests" in rows["f-err"]
    assert rows["f-err"].endswith("never")
    assert "mode slow, delay 200 ms" in rows["f-db"] and rows["f-db"].endswith("10 min")
    assert "target payment, mode hang" in rows["f-dep"] and "all calls" in rows["f-dep"]
    assert "503 to every request" in rows["f-out"]
    assert "worker" in rows["-"] and "action stop" in rows["-"] and rows["-"].endswith("20 s")


def test_empty_fault_table_says_so():
    """Ensure no fault reads as a sentence, not an empty table."""
    assert faultcli.render_faults([], NOW) == "No active fault."


def test_fault_list_reads_every_service_and_names_the_silent_ones(run, fake, closed_port):
    """Ensure `fault list` shows the faults of each service that answers and names the one that does not (exit 1)."""
    fake.answer("GET", "/_lab/faults/", 200, {"service": "x", "faults": [a_fault(id="f-seen", kind="outage")]})
    urls = f"user={fake.url},order={fake.url},inventory={fake.url},payment=http://127.0.0.1:{closed_port}"

    code, out, err = run("fault", "list", "--urls", urls)

    assert code == 1
    assert [line.split()[1] for line in out.splitlines()[2:]] == ["user", "order", "inventory"]
    assert "payment is unreachable" in err


def test_fault_clear_one_and_all(run, fake):
    """Ensure `clear <svc> <id>` deletes that fault and `clear --all` deletes on every service."""
    fake.answer("DELETE", "/_lab/faults/f-1/", 200, {"faults": [], "cleared": 1})
    fake.answer("DELETE", "/_lab/faults/", 200, {"faults": [], "cleared": 2})
    urls = ",".join(f"{name}={fake.url}" for name in faultcli.SERVICE_NAMES)

    code, out, _ = run("fault", "clear", "order", "f-1", "--urls", urls)
    assert code == 0 and "order: cleared 1 fault(s)" in out
    assert [(r["method"], r["path"]) for r in fake.requests] == [("DELETE", "/_lab/faults/f-1/")]

    fake.requests.clear()
    code, out, _ = run("fault", "clear", "--all", "--urls", urls)
    assert code == 0
    assert [(r["method"], r["path"]) for r in fake.requests] == [("DELETE", "/_lab/faults/")] * 4
    assert out.count("cleared 2 fault(s)") == 4


# ------------------------------------------------------------------ resilience


def test_set_options_become_a_partial_update():
    """Ensure --set values are grouped by switch and typed (booleans, integers, floats)."""
    changes = faultcli.parse_set(
        ["breaker.fail_max=3", "retries.enabled=false", "timeouts.read=0.5", "bulkhead.enabled=on"]
    )

    assert changes == {
        "breaker": {"fail_max": 3},
        "retries": {"enabled": False},
        "timeouts": {"read": 0.5},
        "bulkhead": {"enabled": True},
    }


@pytest.mark.parametrize(
    "item, message",
    [
        ("breaker=3", "SWITCH.SETTING=VALUE"),
        ("breaker.fail_max", "SWITCH.SETTING=VALUE"),
        ("brakes.fail_max=3", "unknown switch 'brakes'"),
    ],
)
def test_bad_set_options(item, message):
    """Ensure a malformed --set names the expected form or the known switches."""
    with pytest.raises(CliError, match=message):
        faultcli.parse_set([item])


def _resilience(fail_counter=0, state="closed"):
    return {
        "service": "order",
        "switches": {
            "timeouts": {"enabled": True, "connect": 1.0, "read": 5.0},
            "retries": {"enabled": False, "attempts": 3, "backoff": 0.1},
            "breaker": {"enabled": True, "fail_max": 3, "reset_timeout": 2},
            "bulkhead": {"enabled": True, "max_concurrent": 16},
            "fallback": {"enabled": True},
        },
        "breakers": {
            "payment": {
                "state": state,
                "fail_counter": fail_counter,
                "fail_max": 3,
                "reset_timeout": 2.0,
                "opened_at": "2026-01-01T12:00:00+00:00",
            }
        },
    }


def test_resilience_table_shows_switches_and_breakers():
    """Ensure each switch shows on/off and its settings, each breaker its state, counters and opening time."""
    text = faultcli.render_resilience({"order": _resilience(fail_counter=3, state="open")})

    switches, breakers = text.split("\n\n")
    rows = {line.split()[1]: line for line in switches.splitlines()[2:]}
    assert rows["retries"].split()[:3] == ["order", "retries", "off"] and "attempts=3" in rows["retries"]
    assert "fail_max=3, reset_timeout=2" in rows["breaker"]
    [payment] = breakers.splitlines()[2:]
    assert payment.split() == ["order", "payment", "open", "3", "3", "2", "s", "2026-01-01T12:00:00+00:00"]


def test_resilience_set_checks_every_name_before_changing_anything(run, fake):
    """Ensure a misspelt setting is refused before any PUT, and a good one is PUT with --reset-breakers."""
    fake.answer("GET", "/_lab/resilience/", 200, _resilience())
    fake.answer("PUT", "/_lab/resilience/", 200, _resilience())

    code, _, err = run("resilience", "order", "--set", "breaker.fial_max=3", "--urls", f"order={fake.url}")
    assert code == 1 and "no setting breaker.fial_max" in err and "fail_max" in err
    assert [r["method"] for r in fake.requests] == ["GET"]

    fake.requests.clear()
    code, out, err = run(
        "resilience",
        "order",
        "--set",
        "breaker.fail_max=3",
        "--set",
        "retries.enabled=false",
        "--reset-breakers",
        "--urls",
        f"order={fake.url}",
    )
    assert code == 0, err
    put = [r for r in fake.requests if r["method"] == "PUT"]
    assert [r["json"] for r in put] == [
        {"breaker": {"fail_max": 3}, "retries": {"enabled": False}, "reset_breakers": True}
    ]
    assert "payment" in out and "closed" in out


def test_resilience_prints_a_nested_validation_error(run, fake):
    """Ensure a refused value is printed as switch.setting: message."""
    fake.answer("GET", "/_lab/resilience/", 200, _resilience())
    fake.answer(
        "PUT",
        "/_lab/resilience/",
        400,
        {
            "code": "invalid",
            "message": "Invalid input.",
            "fields": {"breaker": {"fail_max": ["Ensure this value is >= 1."]}},
        },
    )

    code, _, err = run("resilience", "order", "--set", "breaker.fail_max=0", "--urls", f"order={fake.url}")

    assert code == 1
    assert "breaker.fail_max: Ensure this value is >= 1." in err


# ------------------------------------------------------------------ audit


def _reconciliation(fake, *, orders, charges):
    page = lambda rows: {"count": len(rows), "next": None, "previous": None, "results": rows}  # noqa: E731
    fake.answer("GET", "/internal/reconciliation/orders/", 200, page(orders))
    fake.answer("GET", "/internal/reconciliation/charges/", 200, page(charges))
    fake.answer("GET", "/internal/reconciliation/stock/", 200, page([]))
    fake.answer("GET", "/internal/reconciliation/reservations/", 200, page([]))


def test_audit_exit_codes(run, fake):
    """Ensure the audit exits 0 when every invariant holds and 1 (naming the ids) when one breaks."""
    urls = ",".join(f"{name}={fake.url}" for name in faultcli.SERVICE_NAMES)
    _reconciliation(fake, orders=[], charges=[])
    code, out, _ = run("audit", "--urls", urls)
    assert code == 0 and "All invariants hold." in out

    _reconciliation(
        fake,
        orders=[],
        charges=[{"id": "ch-9", "order_id": "77", "status": "CAPTURED", "amount_cents": 500, "refunded_cents": 0}],
    )
    code, out, _ = run("audit", "--urls", urls)
    assert code == 1 and "500 cents captured for unknown order 77" in out

    code, out, _ = run("audit", "--json", "--urls", urls)
    assert code == 1 and json.loads(out)["ok"] is False


def test_audit_of_a_silent_service_says_why(run, closed_port):
    """Ensure an unreachable service makes the audit say it could not judge (exit 2), not that all is well."""
    code, out, err = run("audit", "--urls", f"order=http://127.0.0.1:{closed_port}")

    assert code == 2
    assert out == ""
    assert f"order is unreachable at http://127.0.0.1:{closed_port}" in err


# ------------------------------------------------------------------ process faults (no supervisord here)


def test_process_fault_without_a_running_lab(run):
    """Ensure a process fault on a lab that is not running says so and how to start it."""
    code, _, err = run("fault", "add", "payment", "process", "--action", "kill")

    assert code == 1
    assert "The lab is not running" in err and "make up" in err


class FakeSupervisor:
    def __init__(self, infos):
        self.infos = infos
        self.calls = []
        self.supervisor = self

    def getAllProcessInfo(self):
        return self.infos

    def stopProcess(self, name, wait):
        self.calls.append(("stop", name))

    def startProcess(self, name, wait):
        self.calls.append(("start", name))


@pytest.fixture
def fake_supervisor(monkeypatch):
    proxy = FakeSupervisor(
        [
            {"group": "payment", "name": "payment", "statename": "RUNNING", "pid": 4242},
            {"group": "worker", "name": "worker", "statename": "STOPPED", "pid": 0},
        ]
    )
    monkeypatch.setattr(supervisor, "is_running", lambda paths: True)
    monkeypatch.setattr(supervisor, "rpc", lambda paths: proxy)
    return proxy


def test_process_fault_on_an_unknown_program_lists_the_known_ones(run, fake_supervisor):
    """Ensure a program supervisord does not run is named, with the ones it does run."""
    code, _, err = run("fault", "add", "beat", "process", "--action", "kill")

    assert code == 1
    assert "no program named 'beat'" in err and "payment, worker" in err


def test_process_kill_of_a_stopped_program_is_refused(run, fake_supervisor):
    """Ensure killing a program that is not running says so rather than pretending."""
    code, _, err = run("fault", "add", "worker", "process", "--action", "kill")

    assert code == 1 and "worker:worker is STOPPED" in err


def test_ttl_only_goes_with_stop(run, fake_supervisor):
    """Ensure --ttl with kill or restart is refused: those bring the program back by themselves."""
    code, _, err = run("fault", "add", "payment", "process", "--action", "kill", "--ttl", "5")

    assert code == 1 and "--ttl only applies to --action stop" in err
    assert fake_supervisor.calls == []


def test_stop_without_ttl_is_listed_and_cleared(run, fake_supervisor, lab_paths, fake):
    """Ensure a stopped program shows in `fault list` and `fault clear <service>` starts it, then clears its faults."""
    fake.answer("DELETE", "/_lab/faults/", 200, {"faults": [], "cleared": 0})
    code, out, err = run("fault", "add", "payment", "process", "--action", "stop")
    assert code == 0, err
    assert fake_supervisor.calls == [("stop", "payment:payment")]
    assert "stays stopped until: labctl fault clear payment" in out

    fake_supervisor.infos[0]["statename"] = "STOPPED"
    assert [entry["program"] for entry in process.active(lab_paths)] == ["payment"]

    code, out, err = run("fault", "list", "payment", "--urls", "payment=http://127.0.0.1:1")
    assert code == 0, err  # a program stopped by a fault is expected to be silent
    assert "payment  process  action stop" in out and out.rstrip().endswith("never")

    code, out, err = run("fault", "clear", "payment", "--urls", f"payment={fake.url}")
    assert code == 0, err
    assert fake_supervisor.calls[-1] == ("start", "payment:payment")
    assert out.splitlines() == ["payment:payment: started", "payment: cleared 0 fault(s)"]
    assert process.active(lab_paths) == []
