"""Process faults: really stop, kill or restart a program of the lab, through supervisord.

The other fault kinds are played by the services themselves (``/_lab/faults/``);
a process fault is the one a service cannot play on itself, so labctl asks the
process manager over its XML-RPC socket (:func:`labctl.supervisor.rpc`):

``kill``     SIGKILL to the program's whole process group (a gunicorn master
             and its workers, a Celery worker and its pool), as a crash or the
             OOM killer would; supervisord sees an unexpected exit and its
             ``autorestart`` brings the program back.
``stop``     a clean stop. With a TTL, a small detached
             ``python -m labctl _start-after <ttl> <program>`` starts it again
             when the TTL is over, so the fault clears itself like the others.
``restart``  stop, then start (waiting until supervisord says RUNNING).

Programs stopped by a fault are remembered in ``var/run/process-faults.json``
so ``labctl fault list`` can show them and ``labctl fault clear`` can start
them again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import xmlrpc.client
from dataclasses import dataclass
from pathlib import Path

from . import supervisor
from .config import DASHBOARD, SERVICES, WORKERS, Paths

ACTIONS = ("stop", "kill", "restart")
# The services first (faultcli lists the rest as the programs that are not services).
PROGRAMS = (*(s.short for s in SERVICES), *(w.short for w in WORKERS), DASHBOARD.short)


class ProcessFaultError(Exception):
    """The process fault could not be applied; the message says why in plain words."""


@dataclass(frozen=True)
class Program:
    """One supervisord process: ``group:name`` and what supervisord says of it."""

    group: str
    name: str
    state: str
    pid: int

    @property
    def spec(self) -> str:
        return f"{self.group}:{self.name}"


def _state_file(paths: Paths) -> Path:
    return paths.run / "process-faults.json"


def _read_state(paths: Paths) -> dict:
    try:
        data = json.loads(_state_file(paths).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_state(paths: Paths, state: dict) -> None:
    path = _state_file(paths)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=1, sort_keys=True))
    tmp.replace(path)


def _proxy(paths: Paths):
    if not supervisor.is_running(paths):
        raise ProcessFaultError(
            f"The lab is not running: supervisord does not answer on {paths.supervisor_socket} (start it with make up)."
        )
    return supervisor.rpc(paths)


def programs_of(paths: Paths, program: str, proxy=None) -> list[Program]:
    """The supervisord processes of ``program`` (a program or group name); raises if there is none."""
    proxy = proxy or _proxy(paths)
    infos = proxy.supervisor.getAllProcessInfo()
    found = [
        Program(i["group"], i["name"], i["statename"], int(i.get("pid") or 0))
        for i in infos
        if program in (i["group"], i["name"])
    ]
    if not found:
        known = sorted({i["group"] for i in infos})
        raise ProcessFaultError(
            f"supervisord has no program named {program!r}; it runs: {', '.join(known) or 'nothing'}."
        )
    return found


def _kill_group(proxy, process: Program) -> str:
    """SIGKILL the process group led by the program's process (supervisord makes each one a leader)."""
    try:
        if os.getpgid(process.pid) == process.pid:
            os.killpg(process.pid, signal.SIGKILL)
            return f"SIGKILL sent to process group {process.pid}"
    except ProcessLookupError:
        return f"process {process.pid} had already exited"
    except PermissionError:
        pass  # not ours to signal from here: supervisord can still reach the leader
    proxy.supervisor.signalProcess(process.spec, "KILL")
    return f"SIGKILL sent to pid {process.pid} by supervisord"


