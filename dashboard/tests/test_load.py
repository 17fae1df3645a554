"""The Load page: Locust runs started, watched and stopped through labctl.load."""

from __future__ import annotations

import html

import pytest

load = pytest.importorskip("labctl.load")

pytestmark = pytest.mark.django_db

RUN_ID = "20260101-120000-checkout"
HISTORY = [
    {
        "t": i,
        "users": 10,
        "rps": 20.0 + i,
        "failures_per_s": 0.0,
        "p50_ms": 12.0,
        "p95_ms": 40.0 + i,
        "p99_ms": 80.0,
        "requests": 20 * i,
        "failures": 0,
    }
    for i in range(5)
]


def status(state: str) -> dict:
    return {
        "run_id": RUN_ID,
        "scenario": "checkout",
        "state": state,
        "started_at": "2026-01-01T12:00:00+00:00",
        "finished_at": None,
        "exit_code": None,
        "parameters": {"scenario": "checkout", "users": 10, "spawn_rate": 5, "duration": "60s", "workers": 0},
        "current": HISTORY[-1],
        "history": HISTORY,
        "endpoints": [
            {
                "method": "POST",
                "name": "/api/orders/",
                "requests": 80,
                "failures": 0,
                "rps": 20.0,
                "p50_ms": 12.0,
                "p95_ms": 44.0,
                "p99_ms": 80.0,
            }
        ],
        "report": None,
    }


def test_start_sends_the_form_and_the_dashboards_service_urls(staff, lab, monkeypatch, settings):
    """Ensure a run targets the services this dashboard watches, with the form's load."""
    started = {}

    def start_run(spec, paths=None):
        started["spec"] = spec
        return RUN_ID

    monkeypatch.setattr(load, "start_run", start_run)
    monkeypatch.setattr(load, "run_status", lambda run_id, paths=None, **kw: status("running"))
    response = staff.post(
        "/load/start/", {"scenario": "checkout", "users": "10", "spawn_rate": "5", "duration": "60s", "workers": "0"}
    )
    assert response.status_code == 302 and response["Location"] == f"/load/{RUN_ID}/"
    spec = started["spec"]
    assert (spec.scenario, spec.users, spec.spawn_rate, spec.duration, spec.workers) == ("checkout", 10, 5.0, "60s", 0)
    assert spec.urls == settings.CHASSIS["PEERS"]


def test_a_refused_start_says_why(staff, lab, monkeypatch):
    def refuse(spec, paths=None):
        raise load.LoadError("the lab is not healthy: payment down")

    monkeypatch.setattr(load, "start_run", refuse)
    response = staff.post("/load/start/", {"scenario": "checkout", "users": "10"}, follow=True)
    assert b"the lab is not healthy: payment down" in response.content


def test_a_running_run_polls_and_a_finished_one_stops_polling(client, monkeypatch):
    """Ensure the run page refreshes while Locust runs, and tells htmx to stop once it is over."""
    monkeypatch.setattr(load, "run_status", lambda run_id, paths=None, **kw: status("running"))
    page = client.get(f"/load/{RUN_ID}/")
    assert page.status_code == 200
    assert b"hx-trigger" in page.content and b"/api/orders/" in page.content and b"<polyline" in page.content
    assert client.get(f"/load/{RUN_ID}/live/").status_code == 200
    monkeypatch.setattr(load, "run_status", lambda run_id, paths=None, **kw: status("finished"))
    assert client.get(f"/load/{RUN_ID}/live/").status_code == 286


def test_an_unknown_run_is_404(client):
    assert client.get("/load/not-a-run/").status_code == 404


def test_the_load_page_lists_runs(client, monkeypatch):
    monkeypatch.setattr(
        load,
        "list_runs",
        lambda paths=None, limit=100: [
            {
                "run_id": RUN_ID,
                "scenario": "checkout",
                "state": "finished",
                "started_at": "x",
                "parameters": {"users": 10},
                "totals": {"requests": 1200, "rps": 19.8, "failures": 3, "failure_ratio": 0.0025},
            }
        ],
    )
    html = client.get("/load/").content.decode()
    assert RUN_ID in html and "1200" in html and "19.8" in html


