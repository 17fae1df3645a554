"""The Audit page's data: ``labctl.audit`` run against the services this dashboard watches."""

from __future__ import annotations

from labctl.facade import LabApiError, run_audit

from . import lab, tracing
from .labs import lab_api


def audit_run() -> dict:
    """``{"result", "error"}``; never raises.

    The audit reads the services' reconciliation endpoints with the dashboard's own
    service identity, at the URLs this dashboard uses.
    """
    api = lab_api(timeout=5.0)
    kwargs = {}
    saga = lab.saga_get()
    if lab.saga_available(saga) and isinstance(saga.data.get("deadline_seconds"), int):
        kwargs["deadline_seconds"] = saga.data["deadline_seconds"]
    try:
        with tracing.untraced():  # the dashboard's own reads: no trace of them in the services
            result = run_audit(api, **kwargs)
        return {"result": result, "error": ""}
    except LabApiError as exc:
        return {"result": None, "error": str(exc)}
    except Exception as exc:  # noqa: BLE001 — the page says what broke instead of answering 500
        return {"result": None, "error": f"the audit failed: {type(exc).__name__}: {exc}"}