def process_fault(paths: Paths, *, program: str, action: str, ttl: int | None = None) -> list[str]:
    """Apply a process fault to ``program``; returns one line per process saying what was done."""
    if action not in ACTIONS:
        raise ProcessFaultError(f"--action must be one of {', '.join(ACTIONS)}, not {action!r}.")
    if ttl is not None and action != "stop":
        raise ProcessFaultError(
            "--ttl only applies to --action stop (kill and restart bring the program back by themselves)."
        )
    proxy = _proxy(paths)
    processes = programs_of(paths, program, proxy)
    lines = []
    try:
        if action == "kill":
            for process in processes:
                if process.state != "RUNNING" or not process.pid:
                    raise ProcessFaultError(f"{process.spec} is {process.state}: there is nothing to kill.")
                lines.append(f"{process.spec}: {_kill_group(proxy, process)}; supervisord will restart it")
        elif action == "stop":
            for process in processes:
                if process.state in ("RUNNING", "STARTING", "BACKOFF"):
                    proxy.supervisor.stopProcess(process.spec, True)
                lines.append(f"{process.spec}: stopped")
            _remember_stop(paths, program, ttl)
            if ttl:
                schedule_start(paths, program, ttl)
                lines.append(f"{program} starts again in {ttl} s")
            else:
                lines.append(f"{program} stays stopped until: labctl fault clear {program}")
        else:
            for process in processes:
                if process.state in ("RUNNING", "STARTING", "BACKOFF"):
                    proxy.supervisor.stopProcess(process.spec, True)
                proxy.supervisor.startProcess(process.spec, True)
                lines.append(f"{process.spec}: restarted")
            _forget(paths, program)
    except xmlrpc.client.Fault as exc:
        raise ProcessFaultError(f"supervisord refused to {action} {program}: {exc.faultString}") from exc
    return lines


def _remember_stop(paths: Paths, program: str, ttl: int | None) -> None:
    state = _read_state(paths)
    now = time.time()
    state[program] = {"action": "stop", "since": now, "restart_at": now + ttl if ttl else None}
    _write_state(paths, state)


def _forget(paths: Paths, program: str) -> None:
    state = _read_state(paths)
    if state.pop(program, None) is not None:
        _write_state(paths, state)


def schedule_start(paths: Paths, program: str, ttl: int) -> int:
    """Start a detached ``python -m labctl _start-after ttl program``; returns its pid."""
    paths.log.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "LAB_ROOT": str(paths.root)}
    with (paths.log / "labctl-process-faults.log").open("ab") as log:
        child = subprocess.Popen(
            [sys.executable, "-m", "labctl", "_start-after", str(ttl), program],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # outlives the labctl command and its terminal
        )
    return child.pid


def start_after(paths: Paths, ttl: float, program: str) -> int:
    """Wait ``ttl`` seconds, then start ``program`` again unless its fault was cleared meanwhile."""
    time.sleep(max(0.0, ttl))
    entry = _read_state(paths).get(program)
    if entry is None:
        print(f"{program}: fault already cleared; nothing to do", flush=True)
        return 0
    try:
        for line in start(paths, program):
            print(line, flush=True)
    except ProcessFaultError as exc:
        print(f"{program}: {exc}", flush=True)
        return 1
    return 0


def start(paths: Paths, program: str) -> list[str]:
    """Start every stopped process of ``program`` and forget its fault."""
    proxy = _proxy(paths)
    lines = []
    try:
        for process in programs_of(paths, program, proxy):
            if process.state in ("STOPPED", "EXITED", "FATAL"):
                proxy.supervisor.startProcess(process.spec, True)
                lines.append(f"{process.spec}: started")
    except xmlrpc.client.Fault as exc:
        raise ProcessFaultError(f"supervisord could not start {program}: {exc.faultString}") from exc
    _forget(paths, program)
    return lines


def active(paths: Paths) -> list[dict]:
    """The process faults in force: programs stopped by a fault and still stopped.

    Entries whose program runs again (started by hand, or by ``make up``) are dropped.
    """
    state = _read_state(paths)
    if not state:
        return []
    try:
        proxy = _proxy(paths)
        infos = proxy.supervisor.getAllProcessInfo()
    except ProcessFaultError:
        return []
    stopped = {i["group"] for i in infos if i["statename"] in ("STOPPED", "EXITED", "FATAL")}
    out, keep = [], {}
    for program, entry in sorted(state.items()):
        if program in stopped:
            keep[program] = entry
            out.append({"program": program, **entry})
    if keep != state:
        _write_state(paths, keep)
    return out


def clear(paths: Paths, program: str | None = None) -> list[str]:
    """Start again the program (or every program) a process fault stopped."""
    targets = [program] if program else sorted(_read_state(paths))
    lines = []
    for name in targets:
        if name in _read_state(paths):
            lines.extend(start(paths, name) or [f"{name}: already running"])
    return lines
