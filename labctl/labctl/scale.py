"""Scale a service out or in: how many gunicorn worker processes each service runs.

    labctl scale                      each service's workers: configured and running
    labctl scale inventory=3          inventory runs 3 workers (only inventory restarts)
    labctl scale inventory=default    back to the default (1)

The counts are kept in ``var/scale.json``; ``supervisor.program_command``
reads them whenever it writes ``supervisord.conf``, so a scaled service stays
scaled across ``make down`` / ``make up``. A change is applied the way
``supervisorctl reread`` + ``update <program>`` does: only the programs whose
command changed restart. Each worker has ``supervisor.THREADS_PER_WORKER``
(8) threads, so a service handles ``8 x workers`` requests at once; more
workers also means more processes to share this machine's cores (and more
memory: about 90 MB each).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from . import config, health, supervisor
from .config import Paths
from .provision import ProvisionError
from .text import table

MIN_WORKERS, MAX_WORKERS = 1, 16
THREADS_PER_WORKER = supervisor.THREADS_PER_WORKER  # what GUNICORN_ARGS gives each worker


class ScaleError(ProvisionError):
    """A scale request or var/scale.json that does not make sense; the message says why."""


def scale_file(paths: Paths) -> Path:
    return paths.var / "scale.json"


def read_scale(paths: Paths) -> dict[str, int]:
    """The worker counts set by ``labctl scale`` (services not listed run the default)."""
    path = scale_file(paths)
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ScaleError(
            f"{path} cannot be read ({exc}); fix or delete it (labctl scale SERVICE=N rewrites it)"
        ) from exc
    if not isinstance(data, dict) or not all(
        name in config.SERVICE_BY_NAME and isinstance(n, int) and MIN_WORKERS <= n <= MAX_WORKERS
        for name, n in data.items()
    ):
        raise ScaleError(f"{path} should map service names to {MIN_WORKERS}..{MAX_WORKERS}, got {data!r}")
    return data


def parse_assignments(items: list[str]) -> dict[str, int | None]:
    """``["inventory=3", "order=default"]`` → ``{"inventory": 3, "order": None}`` (None: the default)."""
    changes: dict[str, int | None] = {}
    names = ", ".join(config.SERVICE_BY_NAME)
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or name not in config.SERVICE_BY_NAME:
            raise ScaleError(f"{item!r}: write SERVICE=WORKERS with SERVICE one of {names}")
        if value == "default":
            changes[name] = None
            continue
        if not value.isdigit() or not MIN_WORKERS <= int(value) <= MAX_WORKERS:
            raise ScaleError(f"{item!r}: workers must be a number from {MIN_WORKERS} to {MAX_WORKERS} (or default)")
        changes[name] = int(value)
    return changes


def write_scale(paths: Paths, changes: dict[str, int | None]) -> dict[str, int]:
    """Merge ``changes`` into var/scale.json; return the new counts."""
    counts = read_scale(paths)
    for name, workers in changes.items():
        if workers is None or workers == supervisor.DEFAULT_WORKERS:
            counts.pop(name, None)
        else:
            counts[name] = workers
    paths.var.mkdir(parents=True, exist_ok=True)
    tmp = scale_file(paths).with_suffix(".tmp")
    tmp.write_text(json.dumps(dict(sorted(counts.items())), indent=2) + "\n")
    tmp.replace(scale_file(paths))
    return counts


def _children(pid: int) -> list[int]:
    """Direct children of ``pid``, from /proc (gunicorn's workers are its master's children)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name (2nd field) may hold spaces; fields after its ')' are fixed.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def running_workers(paths: Paths) -> dict[str, int | None]:
    """Live worker processes of each service under supervisor (None when not running)."""
    infos = supervisor.process_info(paths)
    out: dict[str, int | None] = {}
    for service in config.SERVICES:
        info = infos.get(service.short)
        out[service.short] = len(_children(info["pid"])) if info and info.get("pid") else None
    return out


