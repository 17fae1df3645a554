"""``labctl fault``, ``labctl resilience`` and ``labctl audit``: break the lab and judge it, from a terminal.

    labctl fault list [service]                 active faults of every service (or one)
    labctl fault add <service> <kind> [...]     inject one (latency, error, outage, database, dependency)
    labctl fault add <program> process --action stop|kill|restart [--ttl S]
    labctl fault clear <service> [fault-id]     clear one service's faults (or one of them)
    labctl fault clear --all                    clear every service's faults
    labctl resilience [service] [--set breaker.fail_max=3 ...] [--reset-breakers]
    labctl audit [--deadline S] [--json]        check the invariants across the services

They speak to each service's ``/_lab/`` API as the lab admin
(:class:`labctl.labapi.LabApi`); process faults go through supervisord
(:mod:`labctl.process`). The services are found at their default ports unless
``--urls``, ``LAB_URLS`` (``order=http://127.0.0.1:9002,payment=...``) or
``<NAME>_SERVICE_URL`` say otherwise — that is how tests point labctl at a
lab started on free ports.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from chassis.parts import FAULT_KINDS

from . import audit, config, process
from .config import Paths
from .labapi import LabApi, LabApiError
from .text import table

SERVICE_NAMES = tuple(s.short for s in config.SERVICES)
KINDS = (*FAULT_KINDS, "process")
SWITCH_SECTIONS = ("timeouts", "retries", "breaker", "bulkhead", "fallback", "unsafe")


class CliError(Exception):
    """A mistake in what was asked, or a service that refused it; printed as is, exit 1."""


def _echo(text: str = "") -> None:
    print(text, flush=True)


# ----------------------------------------------------------------------------- where the services are


def parse_urls(text: str) -> dict[str, str]:
    """``order=http://127.0.0.1:9002,payment=http://...`` → ``{"order": ..., "payment": ...}``."""
    urls = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, url = item.partition("=")
        name, url = name.strip(), url.strip().rstrip("/")
        if not sep or name not in SERVICE_NAMES or not url.startswith(("http://", "https://")):
            raise CliError(
                f"bad service URL {item!r}: expected NAME=http://HOST:PORT with NAME one of {', '.join(SERVICE_NAMES)}"
            )
        urls[name] = url
    return urls


def resolve_urls(option: str | None = None, environ=None) -> dict[str, str]:
    """Each service's base URL: ``--urls``, then ``LAB_URLS``, then ``<NAME>_SERVICE_URL``, then the default port."""
    environ = os.environ if environ is None else environ
    urls = {s.short: s.url for s in config.SERVICES}
    for service in config.SERVICES:
        if environ.get(service.env_var):
            urls[service.short] = environ[service.env_var].rstrip("/")
    urls.update(parse_urls(environ.get("LAB_URLS", "")))
    urls.update(parse_urls(option or ""))
    return urls


def _api(paths: Paths, args) -> LabApi:
    return LabApi(paths, urls=resolve_urls(getattr(args, "urls", None)))


# ----------------------------------------------------------------------------- service answers


