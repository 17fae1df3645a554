"""The ``labctl`` command: set up, start, stop and watch the lab on one machine.

labctl setup              keys, databases, env files, migrations, seed data
labctl up                 setup, then start every service and wait until healthy
labctl down               stop every service and the process manager
labctl status             process state and /health/ of each service
labctl logs [svc] [-f]    show (or follow) the service logs
labctl restart <svc|all>  restart a service and wait until it is healthy
labctl keys [--dir DIR]   only generate the services' key pairs
labctl fault list|add|clear   break a service (latency, error, outage, database,
                          dependency, process) and clear it; see faultcli.py
labctl resilience [svc]   show or switch timeouts, retries, breakers, bulkheads
labctl audit              check the invariants across the services
labctl load --scenario S  run a Locust scenario of loadtests/ and keep its results
labctl scale [svc=N]      show or change how many gunicorn workers each service runs
labctl lab list|show|check|solve|reset|answer|report   the guided labs (labs/)
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from urllib.parse import urlsplit

from . import config, faultcli, health, load, provision, scale, supervisor
from .config import Paths, Service
from .labs import cli as labcli
from .text import table


def _echo(text: str = "") -> None:
    print(text, flush=True)


def _present(paths: Paths) -> list[Service]:
    return [s for s in config.APPS if paths.service_present(s)]


def database_label(paths: Paths, service: Service) -> str:
    """What the service's env file says about its database, in a few words."""
    url = provision.read_env_file(paths.env_file(service)).get("DATABASE_URL", "")
    parts = urlsplit(url)
    if parts.scheme == "mysql":
        return f"MySQL {parts.path.lstrip('/')}"
    if parts.scheme == "sqlite":
        return f"SQLite {Path(parts.path).name}"
    return "?"


# ---------------------------------------------------------------------- commands


def cmd_setup(paths: Paths, args) -> int:
    _echo(f"Setting up the lab in {paths.root}")
    result = provision.setup(paths, echo=_echo)
    _echo()
    if result.missing:
        _echo(f"Not set up (directory missing): {', '.join(result.missing)}")
    _echo("Ready to start: make up")
    return 0


def cmd_keys(paths: Paths, args) -> int:
    keys_dir = Path(args.dir) if args.dir else paths.keys
    created = provision.ensure_keys(keys_dir, [s.short for s in config.APPS])
    if args.django_secrets:
        provision.ensure_secret_files(keys_dir, [s.short for s in config.APPS])
    if args.database_passwords:
        provision.ensure_database_passwords(keys_dir, {s.short: s.schema for s in config.APPS})
    # In containers each service (and the MySQL server, for its passwords) runs as its own user,
    # which must own its dir.
    for owner in args.owner:
        name, _, ids = owner.partition("=")
        server = name == provision.DATABASE_SECRETS_DIR and args.database_passwords
        if not (name in config.APP_BY_NAME or server) or not ids:
            raise provision.ProvisionError(
                f"--owner wants SERVICE=UID[:GID] (or {provision.DATABASE_SECRETS_DIR}=UID with "
                f"--database-passwords), got {owner!r}"
            )
        uid, _, gid = ids.partition(":")
        # Its dir (0700) and the files in it: its private key and the public keys.
        for path in [keys_dir / name, *(keys_dir / name).iterdir()]:
            os.chown(path, int(uid), int(gid or uid))
    _echo(f"keys in {keys_dir}: " + (f"created for {', '.join(created)}" if created else "present"))
    return 0