def render_scale(paths: Paths) -> str:
    counts = read_scale(paths)
    running = running_workers(paths)
    rows = []
    for service in config.SERVICES:
        if not paths.service_present(service):
            continue
        workers = counts.get(service.short, supervisor.DEFAULT_WORKERS)
        live = running.get(service.short)
        rows.append(
            [
                service.short,
                str(workers) + ("" if service.short in counts else " (default)"),
                "-" if live is None else str(live),
                str(workers * THREADS_PER_WORKER),
            ]
        )
    headers = ["service", "workers", "running", "concurrent requests"]
    return table(headers, rows)


def apply_scale(paths: Paths, changes: dict[str, int | None], echo=print) -> int:
    """Record the new counts and restart only the services whose command changed; wait until healthy."""
    before = {s.short: rendered_command(paths, s) for s in config.SERVICES}
    write_scale(paths, changes)
    changed = [s for s in config.SERVICES if rendered_command(paths, s) != before[s.short]]
    if not supervisor.is_running(paths):
        echo("Saved in var/scale.json; the lab is not running: make up starts the services with these counts.")
        return 0
    if not changed:
        echo("Nothing changes: every service already runs with that many workers.")
        return 0
    # Only the command lines of the changed programs are rewritten: whatever else
    # the running config holds stays as `labctl up` wrote it.
    conf = paths.supervisord_conf
    text = conf.read_text()
    for service in changed:
        text = rewrite_command(text, service.short, rendered_command(paths, service))
    conf.write_text(text)
    supervisor.ctl(paths, "reread", capture=True)
    for service in changed:
        echo(f"restarting {service.short} with {supervisor.gunicorn_workers(paths, service)} worker(s) ...")
        supervisor.ctl(paths, "update", service.short, capture=True)
    results = health.wait_healthy(changed, config.HEALTH_TIMEOUT_SECONDS)
    failed = [s for s in changed if not results[s.short].ok]
    for service in failed:
        echo(f"{service.directory} is not healthy: {results[service.short].label()} (make logs s={service.short})")
    echo(render_scale(paths))
    return 1 if failed else 0


def rendered_command(paths: Paths, service) -> str:
    """The ``command=`` value ``labctl up`` would write for ``service`` now."""
    prefix = "command="
    in_section = False
    for line in supervisor.render_config(paths, [service]).splitlines():
        stripped = line.strip()
        if stripped.startswith("["):
            in_section = stripped == f"[program:{service.short}]"
        elif in_section and stripped.startswith(prefix):
            return stripped[len(prefix) :]
    raise ScaleError(f"supervisor's config has no command for {service.short}")


def rewrite_command(conf_text: str, program: str, command: str) -> str:
    """``conf_text`` with the ``command=`` line of ``[program:<program>]`` replaced."""
    lines = conf_text.splitlines(keepends=True)
    in_section = False
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("["):
            in_section = stripped == f"[program:{program}]"
        elif in_section and stripped.startswith("command="):
            lines[i] = f"command={command}\n"
    return "".join(lines)


def cpu_note() -> str:
    cores = os.cpu_count() or 1
    return (
        f"This machine has {cores} core(s): more worker processes than cores adds queueing, "
        "not speed, for CPU-bound work."
    )


def add_arguments(parser) -> None:
    """The arguments of ``labctl scale``."""
    parser.add_argument(
        "assignments",
        nargs="*",
        metavar="SERVICE=WORKERS",
        help=f"e.g. inventory=3 ({MIN_WORKERS}..{MAX_WORKERS}, or default); none: show the scale",
    )


def cmd_scale(paths: Paths, args) -> int:
    """``labctl scale``: show the workers of each service, or change some."""
    if not args.assignments:
        print(render_scale(paths))
        print()
        print(cpu_note())
        return 0
    return apply_scale(paths, parse_assignments(args.assignments))
