"""labctl's load and scale helpers on files alone (no lab, no Locust run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from labctl import load, scale, supervisor
from labctl.config import SERVICE_BY_NAME, Paths

from .conftest import ROOT


@pytest.mark.parametrize("text, seconds", [("90", 90), ("90s", 90), ("2m", 120), ("1h", 3600), ("1m30s", 90), (45, 45)])
def test_durations_read_like_locust_run_times(text, seconds):
    """Ensure run times are read in the forms Locust accepts."""
    assert load.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "soon", "5h", "-3s", "2h", "61m"])
def test_bad_or_unbounded_durations_are_refused(text):
    """Ensure a run cannot be unbounded or nonsensical."""
    with pytest.raises(load.LoadError):
        load.parse_duration(text)


def test_a_spec_refuses_what_would_not_run():
    """Ensure unknown scenarios, absurd loads and odd environment names are refused before anything starts."""
    for spec in (
        load.RunSpec(scenario="nope"),
        load.RunSpec(scenario="browse", users=0),
        load.RunSpec(scenario="browse", workers=99),
        load.RunSpec(scenario="browse", users=5000),  # the old bound: one click tied the machine up
        load.RunSpec(scenario="browse", workers=16),
        load.RunSpec(scenario="browse", env={"lower": "x"}),
    ):
        with pytest.raises(load.LoadError):
            spec.validate()


def test_only_one_run_at_a_time(tmp_path):
    """Ensure a run does not start while another one is live, and does once that one has ended."""
    paths = Paths(tmp_path)
    run_dir = load.new_run_dir(paths, "browse")
    # A process that names the run on its command line, as a live run's Locust does. (A shell
    # would exec `sleep` and lose the name; its command line is read once it is there.)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", str(run_dir)])
    for _ in range(50):
        if load._pid_runs(live.pid, str(run_dir)):
            break
        time.sleep(0.1)
    assert load._pid_runs(live.pid, str(run_dir)), Path(f"/proc/{live.pid}/cmdline").read_bytes()
    try:
        (run_dir / "run.json").write_text(
            json.dumps({"run_id": run_dir.name, "scenario": "browse", "state": "running", "pid": live.pid})
        )
        with pytest.raises(load.LoadError, match="one run at a time"):
            load.start_run(load.RunSpec(scenario="browse", urls={"inventory": "http://127.0.0.1:9"}), paths)
    finally:
        live.kill()
        live.wait()
    # That run is gone (died): the next one gets past the check, to the lab's health.
    with pytest.raises(load.LoadError, match="not healthy"):
        load.start_run(load.RunSpec(scenario="browse", urls={"inventory": "http://127.0.0.1:9"}), paths)


def _final_stats(run_dir):
    entries = [
        {
            "method": "POST",
            "name": "/api/orders/",
            "requests": 90,
            "failures": 3,
            "rps": 9.0,
            "avg_ms": 100,
            "p50_ms": 90,
            "p95_ms": 200,
            "p99_ms": 300,
            "min_ms": 50,
            "max_ms": 400,
        },
        {
            "method": "POST",
            "name": "/api/orders/ [declined card, expected]",
            "requests": 5,
            "failures": 0,
            "rps": 0.5,
            "avg_ms": 100,
            "p50_ms": 90,
            "p95_ms": 200,
            "p99_ms": 300,
            "min_ms": 50,
            "max_ms": 400,
        },
        {
            "method": "GET",
            "name": "/api/products/ [explained: payment outage]",
            "requests": 5,
            "failures": 0,
            "rps": 0.5,
            "avg_ms": 10,
            "p50_ms": 9,
            "p95_ms": 20,
            "p99_ms": 30,
            "min_ms": 5,
            "max_ms": 40,
        },
        {
            "method": "FLOW",
            "name": "order → terminal",
            "requests": 95,
            "failures": 0,
            "rps": 9.5,
            "avg_ms": 100,
            "p50_ms": 90,
            "p95_ms": 200,
            "p99_ms": 300,
            "min_ms": 50,
            "max_ms": 400,
        },
    ]
    (run_dir / "final_stats.json").write_text(
        json.dumps(
            {
                "entries": entries,
                "errors": [{"method": "POST", "name": "/api/orders/", "error": "boom", "occurrences": 3}],
                "seconds": 10,
            }
        )
    )


def test_summary_counts_expected_outcomes_apart_and_leaves_flows_out_of_requests(tmp_path):
    """Ensure totals count HTTP requests only, expected outcomes apart, and orders from the FLOW entries."""
    _final_stats(tmp_path)
    history = [
        "Timestamp,User Count,Type,Name,Requests/s,Failures/s,50%,95%,99%,Total Request Count,Total Failure Count"
    ]
    total = 0
    for second in range(12):
        users = 2 if second < 6 else 4
        total += users * 5
        # Locust's "current" rate is a sliding window that reads 0 at first: the steps use the totals.
        current = 0 if second < 4 else users * 5
        history.append(f"{1000 + second},{users},,Aggregated,{current},0,10,{users * 10},{users * 20},{total},0")
    (tmp_path / "locust_stats_history.csv").write_text("\n".join(history) + "\n")
    summary = load.summarize(tmp_path, spec=load.RunSpec(scenario="checkout"), exit_code=1, elapsed=10.0)
    totals = summary["totals"]
    assert (totals["requests"], totals["failures"]) == (100, 3)
    assert totals["failure_ratio"] == 0.03
    assert totals["expected_outcomes"] == {"declined": 5, "explained": 5}
    assert (totals["orders_finished"], totals["orders_per_s"]) == (95, 9.5)
    assert [(s["users"], s["rps"], s["failures_per_s"]) for s in summary["steps"]] == [(2, 10, 0), (4, 20, 0)]
    assert summary["steps"][1]["p95_ms"] == 40
    assert summary["machine"]["cpus"] >= 1
    assert json.loads((tmp_path / "summary.json").read_text())["totals"] == totals
    assert "5 declined cards" in load.render_summary(summary)


def test_each_step_has_its_mean_response_time_and_what_the_cores_did(tmp_path):
    """Ensure a step's mean is that of its own requests (not the run's so far) and its CPU is read from cpu.csv."""
    history = [
        "Timestamp,User Count,Type,Name,Requests/s,Failures/s,50%,95%,99%,Total Request Count,"
        "Total Failure Count,Total Average Response Time"
    ]
    cpu = [",".join(load.CPU_COLUMNS)]
    cores = os.cpu_count() or 1
    total = spent = 0
    for second in range(12):
        users, mean = (2, 10) if second < 6 else (4, 40)  # 10 requests/s at 10 ms, then 20/s at 40 ms
        total += users * 5
        spent += users * 5 * mean
        history.append(f"{1000 + second},{users},,Aggregated,0,0,{mean},{mean},{mean},{total},0,{spent / total}")
        # 100 jiffies per core and second; the cores idle half the time during the first step, never after;
        # Locust uses 0.1 of a core, the database 0.3.
        idle = 50 * cores * min(second, 5)
        cpu.append(f"{1000 + second},{100 * cores * second},{idle},{10 * second},{30 * second}")
    (tmp_path / "locust_stats_history.csv").write_text("\n".join(history) + "\n")
    (tmp_path / load.CPU_FILE).write_text("\n".join(cpu) + "\n")
    summary = load.summarize(tmp_path, spec=load.RunSpec(scenario="step_load"), exit_code=0, elapsed=12.0)
    first, second = summary["steps"]
    assert (first["mean_ms"], second["mean_ms"]) == (10, 40)
    assert first["cpu"]["busy_cores"] == pytest.approx(cores * 0.5, abs=0.01)
    assert second["cpu"]["busy_cores"] == pytest.approx(cores, abs=0.01)
    assert second["cpu"]["load_generator_cores"] == pytest.approx(0.1, abs=0.01)
    assert second["cpu"]["database_cores"] == pytest.approx(0.3, abs=0.01)
    assert second["cpu"]["cpu_ms_per_request"] == pytest.approx(1000 * cores / 20, rel=0.02)
    assert summary["cpu"]["cores"] == cores
    assert "cores busy" in load.render_summary(summary)


def test_the_cpu_sampler_writes_the_machine_and_its_own_process(tmp_path):
    """Ensure the sampler's rows count this process as the load generator and the machine's jiffies grow."""
    sampler = load.CpuSampler(tmp_path / load.CPU_FILE, interval=0.05)
    sampler.load_pids = [os.getpid()]
    sampler.start()
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline:
        pass  # busy: this process' CPU time grows
    sampler.stop()
    rows = load.read_cpu(tmp_path)
    assert len(rows) >= 3
    assert rows[-1]["total"] > rows[0]["total"]
    assert rows[-1]["load_generator"] > rows[0]["load_generator"]
    used = load.cpu_between(rows, rows[0]["t"], rows[-1]["t"])
    assert used["load_generator_cores"] > 0.3


def test_runs_are_listed_and_a_finished_one_reports_its_summary(tmp_path):
    """Ensure list_runs and run_status read what a run leaves behind, and stop_run leaves a finished run alone."""
    paths = Paths(tmp_path)
    run_dir = load.new_run_dir(paths, "checkout")
    _final_stats(run_dir)
    (run_dir / "run.json").write_text(
        json.dumps(
            {
                "run_id": run_dir.name,
                "scenario": "checkout",
                "state": "finished",
                "pid": 999999999,
                "spec": {"users": 4},
            }
        )
    )
    load.summarize(run_dir, spec=load.RunSpec(scenario="checkout"), exit_code=0, elapsed=10.0)
    listed = load.list_runs(paths)
    assert [r["run_id"] for r in listed] == [run_dir.name]
    assert listed[0]["totals"]["requests"] == 100
    status = load.run_status(run_dir.name, paths)
    assert status["state"] == "finished" and status["summary"]["totals"]["failures"] == 3
    assert load.stop_run(run_dir.name, paths) is False
    with pytest.raises(load.LoadError):
        load.run_status("../../etc", paths)


def test_the_locustfiles_refuse_a_target_off_this_machine():
    """Ensure a scenario will not load any address but the loopback one."""
    result = subprocess.run(
        [sys.executable, "-c", "import common"],
        cwd=ROOT / "loadtests",
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "ORDER_SERVICE_URL": "http://example.com"},
    )
    assert result.returncode != 0
    assert "only target this machine" in result.stderr


def test_scale_is_kept_and_changes_only_the_workers_of_that_service(tmp_path, monkeypatch):
    """Ensure labctl scale's counts reach the program's command, default counts render as before, bad input fails."""
    paths = Paths(tmp_path)
    inventory, order = SERVICE_BY_NAME["inventory"], SERVICE_BY_NAME["order"]
    default = supervisor.program_command(paths, inventory)
    assert "--workers 1 --threads 8 " in default
    # What `labctl scale` tells is what the command runs: 1 worker x 8 threads by default.
    assert (supervisor.DEFAULT_WORKERS, scale.THREADS_PER_WORKER) == (1, 8)
    monkeypatch.setattr(Paths, "service_present", lambda self, service: True)
    shown = scale.render_scale(paths)
    rows = {line.split()[0]: line.split()[1:] for line in shown.splitlines()[2:]}
    assert rows["inventory"] == ["1", "(default)", "-", "8"], shown
    assert "back to the default (1)" in scale.__doc__
    scale.write_scale(paths, scale.parse_assignments(["inventory=3"]))
    assert "--workers 3 " in supervisor.program_command(paths, inventory)
    assert supervisor.program_command(paths, order) == supervisor.program_command(
        Paths(tmp_path / "other"), order
    ).replace(str(tmp_path / "other"), str(tmp_path))
    conf = supervisor.render_config(paths, [order, inventory])
    rewritten = scale.rewrite_command(conf, "inventory", "NEW")
    changed = [line for line in rewritten.splitlines() if line not in conf.splitlines()]
    assert changed == ["command=NEW"]
    assert "--workers 3 " in scale.rendered_command(paths, inventory)
    scale.write_scale(paths, scale.parse_assignments(["inventory=default"]))
    assert supervisor.program_command(paths, inventory) == default
    for bad in (["inventory=0"], ["inventory=17"], ["nobody=2"], ["inventory"]):
        with pytest.raises(scale.ScaleError):
            scale.parse_assignments(bad)
    scale.scale_file(paths).write_text("{not json")
    with pytest.raises(scale.ScaleError):
        supervisor.program_command(paths, inventory)


def test_the_dashboards_scale_refuses_what_labctl_scale_would_not_do(tmp_path):
    """Ensure facade.scale_service refuses an unknown service, a count out of range and services supervisord
    does not run (a test lab's), in plain words, and reports nothing to scale without supervisord."""
    from labctl import facade

    urls = {name: f"http://127.0.0.1:{port}" for name, port in (("inventory", 1), ("order", 2))}
    for service, workers, said in (
        ("nobody", 2, "no service 'nobody'"),
        ("inventory", 0, "workers 0: from 1 to 16"),
        ("inventory", 17, "workers 17: from 1 to 16"),
        ("inventory", 2, "supervisord does not run the inventory this dashboard watches"),
    ):
        with pytest.raises(facade.ScaleError, match=said):
            facade.scale_service(tmp_path, service, workers, urls=urls)
    assert facade.scale_rows(tmp_path) is None
    assert not scale.scale_file(Paths(tmp_path)).exists()  # nothing was written
