"""What tracing and metrics cost: the same read endpoint with both on, then both off.

Usage: .venv/bin/python loadtests/overhead.py [--rounds 3] [--seconds 8]

Starts two extra inventory_service gunicorns side by side on free loopback
ports, with the lab's own configuration (var/env/inventory.env, so `make up`
first) and the same gunicorn settings: one as the lab runs (OpenTelemetry
exporting every span to the dashboard's collector, Prometheus metrics on),
one with `OTEL_SDK_DISABLED=true LAB_METRICS=off`. wrk loads
`GET /api/products/` on each in turn, several rounds interleaved so a busy
moment of the machine hits both; the best round of each is compared, and so
is the servers' CPU time per request, which a busy neighbour inflates less.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "loadtests"))

from bench import WRK_CONNECTIONS, CpuMeter, free_port, wrk  # noqa: E402

GUNICORN = [
    "--workers",
    "2",
    "--threads",
    "4",
    "--worker-class",
    "gthread",
    "--timeout",
    "30",
    "--config",
    "python:chassis.gunicorn_conf",
]


def start(name: str, extra_env: dict, workdir: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    metrics = workdir / name
    metrics.mkdir()
    env = {
        **os.environ,
        "LAB_ROOT": str(ROOT),
        "PROMETHEUS_MULTIPROC_DIR": str(metrics),
        "OTEL_TRACES_SAMPLER": "always_on",
        **extra_env,
    }
    env.pop("PYTEST_VERSION", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "config.wsgi:application", "--bind", f"127.0.0.1:{port}", *GUNICORN],
        cwd=ROOT / "inventory_service",
        env=env,
        stdout=(workdir / f"{name}.log").open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/health/", timeout=2).status_code == 200:
                return proc, url
        except requests.RequestException:
            time.sleep(0.3)
    raise RuntimeError(f"{name} did not become healthy; see {workdir / (name + '.log')}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=8)
    args = parser.parse_args(argv)
    if not (ROOT / "var" / "env" / "inventory.env").exists():
        print("Run `make up` first: the measurement uses the lab's inventory database.", file=sys.stderr)
        return 2
    try:
        collector = requests.get("http://127.0.0.1:8000/health/", timeout=2).status_code == 200
    except requests.RequestException:
        collector = False
    workdir = Path(tempfile.mkdtemp(prefix="lab-overhead-"))
    procs = []
    try:
        on, on_url = start("on", {}, workdir)
        procs.append(on)
        off, off_url = start("off", {"OTEL_SDK_DISABLED": "true", "LAB_METRICS": "off"}, workdir)
        procs.append(off)
        results = {"on": [], "off": []}
        cpu_ms = {"on": [], "off": []}
        for _ in range(args.rounds):
            for name, proc, url in (("on", on, on_url), ("off", off, off_url)):
                figures = wrk(f"{url}/api/products/", args.seconds, cpu=CpuMeter(lambda pid=proc.pid: pid))
                results[name].append(figures["rps"])
                cpu_ms[name].append(figures.get("server_cpu_ms"))
        best = {name: max(values) for name, values in results.items()}
        slower = round(100 * (1 - best["on"] / best["off"]), 1)
        least_cpu = {name: min(v for v in values if v is not None) for name, values in cpu_ms.items()}
        summary = {
            "date": date.today().isoformat(),
            "cores": os.cpu_count(),
            "endpoint": "inventory GET /api/products/",
            "gunicorn": " ".join(GUNICORN[:8]),
            "generator": (
                f"wrk 1 thread, {WRK_CONNECTIONS} connections, {args.seconds} s x {args.rounds} rounds, interleaved"
            ),
            "spans_exported_to_collector": collector,
            "rounds_rps": results,
            "best_rps": best,
            "slower_percent": slower,
            "rounds_server_cpu_ms_per_request": cpu_ms,
            "least_server_cpu_ms_per_request": least_cpu,
            "cpu_overhead_percent": round(100 * (least_cpu["on"] / least_cpu["off"] - 1), 1),
            "target": "<= 10 % slower with both on",
            "met": slower <= 10,
        }
        out = ROOT / "loadtests" / "results" / f"{date.today().isoformat()}-overhead.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(summary, indent=2) + "\n")
        print(json.dumps(summary, indent=2))
        return 0
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