def test_a_running_load_shows_on_the_service_map(client, lab, monkeypatch):
    """Ensure the map's load generator node is up while a Locust run runs, idle otherwise."""
    monkeypatch.setattr(load, "list_runs", lambda paths=None, limit=100: [])
    assert 'data-node="load" data-state="idle"' in client.get("/partials/overview/").content.decode()
    monkeypatch.setattr(
        load,
        "list_runs",
        lambda paths=None, limit=100: [
            {"run_id": RUN_ID, "scenario": "checkout", "state": "running", "parameters": {"users": 25}}
        ],
    )
    html = client.get("/partials/overview/").content.decode()
    assert 'data-node="load" data-state="up"' in html
    assert "checkout, 25 users" in html


def test_scenario_descriptions_read_their_docstrings_as_plain_text():
    """Ensure each scenario is described from its locustfile, ``literals`` shown without their backticks."""
    from console import load as load_runs

    described = {d["name"]: d for d in load_runs.scenario_descriptions()}
    assert set(described) == set(load.SCENARIOS)
    assert described["step_load"]["summary"].startswith("Step load")
    assert "CHAOS_GRACE" in described["chaos_timeline"]["detail"]
    assert not any("``" in d["summary"] + d["detail"] for d in described.values())


def test_a_run_that_ended_with_a_red_audit_says_so_not_that_locust_stopped(client, monkeypatch):
    """Ensure a chaos run that went to its end with its audit red (exit code 1) is not read as a crash."""
    ended = {
        **status("failed"),
        "exit_code": 1,
        "finished_at": "2026-01-01T12:01:00+00:00",
        "summary": {
            "finished_at": "2026-01-01T12:01:00+00:00",
            "totals": {"requests": 80, "failures": 0, "rps": 20.0, "failure_ratio": 0.0},
            "audit": {"ok": False, "checks": []},
        },
    }
    monkeypatch.setattr(load, "run_status", lambda run_id, paths=None, **kw: ended)
    page = client.get(f"/load/{RUN_ID}/").content.decode()
    assert "its audit found invariants broken (exit code 1, as a red audit makes it)" in page
    assert "what Locust wrote before it stopped" not in page
    assert 'data-testid="load-badge">finished · audit red<' in page
    crashed = {**status("failed"), "exit_code": 2, "finished_at": "2026-01-01T12:00:20+00:00"}
    monkeypatch.setattr(load, "run_status", lambda run_id, paths=None, **kw: crashed)
    page = client.get(f"/load/{RUN_ID}/").content.decode()
    assert "what Locust wrote before it stopped" in page
    assert 'data-testid="load-badge">failed<' in page


def test_a_step_load_takes_its_steps_users_and_think_time_from_the_form(staff, lab, monkeypatch):
    """Ensure the step fields reach the step load's environment, only for step_load, and bad ones start nothing."""
    started = []

    def start_run(spec, paths=None):
        started.append(spec)
        return RUN_ID

    monkeypatch.setattr(load, "start_run", start_run)
    monkeypatch.setattr(load, "run_status", lambda run_id, paths=None, **kw: status("running"))
    form = {"scenario": "step_load", "users": "40", "spawn_rate": "40", "duration": "32s", "workers": "0"}
    steps = {"steps": "4", "step_seconds": "8", "step_user": "browse", "think_time": "0.5"}
    assert staff.post("/load/start/", {**form, **steps}).status_code == 302
    assert started[-1].env == {"STEPS": "4", "STEP_SECONDS": "8", "STEP_USER": "browse", "THINK_TIME": "0.5"}
    staff.post("/load/start/", {**form, **steps, "scenario": "browse"})
    assert started[-1].env == {"THINK_TIME": "0.5"}  # the step fields are the step load's only
    staff.post("/load/start/", {**form, "steps": "", "step_seconds": "", "step_user": "", "think_time": ""})
    assert started[-1].env == {}
    for bad, said in (
        ({"steps": "0"}, "Steps '0'"),
        ({"steps": "x"}, "Steps 'x'"),
        ({"step_seconds": "601"}, "Step seconds '601'"),
        ({"step_user": "robot"}, "Step users 'robot'"),
        ({"think_time": "soon"}, "Think time 'soon'"),
    ):
        count = len(started)
        response = staff.post("/load/start/", {**form, **bad}, follow=True)
        assert len(started) == count, bad
        assert said in html.unescape(response.content.decode()), bad
    page = staff.get("/load/?scenario=step_load&steps=4&step_user=browse").content.decode()
    assert 'data-testid="step-fields"' in page and 'value="browse" selected' in page


