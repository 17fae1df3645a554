"""The Audit page's data: ``labctl.audit`` run against the services this dashboard watches."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings

from chassis import auth as chassis_auth

from . import lab, tracing


def audit_run() -> dict:
    """``{"available", "result", "error"}``; never raises.

    ``available`` is False while ``labctl.audit`` does not exist. The audit
    reads the services' reconciliation endpoints with the dashboard's own
    service identity, at the URLs this dashboard uses.
    """
    try:
        from labctl.audit import run_audit
        from labctl.config import Paths
        from labctl.labapi import LabApi, LabApiError
    except ImportError:
        return {"available": False, "result": None, "error": "audit not available yet (labctl.audit)"}

    class DashboardLabApi(LabApi):
        def token(self, audience: str) -> str:
            return chassis_auth.service_token(audience)

    api = DashboardLabApi(Paths(Path(settings.LAB_ROOT)), urls=dict(settings.CHASSIS["PEERS"]), timeout=5.0)
    kwargs = {}
    saga = lab.saga_get()
    if lab.saga_available(saga) and isinstance(saga.data.get("deadline_seconds"), int):
        kwargs["deadline_seconds"] = saga.data["deadline_seconds"]
    try:
        with tracing.untraced():  # the dashboard's own reads: no trace of them in the services
            result = run_audit(api, **kwargs)
        return {"available": True, "result": result, "error": ""}
    except LabApiError as exc:
        return {"available": True, "result": None, "error": str(exc)}
    except Exception as exc:  # noqa: BLE001 — the page says what broke instead of answering 500
        return {"available": True, "result": None, "error": f"the audit failed: {type(exc).__name__}: {exc}"}