def cmd_up(paths: Paths, args) -> int:
    _echo(f"Setting up the lab in {paths.root}")
    result = provision.setup(paths, echo=_echo, show_seed=False, reuse=True)
    services = _present(paths)
    if not services:
        _echo("No service directory exists yet: nothing to start.")
        return 1
    _echo()
    supervisor.ensure_running(paths, services, echo=_echo)
    _echo(f"waiting for /health/ of {len(services)} service(s) (up to {config.HEALTH_TIMEOUT_SECONDS}s) ...")

    def given_up(service: Service) -> bool:
        info = supervisor.process_info(paths).get(service.short)
        return bool(info) and info["statename"] == "FATAL"

    results = health.wait_healthy(services, config.HEALTH_TIMEOUT_SECONDS, given_up)
    # Background workers have no /health/: running past their startsecs is what counts.
    workers = [w for w in paths.present_workers() if w.app in services]
    worker_states = supervisor.wait_running(paths, [w.short for w in workers])
    _echo()
    _echo(_service_table(paths, services, results, workers, worker_states))
    _echo()
    _echo(f"database: {result.database.describe(paths)}")
    _echo(
        "redis:    "
        + (
            "one database number per service"
            if result.redis_ok
            else f"not reachable ({result.redis_reason}); file caches under var/cache"
        )
    )

    failed = [s for s in services if not results[s.short].ok]
    for service in failed:
        _echo()
        _echo(f"== {service.directory} is not healthy: {results[service.short].label()}")
        _echo(f"== last lines of {paths.log_file(service)}:")
        _echo(health.tail(paths.log_file(service)))
    failed_workers = [w for w in workers if worker_states[w.short] != "RUNNING"]
    for worker in failed_workers:
        _echo()
        _echo(f"== {worker.directory} is not running: {worker_states[worker.short]}")
        _echo(f"== last lines of {paths.log_file(worker)}:")
        _echo(health.tail(paths.log_file(worker)))
    if failed or failed_workers:
        _echo()
        _echo(f"{len(failed) + len(failed_workers)} program(s) did not come up. Logs: make logs   Stop: make down")
        return 1

    credentials = result.seed_output.get("user", "")
    if credentials:
        _echo()
        _echo(
            "Lab credentials (manage.py seed_lab in user_service"
            + (", as of its last setup" if "user" in result.reused else "")
            + "):"
        )
        _echo(_indent(credentials))
    others = [(s, result.seed_output.get(s.short, "")) for s in services if s.short != "user"]
    if any(text for _, text in others):
        _echo()
        _echo("Seed data of the other services" + (" (as of their last setup)" if result.reused else "") + ":")
        for service, text in others:
            for i, line in enumerate(text.splitlines()):
                _echo(f"  {service.directory if i == 0 else '':<18} {line}")
    if result.missing:
        _echo()
        _echo(f"Not started (directory missing): {', '.join(result.missing)}")
    _echo()
    if config.DASHBOARD in services:
        _echo(
            f"Start with the dashboard: {config.DASHBOARD.url}/ (its controls need a staff login, e.g. admin@lab.local)"
        )
    _echo(
        "The lab is up.  make status: health of each service   make logs: follow the logs   make down: stop everything"
    )
    return 0


def _service_table(paths: Paths, services: list[Service], results, workers=(), worker_states=None) -> str:
    rows = []
    for s in services:
        h = results.get(s.short)
        rows.append(
            [
                s.directory,
                s.url + "/",
                s.url + s.browse_path,
                s.url + "/api/docs/" if s.api_docs else "-",
                database_label(paths, s),
                "healthy" if h and h.ok else (h.label() if h else "-"),
            ]
        )
    for w in workers:
        state = (worker_states or {}).get(w.short, "-")
        rows.append(
            [w.directory, "-", "-", "-", database_label(paths, w.app), "running" if state == "RUNNING" else state]
        )
    return table(["service", "URL", "browsable API", "Swagger", "database", "status"], rows)


def cmd_status(paths: Paths, args) -> int:
    running = supervisor.is_running(paths)
    infos = supervisor.process_info(paths) if running else {}
    rows = []
    all_ok = True
    for s in _present(paths):
        info = infos.get(s.short)
        state = f"{info['statename']} ({info['description']})" if info else "stopped"
        h = health.check(s)
        all_ok = all_ok and h.ok and bool(info) and info["statename"] == "RUNNING"
        rows.append([s.directory, s.url + "/", database_label(paths, s), state, "healthy" if h.ok else h.label()])
    for w in paths.present_workers():
        info = infos.get(w.short)
        state = f"{info['statename']} ({info['description']})" if info else "stopped"
        all_ok = all_ok and bool(info) and info["statename"] == "RUNNING"
        rows.append([w.directory, "-", database_label(paths, w.app), state, "-"])
    _echo(table(["service", "URL", "database", "process", "health"], rows))
    _echo()
    if not running:
        _echo("supervisord is not running: the lab is down (make up starts it).")
        return 0
    if not all_ok:
        _echo("Some service is not healthy: make logs shows why.")
        return 1
    _echo("Every service is running and healthy.")
    return 0


def cmd_down(paths: Paths, args) -> int:
    if supervisor.shutdown(paths):
        _echo("The lab is stopped (every service and supervisord).")
    else:
        _echo("The lab was not running.")
    return 0


