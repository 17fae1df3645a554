"""Fault injection: what a student can break in a service, and where it bites.

A fault is a small dict validated by :class:`FaultSerializer`. Kinds:

========== ==================================================================
latency    each matching request waits ``delay_ms`` ± ``jitter_ms``
error      each matching request answers ``status`` (500, 503, ...); with
           ``mode=after`` the request is served first and only its answer is
           replaced: the work is done, the caller never learns it (a lost answer)
outage     every request answers 503, ``/health/`` included
database   each query fails with a database error (``mode=fail``) or waits
           ``delay_ms`` (``mode=slow``)
dependency calls from this service to ``target`` wait (``mode=delay``),
           fail at once (``mode=fail``) or hang until the client's read
           timeout (``mode=hang``)
========== ==================================================================

Every kind has a ``probability`` (0..1), an optional scope (``path_prefix``,
``method``) and an optional ``ttl_seconds`` after which it clears itself.
``/_lab/`` and ``/metrics`` are never faulted, so a fault can always be
cleared and its effect watched.
Process faults (stop/kill a process) are applied by the process manager,
through ``labctl``, not here.
"""

from __future__ import annotations

import random
import time
import uuid

from django.db import OperationalError, connections
from django.http import JsonResponse
from rest_framework import serializers

from .. import metrics, parts, telemetry
from . import store

KINDS = parts.FAULT_KINDS
EXEMPT_PREFIXES = ("/_lab/", "/metrics")
rng = random.Random()  # seedable in tests
clock = time.time  # injectable in tests
sleep = time.sleep


class FaultSerializer(serializers.Serializer):
    """The shape of one fault, with bounds a student cannot get wrong silently."""

    id = serializers.RegexField(r"^[A-Za-z0-9_-]{1,40}$", required=False)
    kind = serializers.ChoiceField(choices=KINDS)
    probability = serializers.FloatField(min_value=0.0, max_value=1.0, default=1.0)
    path_prefix = serializers.RegexField(r"^/[^\s]{0,199}$", required=False, default="")
    method = serializers.ChoiceField(choices=["", "GET", "POST", "PUT", "PATCH", "DELETE"], default="")
    ttl_seconds = serializers.IntegerField(min_value=1, max_value=86400, required=False, allow_null=True)
    delay_ms = serializers.IntegerField(min_value=0, max_value=30000, default=0)
    jitter_ms = serializers.IntegerField(min_value=0, max_value=10000, default=0)
    status = serializers.IntegerField(min_value=400, max_value=599, default=503)
    mode = serializers.ChoiceField(choices=["", "fail", "slow", "delay", "hang", "after"], default="")
    target = serializers.ChoiceField(choices=["", *parts.SERVICE_NAMES], default="")

    def validate(self, data):
        kind = data["kind"]
        if kind == "latency" and not data["delay_ms"]:
            raise serializers.ValidationError({"delay_ms": ["A latency fault needs delay_ms > 0."]})
        if kind == "error" and data["mode"] not in ("", "after"):
            raise serializers.ValidationError(
                {"mode": ["An error fault's mode is '' (answer at once) or 'after' (serve, then lose the answer)."]}
            )
        if kind != "error" and data["mode"] == "after":
            raise serializers.ValidationError({"mode": ["Only an error fault has mode 'after'."]})
        if kind == "database":
            data["mode"] = data["mode"] or "fail"
            if data["mode"] not in ("fail", "slow"):
                raise serializers.ValidationError({"mode": ["A database fault's mode is 'fail' or 'slow'."]})
            if data["mode"] == "slow" and not data["delay_ms"]:
                raise serializers.ValidationError({"delay_ms": ["A slow database fault needs delay_ms > 0."]})
        if kind == "dependency":
            if not data["target"]:
                raise serializers.ValidationError({"target": ["A dependency fault names its target service."]})
            data["mode"] = data["mode"] or "fail"
            if data["mode"] not in ("delay", "fail", "hang"):
                raise serializers.ValidationError({"mode": ["A dependency fault's mode is 'delay', 'fail' or 'hang'."]})
            if data["mode"] == "delay" and not data["delay_ms"]:
                raise serializers.ValidationError({"delay_ms": ["A delay needs delay_ms > 0."]})
        return data


def _all() -> dict:
    return store.read("faults", {}) or {}


def faults_active() -> list[dict]:
    """The faults in force now, oldest first (expired ones are left out)."""
    now = clock()
    return sorted(
        (f for f in _all().values() if not f.get("expires_at") or f["expires_at"] > now),
        key=lambda f: f["created_at"],
    )