def _flatten_fields(fields, prefix: str = "") -> list[str]:
    if isinstance(fields, dict):
        out = []
        for key, value in fields.items():
            out.extend(_flatten_fields(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    messages = fields if isinstance(fields, list) else [fields]
    return [f"{prefix}: {message}" if prefix else str(message) for message in messages]


def error_text(service: str, response) -> str:
    """A service's error answer in one or a few plain lines, naming each field at fault."""
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    head = f"{service} answered {response.status_code} {body.get('code', '')}".rstrip()
    fields = body.get("fields")
    if fields:
        return head + ":\n" + "\n".join(f"  {line}" for line in _flatten_fields(fields))
    message = body.get("message") or response.text[:200].strip() or response.reason
    return f"{head}: {message}"


def _why(exc: BaseException | None) -> str:
    """The innermost reason of a failed connection, in a few words (``Connection refused``)."""
    text = str(exc or "")
    for known in (
        "Connection refused",
        "Connection reset",
        "RemoteDisconnected",
        "timed out",
        "Name or service not known",
    ):
        if known in text:
            return known
    return text.rsplit(":", 1)[-1].strip(" ')\"")[:80]


def _call(api: LabApi, method: str, service: str, path: str, **kwargs) -> dict:
    try:
        response = api.call(method, service, path, **kwargs)
    except LabApiError as exc:
        raise CliError(f"{exc} ({_why(exc.__cause__)}; is the lab running? make status)") from exc
    if response.status_code >= 400:
        raise CliError(error_text(service, response))
    try:
        return response.json()
    except ValueError as exc:
        raise CliError(f"{service} answered {response.status_code} with something that is not JSON") from exc


# ----------------------------------------------------------------------------- fault: rendering


def describe_parameters(fault: dict) -> str:
    """What the fault does, in a few words: ``delay 300 ms ±50``, ``status 503, p=0.3``."""
    kind, parts = fault.get("kind"), []
    delay = f"{fault.get('delay_ms', 0)} ms" + (f" ±{fault['jitter_ms']}" if fault.get("jitter_ms") else "")
    if kind == "latency":
        parts.append(f"delay {delay}")
    elif kind == "error":
        parts.append(
            f"status {fault.get('status', 503)}"
            + (", after serving (answer lost)" if fault.get("mode") == "after" else "")
        )
    elif kind == "database":
        parts.append(
            f"mode {fault.get('mode') or 'fail'}" + (f", delay {delay}" if fault.get("mode") == "slow" else "")
        )
    elif kind == "dependency":
        parts.append(
            f"target {fault.get('target')}, mode {fault.get('mode') or 'fail'}"
            + (f", delay {delay}" if fault.get("mode") == "delay" else "")
        )
    elif kind == "outage":
        parts.append("503 to every request, /health/ included")
    elif kind == "process":
        parts.append(f"action {fault.get('action')}")
    probability = fault.get("probability", 1.0)
    if probability is not None and probability < 1.0:
        parts.append(f"p={probability:g}")
    return ", ".join(parts) or "-"


def describe_scope(fault: dict) -> str:
    method, prefix = fault.get("method") or "", fault.get("path_prefix") or ""
    if not method and not prefix:
        return "all requests" if fault.get("kind") != "dependency" else "all calls"
    return f"{method or 'any method'} {prefix or '/'}".strip()


def expires_in(expires_at: float | None, now: float) -> str:
    if not expires_at:
        return "never"
    left = expires_at - now
    if left <= 0:
        return "now"
    if left < 120:
        return f"{left:.0f} s"
    return f"{left / 60:.0f} min"


def render_faults(faults: list[dict], now: float) -> str:
    """One table of faults; each dict carries its ``service`` (program for process faults)."""
    if not faults:
        return "No active fault."
    rows = [
        [
            f.get("id", "-"),
            f["service"],
            f["kind"],
            describe_parameters(f),
            describe_scope(f),
            expires_in(f.get("expires_at"), now),
        ]
        for f in faults
    ]
    return table(["id", "service", "kind", "parameters", "scope", "expires in"], rows)


# ----------------------------------------------------------------------------- fault: commands


def fault_body(args) -> dict:
    """The ``PUT /_lab/faults/`` body for ``labctl fault add`` (only what was given)."""
    body = {"kind": args.kind}
    for option, key in (
        ("delay_ms", "delay_ms"),
        ("jitter_ms", "jitter_ms"),
        ("probability", "probability"),
        ("status", "status"),
        ("mode", "mode"),
        ("target", "target"),
        ("path_prefix", "path_prefix"),
        ("method", "method"),
        ("ttl", "ttl_seconds"),
    ):
        value = getattr(args, option, None)
        if value is not None:
            body[key] = value.upper() if option == "method" else value
    return body


def _services(service: str | None) -> list[str]:
    return [service] if service else list(SERVICE_NAMES)


def cmd_fault_list(paths: Paths, args) -> int:
    api, now, faults, problems = _api(paths, args), time.time(), [], []
    stopped = {entry["program"]: entry for entry in process.active(paths)}
    for name, entry in stopped.items():
        if args.service in (None, name):
            faults.append(
                {"id": "-", "service": name, "kind": "process", "action": "stop", "expires_at": entry.get("restart_at")}
            )
    for service in _services(args.service):
        try:
            body = _call(api, "GET", service, "/_lab/faults/")
        except CliError as exc:
            if service not in stopped:  # a program stopped by a fault is expected to be silent
                problems.append(str(exc))
            continue
        faults.extend({**fault, "service": service} for fault in body.get("faults", []))
    answered = len(_services(args.service)) - len(problems)
    if faults or not problems:
        _echo(render_faults(faults, now))
    elif answered:
        _echo("No active fault on the services that answered.")
    for problem in problems:
        print(problem, file=sys.stderr, flush=True)
    return 1 if problems else 0


def cmd_fault_add(paths: Paths, args) -> int:
    if args.kind == "process":
        if not args.action:
            raise CliError("a process fault needs --action stop, kill or restart")
        others = [
            f"--{o.replace('_', '-')}"
            for o in ("delay_ms", "jitter_ms", "probability", "status", "mode", "target", "path_prefix", "method")
            if getattr(args, o) is not None
        ]
        if others:
            raise CliError(f"a process fault takes only --action and --ttl, not {', '.join(others)}")
        try:
            lines = process.process_fault(paths, program=args.service, action=args.action, ttl=args.ttl)
        except process.ProcessFaultError as exc:
            raise CliError(str(exc)) from exc
        for line in lines:
            _echo(line)
        return 0
    if args.action is not None:
        raise CliError("--action belongs to process faults (labctl fault add <program> process --action ...)")
    if args.service not in SERVICE_NAMES:
        raise CliError(
            f"{args.service!r} is not a service with /_lab/faults/ ({', '.join(SERVICE_NAMES)}); "
            f"a program such as {args.service} takes process faults only "
            f"(labctl fault add {args.service} process --action kill)"
        )
    body = _call(_api(paths, args), "PUT", args.service, "/_lab/faults/", json=fault_body(args))
    added = {**body["added"], "service": args.service}
    expiry = (
        f"expires in {expires_in(added['expires_at'], time.time())}" if added.get("expires_at") else "until cleared"
    )
    _echo(
        f"Added {added['id']} on {args.service}: {added['kind']}, {describe_parameters(added)}, "
        f"{describe_scope(added)}, {expiry}"
    )
    return 0


def cmd_fault_clear(paths: Paths, args) -> int:
    if args.all == bool(args.service):
        raise CliError("say which: labctl fault clear <service> [fault-id], or labctl fault clear --all")
    if args.all and args.fault_id:
        raise CliError("--all clears every fault; leave the fault id out")
    api, problems = _api(paths, args), []
    if args.service and args.service not in SERVICE_NAMES:
        if args.fault_id:
            raise CliError(f"{args.service} has no fault ids; labctl fault clear {args.service} starts it again")
        return _clear_process(paths, args.service)
    # A program stopped by a process fault is started first, so that its own faults can then be cleared.
    if not args.fault_id and _clear_process(paths, None if args.all else args.service, quiet=True):
        problems.append("a program stopped by a process fault could not be started")
    for service in _services(args.service):
        path = f"/_lab/faults/{args.fault_id}/" if args.fault_id else "/_lab/faults/"
        try:
            body = _call(api, "DELETE", service, path)
        except CliError as exc:
            problems.append(str(exc))
            continue
        _echo(f"{service}: cleared {body.get('cleared', 0)} fault(s)")
    for problem in problems:
        print(problem, file=sys.stderr, flush=True)
    return 1 if problems else 0


def _clear_process(paths: Paths, program: str | None, quiet: bool = False) -> int:
    try:
        lines = process.clear(paths, program)
    except process.ProcessFaultError as exc:
        print(str(exc), file=sys.stderr, flush=True)
        return 1
    for line in lines:
        _echo(line)
    if not lines and not quiet:
        _echo(f"{program}: no process fault to clear")
    return 0


def cmd_fault(paths: Paths, args) -> int:
    return {"list": cmd_fault_list, "add": cmd_fault_add, "clear": cmd_fault_clear}[args.fault_command](paths, args)


# ----------------------------------------------------------------------------- resilience


def _coerce(text: str):
    lowered = text.strip().lower()
    if lowered in ("true", "on", "yes"):
        return True
    if lowered in ("false", "off", "no"):
        return False
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_set(items: list[str]) -> dict:
    """``["breaker.fail_max=3", "retries.enabled=false"]``
    → ``{"breaker": {"fail_max": 3}, "retries": {"enabled": False}}``."""
    changes: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or not name or not value.strip():
            raise CliError(f"--set wants SWITCH.SETTING=VALUE (breaker.fail_max=3), got {item!r}")
        if section not in SWITCH_SECTIONS:
            raise CliError(f"unknown switch {section!r} in {item!r}; switches: {', '.join(SWITCH_SECTIONS)}")
        changes.setdefault(section, {})[name] = _coerce(value)
    return changes


def _check_known(changes: dict, switches: dict, service: str) -> None:
    for section, values in changes.items():
        known = switches.get(section, {})
        unknown = [k for k in values if k not in known]
        if unknown:
            raise CliError(f"{service} has no setting {section}.{unknown[0]}; {section} has: {', '.join(known)}")


def _on_off(value) -> str:
    return "on" if value else "off"


def render_resilience(bodies: dict[str, dict]) -> str:
    """The switches (one row per service and mechanism) and the breakers (one row per service and peer)."""
    rows = []
    for service, body in bodies.items():
        for section, values in body.get("switches", {}).items():
            settings = ", ".join(f"{k}={v}" for k, v in values.items() if k != "enabled")
            if section == "unsafe":  # no "enabled": each of its switches takes a defence away when on
                on = [name for name, value in values.items() if value]
                rows.append([service, section, "UNSAFE ON" if on else "off", ", ".join(on) or "-"])
                continue
            rows.append([service, section, _on_off(values.get("enabled")), settings or "-"])
    breakers = []
    for service, body in bodies.items():
        for peer, state in body.get("breakers", {}).items():
            opened = state.get("opened_at") if state.get("state") != "closed" else None
            breakers.append(
                [
                    service,
                    peer,
                    state.get("state", "?"),
                    str(state.get("fail_counter", "?")),
                    str(state.get("fail_max", "?")),
                    f"{state.get('reset_timeout', 0):g} s",
                    opened or "-",
                ]
            )
    parts = [table(["service", "switch", "state", "settings"], rows)]
    parts.append(
        table(["service", "peer", "breaker", "failures", "fail_max", "reset_timeout", "opened at"], breakers)
        if breakers
        else "No breaker (these services call no peer)."
    )
    return "\n\n".join(parts)


def cmd_resilience(paths: Paths, args) -> int:
    api, services = _api(paths, args), _services(args.service)
    changes = parse_set(args.set or [])
    if changes:
        for service in services:  # refuse a typo before changing anything anywhere
            _check_known(changes, _call(api, "GET", service, "/_lab/resilience/")["switches"], service)
    bodies = {}
    for service in services:
        if changes or args.reset_breakers:
            put = {**changes, **({"reset_breakers": True} if args.reset_breakers else {})}
            bodies[service] = _call(api, "PUT", service, "/_lab/resilience/", json=put)
        else:
            bodies[service] = _call(api, "GET", service, "/_lab/resilience/")
    _echo(render_resilience(bodies))
    return 0


# ----------------------------------------------------------------------------- audit


def cmd_audit(paths: Paths, args) -> int:
    try:
        result = audit.run_audit(_api(paths, args), deadline_seconds=args.deadline)
    except LabApiError as exc:
        print(
            f"labctl audit: cannot audit: {str(exc).rstrip('.')}.\n"
            "The audit needs every service's answer: is a fault in the way (labctl fault list), "
            "is the lab up (make status)?",
            file=sys.stderr,
            flush=True,
        )
        return 2
    _echo(json.dumps(result, indent=2) if args.json else audit.render(result))
    return 0 if result["ok"] else 1


def cmd_start_after(paths: Paths, args) -> int:
    return process.start_after(paths, args.ttl, args.program)


# ----------------------------------------------------------------------------- parsers


def _urls_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--urls",
        metavar="NAME=URL,...",
        help="where the services listen, e.g. order=http://127.0.0.1:9002 "
        "(default: LAB_URLS, <NAME>_SERVICE_URL, then the standard ports)",
    )


def add_parsers(sub) -> None:
    """Add ``fault``, ``resilience``, ``audit`` (and the internal ``_start-after``) to labctl's subcommands."""
    fault = sub.add_parser(
        "fault", help="list, add or clear faults (latency, error, outage, database, dependency, process)"
    )
    fault_sub = fault.add_subparsers(dest="fault_command", required=True, metavar="ACTION")

    listing = fault_sub.add_parser("list", help="the active faults of every service (or one)")
    listing.add_argument("service", nargs="?", choices=SERVICE_NAMES + process.PROGRAMS[len(SERVICE_NAMES) :])
    _urls_option(listing)

    add = fault_sub.add_parser(
        "add",
        help="inject a fault",
        description="Inject a fault. Examples: labctl fault add payment outage --ttl 60; "
        "labctl fault add order dependency --target payment --mode hang; "
        "labctl fault add worker process --action kill",
    )
    add.add_argument(
        "service",
        help=f"a service ({', '.join(SERVICE_NAMES)}) or, for process faults, "
        f"a program ({', '.join(process.PROGRAMS)})",
    )
    add.add_argument("kind", choices=KINDS)
    add.add_argument("--delay-ms", type=int, metavar="MS", help="latency, slow database or delayed dependency (ms)")
    add.add_argument("--jitter-ms", type=int, metavar="MS", help="± random part of the delay (ms)")
    add.add_argument("--probability", type=float, metavar="P", help="share of requests hit, 0..1 (default 1)")
    add.add_argument("--status", type=int, metavar="STATUS", help="HTTP status of an error fault (default 503)")
    add.add_argument(
        "--mode",
        metavar="MODE",
        help="database: fail|slow; dependency: fail|delay|hang; error: after (serve, then lose the answer)",
    )
    add.add_argument("--target", metavar="PEER", help="dependency: the peer whose calls suffer")
    add.add_argument("--path-prefix", metavar="PREFIX", help="only requests whose path starts with this")
    add.add_argument("--method", metavar="METHOD", help="only requests with this HTTP method")
    add.add_argument("--ttl", type=int, metavar="SECONDS", help="seconds after which the fault clears itself")
    add.add_argument("--action", choices=process.ACTIONS, help="process: stop, kill (SIGKILL) or restart")
    _urls_option(add)

    clear = fault_sub.add_parser("clear", help="clear a service's faults (or one), or every fault with --all")
    clear.add_argument("service", nargs="?")
    clear.add_argument("fault_id", nargs="?")
    clear.add_argument("--all", action="store_true", help="every service (and programs stopped by a fault)")
    _urls_option(clear)

    resilience = sub.add_parser("resilience", help="show or change the resilience switches and breakers")
    resilience.add_argument("service", nargs="?", choices=SERVICE_NAMES, help="one service (default: all)")
    resilience.add_argument(
        "--set",
        action="append",
        metavar="SWITCH.SETTING=VALUE",
        help="e.g. breaker.fail_max=3, retries.enabled=false (repeatable)",
    )
    resilience.add_argument("--reset-breakers", action="store_true", help="close every breaker")
    _urls_option(resilience)

    audit_parser = sub.add_parser(
        "audit", help="check the invariants across services (exit 1 on a violation, 2 when a service cannot answer)"
    )
    audit_parser.add_argument(
        "--deadline",
        type=int,
        default=audit.DEFAULT_DEADLINE_SECONDS,
        help="seconds an order may stay in progress (default %(default)s)",
    )
    audit_parser.add_argument("--json", action="store_true", help="the result as JSON")
    _urls_option(audit_parser)

    start_after = sub.add_parser("_start-after")  # internal: the timer of `fault add ... process --action stop --ttl`
    start_after.add_argument("ttl", type=float)
    start_after.add_argument("program")


def run(command, paths: Paths, args) -> int:
    """Run one of these commands, printing a :class:`CliError` plainly with exit 1."""
    try:
        return command(paths, args)
    except CliError as exc:
        print(f"labctl {args.command}: {exc}", file=sys.stderr, flush=True)
        return 1


COMMANDS = {
    "fault": lambda paths, args: run(cmd_fault, paths, args),
    "resilience": lambda paths, args: run(cmd_resilience, paths, args),
    "audit": lambda paths, args: run(cmd_audit, paths, args),
    "_start-after": cmd_start_after,
}
