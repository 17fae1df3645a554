"""Changing the lab: faults, presets, resilience switches, the saga mode, the worker process.

The services own their lab state; these functions are only clients of their
``/_lab/`` APIs (and of supervisord, for the worker). Each returns the
:class:`~console.peers.Call` (or a short outcome) so the page can show the
service's own validation message next to the form that caused it.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from chassis import parts
from labctl import facade

from . import peers

FAULT_KINDS = parts.FAULT_KINDS
SCOPED_KINDS = ("latency", "error", "database")  # the kinds a path prefix / method narrows


# --- faults --------------------------------------------------------------------------


def faults_list(service: str) -> peers.Call:
    return peers.call(service, "GET", "/_lab/faults/")


def fault_add(service: str, body: dict) -> peers.Call:
    return peers.call(service, "PUT", "/_lab/faults/", json=body)


def fault_clear(service: str, fault_id: str | None = None) -> peers.Call:
    path = f"/_lab/faults/{fault_id}/" if fault_id else "/_lab/faults/"
    return peers.call(service, "DELETE", path)


def faults_clear_all() -> dict[str, peers.Call]:
    """DELETE every service's faults and turn its unsafe switches off (in parallel); each answer by service.

    "Clear all" leaves the lab safe: an unsafe switch takes a defence away, so it goes with the faults.
    """
    results = peers.gather({s: (_clear_faults_and_unsafe, s) for s in peers.SERVICES})
    return {
        s: results[s] or peers.Call(s, "DELETE", "/_lab/faults/", "timeout", error="no answer") for s in peers.SERVICES
    }


def _clear_faults_and_unsafe(service: str) -> peers.Call:
    cleared = fault_clear(service)
    switched = resilience_update(service, {"unsafe": UNSAFE_OFF})
    return cleared if switched.ok else switched


def _number(data, name: str, errors: dict, *, cast=int, scale: float = 1.0):
    raw = (data.get(name) or "").strip()
    if raw == "":
        return None
    try:
        value = cast(float(raw) * scale) if cast is int else cast(raw) * scale
    except ValueError:
        errors.setdefault(name, []).append("Enter a number.")
        return None
    return value


def _drop(body: dict, *names: str) -> None:
    for name in names:
        body.pop(name, None)


def fault_body_from_form(data) -> tuple[dict, dict]:
    """The PUT body for the fault described by a form (``QueryDict``), and field errors found before sending.

    Only the parameters that mean something for the chosen kind are sent; the
    service validates the rest and its field messages are shown as they come.
    The form speaks in percent, the API in probability 0..1.
    """
    errors: dict[str, list[str]] = {}
    kind = (data.get("kind") or "").strip()
    if kind not in FAULT_KINDS:
        return {}, {"kind": [f"Choose one of: {', '.join(FAULT_KINDS)}."]}
    body: dict = {"kind": kind}
    probability = _number(data, "probability", errors, cast=float, scale=0.01)
    if probability is not None and kind != "outage":
        body["probability"] = round(probability, 4)
    if kind in ("latency", "database", "dependency"):
        for name in ("delay_ms", "jitter_ms"):
            value = _number(data, name, errors)
            if value is not None:
                body[name] = value
    if kind == "error":
        status = _number(data, "status", errors)
        if status is not None:
            body["status"] = status
    if kind == "database":
        body["mode"] = data.get("db_mode") or "fail"
        if body["mode"] == "fail":
            _drop(body, "delay_ms", "jitter_ms")
    if kind == "dependency":
        body["target"] = data.get("target") or ""
        body["mode"] = data.get("dep_mode") or "fail"
        if body["mode"] != "delay":
            _drop(body, "delay_ms", "jitter_ms")
    if kind in SCOPED_KINDS:
        if (data.get("path_prefix") or "").strip():
            body["path_prefix"] = data["path_prefix"].strip()
        if data.get("method"):
            body["method"] = data["method"]
    ttl = _number(data, "ttl_seconds", errors)
    if ttl is not None:
        body["ttl_seconds"] = ttl
    return body, errors


@dataclass(frozen=True)
class Preset:
    """A named break-the-lab button."""

    slug: str
    title: str
    explains: str

    @property
    def service(self) -> str:
        """The service its fault is PUT on (chassis.parts.PRESET_FAULTS); empty for a process fault."""
        return parts.PRESET_FAULTS[self.slug][0] if self.slug in parts.PRESET_FAULTS else ""

    @property
    def body(self) -> dict | None:
        """The fault to PUT on ``service``; None for a process fault."""
        return parts.PRESET_FAULTS[self.slug][1] if self.slug in parts.PRESET_FAULTS else None

    def fault_body(self) -> dict:
        return parts.preset_fault(self.slug)

    @property
    def is_action(self) -> bool:
        """Done once (a process killed), not a fault that stays until cleared."""
        return self.body is None

    @property
    def lasts(self) -> str:
        """How long the preset's effect lasts, in words."""
        if self.is_action:
            return "Once: an action, not a fault. Nothing to clear; supervisord starts the worker again."
        ttl = (self.body or {}).get("ttl_seconds")
        if not ttl:
            return "Until you clear it (its clear button, or Clear all faults)."
        minutes, seconds = divmod(int(ttl), 60)
        length = f"{minutes} minute{'s' if minutes != 1 else ''}" if minutes and not seconds else f"{int(ttl)} s"
        return f"{length}, then it clears itself (or clear it sooner)."