def fault_add(*, data: dict) -> dict:
    """Store a validated fault (replacing one with the same id) and return it."""
    now = clock()
    fault = {**data, "id": data.get("id") or f"f-{uuid.uuid4().hex[:8]}", "created_at": now}
    ttl = fault.pop("ttl_seconds", None)
    fault["expires_at"] = now + ttl if ttl else None
    current = {f["id"]: f for f in faults_active()}
    current[fault["id"]] = fault
    store.write("faults", current)
    return fault


def fault_clear(*, fault_id: str | None = None) -> int:
    """Clear one fault (by id) or all of them; returns how many were cleared."""
    current = {f["id"]: f for f in faults_active()}
    if fault_id is None:
        cleared = len(current)
        current = {}
    else:
        cleared = 1 if current.pop(fault_id, None) else 0
    store.write("faults", current)
    return cleared


def _applies(fault: dict, path: str, method: str) -> bool:
    if fault.get("path_prefix") and not path.startswith(fault["path_prefix"]):
        return False
    if fault.get("method") and fault["method"] != method:
        return False
    return rng.random() < fault.get("probability", 1.0)


def delay_seconds(fault: dict) -> float:
    jitter = fault.get("jitter_ms", 0)
    return max(0.0, fault.get("delay_ms", 0) + (rng.uniform(-jitter, jitter) if jitter else 0)) / 1000


def dependency_fault(peer: str) -> dict | None:
    """The dependency fault that bites a call to ``peer`` now, if any (probability drawn)."""
    for fault in faults_active():
        if (
            fault["kind"] == "dependency"
            and fault.get("target") == peer
            and rng.random() < fault.get("probability", 1.0)
        ):
            return fault
    return None


def record_hit(fault: dict) -> None:
    """Count and trace a fault that bit."""
    metrics.FAULTS_INJECTED.labels(fault["kind"]).inc()
    telemetry.event("lab.fault", fault_id=fault["id"], kind=fault["kind"], mode=fault.get("mode") or None)


def _fault_response(status: int, code: str, message: str, fault: dict) -> JsonResponse:
    from ..errors import error_body

    record_hit(fault)
    response = JsonResponse(error_body(code, message, fault_id=fault["id"]), status=status)
    response["X-Lab-Fault"] = fault["id"]
    return response


class FaultInjectionMiddleware:
    """Applies this service's active faults to each incoming request."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        path = request.path
        if path.startswith(EXEMPT_PREFIXES):
            return self.get_response(request)
        active = faults_active()
        if not active:
            return self.get_response(request)
        database_fault = lost_answer = None
        for fault in active:
            kind = fault["kind"]
            if kind == "outage":
                return _fault_response(503, "service_outage", "Injected fault: this service is down.", fault)
            if kind in ("latency", "error", "database") and _applies(fault, path, request.method):
                if kind == "latency":
                    record_hit(fault)
                    sleep(delay_seconds(fault))
                elif kind == "error" and fault.get("mode") == "after":
                    lost_answer = lost_answer or fault
                elif kind == "error":
                    return _fault_response(
                        fault["status"], "injected_error", f"Injected fault: HTTP {fault['status']}.", fault
                    )
                elif database_fault is None:
                    database_fault = fault
        if database_fault is None:
            response = self.get_response(request)
        else:
            record_hit(database_fault)
            with _database_fault(database_fault):
                response = self.get_response(request)
        if lost_answer is None:
            return response
        # The request was served (a charge captured, a reservation held): only its answer is lost.
        record_hit(lost_answer)
        status = lost_answer["status"]
        message = f"Injected fault: the request was served, its answer lost (HTTP {status})."
        return _fault_response(status, "answer_lost", message, lost_answer)


class _database_fault:
    """Context manager making every query on every connection fail or crawl."""

    def __init__(self, fault: dict):
        self.fault = fault
        self.wrapped = []

    def __call__(self, execute, sql, params, many, context):
        if self.fault["mode"] == "slow":
            sleep(delay_seconds(self.fault))
            return execute(sql, params, many, context)
        raise OperationalError(2013, f"Injected fault {self.fault['id']}: lost connection to the database")

    def __enter__(self):
        for conn in connections.all(initialized_only=False):
            manager = conn.execute_wrapper(self)
            manager.__enter__()
            self.wrapped.append(manager)
        return self

    def __exit__(self, *exc):
        for manager in reversed(self.wrapped):
            manager.__exit__(*exc)
        return False