def test_a_step_loads_run_page_shows_each_step_and_its_cores(client, monkeypatch):
    """Ensure a finished step load lists its steps (req/s, mean, p95, cores busy) and the run's CPU."""
    cpu = {"cores": 2, "busy_cores": 1.9, "load_generator_cores": 0.4, "database_cores": 0.3}
    steps = [
        {
            "users": users,
            "seconds": 8,
            "rps": rps,
            "failures_per_s": 0,
            "mean_ms": mean,
            "p50_ms": mean,
            "p95_ms": 2 * mean,
            "p99_ms": 3 * mean,
            "cpu": {**cpu, "cpu_ms_per_request": 12.5},
        }
        for users, rps, mean in ((10, 80.0, 20.0), (20, 150.0, 31.0), (30, 152.0, 90.0))
    ]
    finished = {
        **status("finished"),
        "finished_at": "2026-01-01T12:01:00+00:00",
        "summary": {
            "finished_at": "2026-01-01T12:01:00+00:00",
            "totals": {"requests": 80, "failures": 0, "rps": 20.0, "failure_ratio": 0.0},
            "steps": steps,
            "cpu": {**cpu, "cpu_ms_per_request": 11.0},
        },
    }
    monkeypatch.setattr(load, "run_status", lambda run_id, paths=None, **kw: finished)
    page = client.get(f"/load/{RUN_ID}/").content.decode()
    assert page.count('data-testid="load-step"') == 3
    assert "152" in page and "90" in page and "12.5" in page
    assert "1.9 of 2 cores busy" in page and "11.0 busy core-ms per request" in page


def test_the_load_page_scales_a_service_through_labctl(staff, monkeypatch, settings):
    """Ensure the Scale panel shows each service's workers and its form runs labctl scale, bad input refused."""
    from django.test import Client

    from labctl import facade

    rows = [
        {"service": "inventory", "workers": 1, "default": True, "running": 1, "threads": 8},
        {"service": "order", "workers": 2, "default": False, "running": 2, "threads": 8},
    ]
    monkeypatch.setattr(facade, "scale_rows", lambda root: rows)
    asked = []

    def scale_service(root, service, workers, *, urls):
        asked.append((service, workers, urls))
        if service == "payment":
            raise facade.ScaleError("supervisord does not run the payment this dashboard watches")
        return ["restarting inventory with 2 worker(s) ...", "table"]

    monkeypatch.setattr(facade, "scale_service", scale_service)
    page = staff.get("/load/").content.decode()
    assert 'data-testid="scale-inventory"' in page and "(default)" in page and 'data-testid="scale-apply"' in page
    said = staff.post("/load/scale/", {"service": "inventory", "workers": "2"}, follow=True).content.decode()
    assert asked[-1] == ("inventory", 2, settings.CHASSIS["PEERS"])
    assert "restarting inventory with 2 worker(s)" in said
    staff.post("/load/scale/", {"service": "inventory", "workers": "default"})
    assert asked[-1][:2] == ("inventory", None)
    count = len(asked)
    refused = staff.post("/load/scale/", {"service": "inventory", "workers": "lots"}, follow=True).content.decode()
    assert len(asked) == count and "Not scaled: Workers" in html.unescape(refused)
    refused = staff.post("/load/scale/", {"service": "payment", "workers": "2"}, follow=True).content.decode()
    assert "Not scaled: supervisord does not run the payment" in refused
    count = len(asked)
    Client().post("/load/scale/", {"service": "inventory", "workers": "2"})  # not logged in: nothing happens
    assert len(asked) == count
    monkeypatch.setattr(facade, "scale_rows", lambda root: None)
    assert "No supervisord runs the lab this dashboard watches" in staff.get("/load/").content.decode()
