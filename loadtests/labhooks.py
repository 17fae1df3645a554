"""The lab admin's side of a load run: the saga switch and the ``/_lab/`` API, as the dashboard.

Calls are signed by ``labctl.labapi.LabApi`` with the dashboard's key, against
the same service URLs the simulated users load (``*_SERVICE_URL``).
"""

from __future__ import annotations

from chassis import parts
from common import URLS
from labctl.config import Paths, find_root
from labctl.labapi import LabApi, LabApiError

MODES = parts.SAGA_MODES


def lab_api() -> LabApi:
    return LabApi(Paths(find_root()), urls=dict(URLS), timeout=10.0)


def saga_mode(api: LabApi) -> str | None:
    """The order service's saga mode, or None when it has no ``/_lab/saga/`` switch (yet)."""
    response = api.call("GET", "order", "/_lab/saga/")
    if response.status_code == 404:
        return None
    if response.status_code != 200:
        raise LabApiError(f"order answered {response.status_code} to GET /_lab/saga/")
    return response.json().get("mode")


class SagaModeSwitch:
    """Sets the saga mode a run asked for (``SAGA_MODE``) and puts the previous one back after."""

    def __init__(self, mode: str):
        self.mode = (mode or "").strip().lower()
        if self.mode and self.mode not in MODES:
            raise SystemExit(f"SAGA_MODE={mode!r}: use sync or async")
        self.previous: str | None = None

    def apply(self) -> None:
        if not self.mode:
            return
        api = lab_api()
        try:
            current = saga_mode(api)
        except LabApiError as exc:
            print(f"[load] SAGA_MODE={self.mode} not applied: {exc}", flush=True)
            return
        if current is None:
            print(
                f"[load] SAGA_MODE={self.mode} not applied: the order service has no /_lab/saga/ switch "
                "yet, so it runs every saga in the request (sync)",
                flush=True,
            )
            return
        self.previous = current
        if current != self.mode:
            api.json("PUT", "order", "/_lab/saga/", json={"mode": self.mode})
        print(f"[load] saga mode {self.mode} (was {current})", flush=True)

    def restore(self) -> None:
        if self.previous and self.previous != self.mode:
            try:
                lab_api().json("PUT", "order", "/_lab/saga/", json={"mode": self.previous})
                print(f"[load] saga mode back to {self.previous}", flush=True)
            except LabApiError as exc:
                print(f"[load] could not put the saga mode back to {self.previous}: {exc}", flush=True)
        self.previous = None


def use_saga_mode_from_env() -> SagaModeSwitch:
    """Switch order_service to ``$SAGA_MODE`` for the run and back afterwards (from the master only)."""
    import os

    from locust import events

    from common import is_worker

    switch = SagaModeSwitch(os.environ.get("SAGA_MODE", ""))

    @events.test_start.add_listener
    def _saga_mode_on(environment, **_kwargs):
        if not is_worker(environment):
            switch.apply()

    @events.test_stop.add_listener
    def _saga_mode_off(environment, **_kwargs):
        if not is_worker(environment):
            switch.restore()

    return switch