def cmd_logs(paths: Paths, args) -> int:
    if args.service:
        files = [paths.log_file(_program(args.service))]
    else:
        files = [paths.log_file(p) for p in [*_present(paths), *paths.present_workers()]]
    files = [f for f in files if f.exists()]
    if not files:
        _echo(f"No log yet under {paths.log} (make up writes them).")
        return 1
    cmd = ["tail", "-n", str(args.lines)] + (["-F"] if args.follow else []) + [str(f) for f in files]
    sys.stdout.flush()
    os.execvp("tail", cmd)
    return 0  # not reached


def cmd_restart(paths: Paths, args) -> int:
    if not supervisor.is_running(paths):
        _echo("The lab is not running: start it with make up.")
        return 1
    if args.service == "all":
        services, workers = _present(paths), paths.present_workers()
    else:
        program = _program(args.service)
        services = [program] if isinstance(program, Service) else []
        workers = [program] if isinstance(program, config.Worker) else []
    supervisor.ctl(paths, "restart", *[p.short for p in [*services, *workers]])
    results = health.wait_healthy(services, config.HEALTH_TIMEOUT_SECONDS)
    states = supervisor.wait_running(paths, [w.short for w in workers])
    failed = False
    for s in services:
        _echo(f"{s.directory}: {'healthy' if results[s.short].ok else results[s.short].label()}")
        failed = failed or not results[s.short].ok
    for w in workers:
        _echo(f"{w.directory}: {states[w.short]}")
        failed = failed or states[w.short] != "RUNNING"
    return 1 if failed else 0


def _program(name: str) -> Service | config.Worker:
    """The project or background worker that a supervisor program name stands for."""
    return config.APP_BY_NAME.get(name) or {w.short: w for w in config.WORKERS}[name]


# -------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    names = [s.short for s in config.APPS] + [w.short for w in config.WORKERS]
    parser = argparse.ArgumentParser(
        prog="labctl",
        description="Run the microservices lab on this machine (supervisord, MySQL or SQLite, Redis if present).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser(
        "setup", help="keys, databases, env files, migrate, collectstatic, seed (idempotent; starts nothing)"
    )
    sub.add_parser("up", help="setup, then start every service and wait until healthy")
    sub.add_parser("down", help="stop every service and supervisord")
    sub.add_parser("status", help="process state and /health/ of each service")
    faultcli.add_parsers(sub)

    logs = sub.add_parser("logs", help="show the service logs (all, or one service)")
    logs.add_argument("service", nargs="?", choices=names, help="one service (default: all)")
    logs.add_argument("-f", "--follow", action="store_true", help="keep following the logs")
    logs.add_argument("-n", "--lines", type=int, default=30, help="lines to show (default 30)")

    restart = sub.add_parser("restart", help="restart a service (or all) and wait until healthy")
    restart.add_argument("service", choices=names + ["all"])

    keys = sub.add_parser("keys", help="only generate the Ed25519 key pairs of the services")
    keys.add_argument("--dir", help="where to write them, a dir per identity (default: var/keys)")
    keys.add_argument(
        "--django-secrets",
        action="store_true",
        help="also a random django-secret-key in each identity's dir, kept once made (docker-compose)",
    )
    keys.add_argument(
        "--database-passwords",
        action="store_true",
        help="also random MySQL passwords: root's and each app's in mysql/, each app's in its dir (docker-compose)",
    )
    keys.add_argument(
        "--owner",
        action="append",
        default=[],
        metavar="SERVICE=UID[:GID]",
        help="give SERVICE's private key to this user (repeatable; containers)",
    )

    load.add_arguments(sub.add_parser("load", help="run a Locust scenario against the lab; results in var/loadtests/"))
    scale.add_arguments(sub.add_parser("scale", help="show or change how many gunicorn workers each service runs"))
    labcli.add_parser(sub)
    return parser


COMMANDS = {
    "setup": cmd_setup,
    "up": cmd_up,
    "down": cmd_down,
    "status": cmd_status,
    "logs": cmd_logs,
    "restart": cmd_restart,
    "keys": cmd_keys,
    "load": load.cmd_load,
    "scale": scale.cmd_scale,
    "lab": labcli.cmd_lab,
}

COMMANDS.update(faultcli.COMMANDS)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if config.IDENTITY_ERROR:
        print(f"labctl: {config.IDENTITY_ERROR}", file=sys.stderr, flush=True)
        return 2
    paths = Paths(config.find_root())
    try:
        return COMMANDS[args.command](paths, args)
    except (provision.ProvisionError, supervisor.PortInUse) as exc:
        print(f"\nlabctl {args.command}: FAILED\n{exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        return 130


def _indent(text: str, prefix: str = "  ") -> str:
    return "\n".join(prefix + line for line in text.splitlines())


if __name__ == "__main__":
    sys.exit(main())