PRESETS = {
    p.slug: p
    for p in (
        Preset("payment-outage", "Payment outage", "payment_service answers 503 to everything for 2 minutes."),
        Preset("slow-inventory", "Slow inventory 800 ms", "Every inventory request waits 800 ms ± 100 ms."),
        Preset(
            "flaky-inventory", "Flaky network: 30% errors on inventory", "Three inventory requests in ten answer 503."
        ),
        Preset("orders-db-down", "Database down on orders", "Every query of order_service fails."),
        Preset(
            "inventory-db-down",
            "Database down on inventory",
            "Every query of inventory_service fails for 10 minutes: its /health/ and its API answer 503.",
        ),
        Preset(
            "payment-answers-lost",
            "Payment's answers lost",
            "payment_service captures each charge, then its answer is lost (503): the caller cannot know.",
        ),
        Preset("kill-worker", "Kill the worker", "SIGKILL to the Celery worker; the process manager starts it again."),
    )
}


def preset_apply(slug: str) -> tuple[bool, str]:
    """Apply a preset; returns (done, a sentence saying what happened)."""
    preset = PRESETS.get(slug)
    if preset is None:
        return False, f"There is no preset {slug!r}."
    if preset.body is None:
        return worker_kill()
    result = fault_add(preset.service, preset.fault_body())
    if result.ok:
        return True, f"{preset.title}: injected on {preset.service}."
    return False, f"{preset.title}: {preset.service} refused ({result.state}): {result.message}"


# --- resilience --------------------------------------------------------------------------

SWITCH_FIELDS = {
    "timeouts": (("connect", float), ("read", float)),
    "retries": (("attempts", int), ("backoff", float)),
    "breaker": (("fail_max", int), ("reset_timeout", int)),
    "bulkhead": (("max_concurrent", int),),
    "fallback": (),
}
# Switches that take a defence away (chassis.lab.resilience): off by default, red when on, off after "Clear all".
UNSAFE_SWITCHES = {
    "charge_retry_new_key": "UNSAFE: retry a lost charge with a new idempotency key",
}
UNSAFE_OFF = dict.fromkeys(UNSAFE_SWITCHES, False)


def resilience_get(service: str) -> peers.Call:
    return peers.call(service, "GET", "/_lab/resilience/")


def switches_from_form(data) -> tuple[dict, dict]:
    """A partial PUT body from the switches form: every section it shows, enabled from its checkbox.

    A panel that shows only some sections (a service calling no peer shows its own fallback alone)
    names them in ``sections``; the sections it does not show are left as they are.
    """
    changes, errors = {}, {}
    shown = (data.get("sections") or "").split()
    for section, params in SWITCH_FIELDS.items():
        if shown and section not in shown:
            continue
        values: dict = {"enabled": data.get(f"{section}.enabled") == "on"}
        for name, cast in params:
            raw = (data.get(f"{section}.{name}") or "").strip()
            if raw == "":
                continue
            try:
                values[name] = cast(float(raw)) if cast is int else cast(raw)
            except ValueError:
                errors.setdefault(section, []).append(f"{name}: enter a number.")
        changes[section] = values
    if not shown or "unsafe" in shown:
        changes["unsafe"] = {name: data.get(f"unsafe.{name}") == "on" for name in UNSAFE_SWITCHES}
    return changes, errors


def resilience_update(service: str, changes: dict) -> peers.Call:
    return peers.call(service, "PUT", "/_lab/resilience/", json=changes)


def breakers_reset(service: str) -> peers.Call:
    return peers.call(service, "PUT", "/_lab/resilience/", json={"reset_breakers": True})


def saga_get() -> peers.Call:
    return peers.call("order", "GET", "/_lab/saga/")


def saga_available(result: peers.Call) -> bool:
    return result.ok and isinstance(result.data, dict) and result.data.get("mode") in ("sync", "async")


def saga_set(mode: str) -> peers.Call:
    return peers.call("order", "PUT", "/_lab/saga/", json={"mode": mode})


# --- processes (supervisord, through labctl) -----------------------------------------------


def supervisor_programs() -> dict[str, dict] | None:
    """Supervisor's programs by name (``statename``, ``group``, ``pid``...), or None when it is not running."""
    try:
        return facade.supervisor_programs(settings.LAB_ROOT)
    except Exception:  # noqa: BLE001 — the overview says "unknown" instead
        return None


def program_state(programs: dict | None, name: str) -> dict:
    """``{"state", "detail"}`` of program (or group) ``name`` for a map node."""
    if programs is None:
        return {"state": "unknown", "detail": "no supervisord"}
    members = [p for p in programs.values() if p.get("name") == name or p.get("group") == name]
    if not members:
        return {"state": "absent", "detail": "not configured"}
    states = sorted({p.get("statename", "?") for p in members})
    running = sum(1 for p in members if p.get("statename") == "RUNNING")
    state = "up" if running == len(members) else ("degraded" if running else "down")
    return {"state": state, "detail": f"{running}/{len(members)} running" if len(members) > 1 else states[0].lower()}


def worker_kill() -> tuple[bool, str]:
    """SIGKILL the worker's processes through ``labctl.process``; supervisord's autorestart brings it back."""
    name = settings.DASHBOARD_WORKER_PROGRAM
    try:
        lines = facade.program_kill(settings.LAB_ROOT, name)
    except facade.ProcessFaultError as exc:
        if "has no program named" in str(exc):
            return False, (
                f"There is no '{name}' program under the process manager yet: the Celery worker "
                f"arrives with the asynchronous saga. ({exc})"
            )
        return False, f"Could not kill the worker: {exc}"
    except Exception as exc:  # noqa: BLE001 — supervisord gone mid-call, a socket error...
        return False, f"The process manager could not be reached: {type(exc).__name__}: {exc}"
    return True, "Killed the worker: " + "; ".join(lines)
