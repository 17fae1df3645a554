"""Where a browser finds each service's API and docs, and the lab's other material on disk."""

from __future__ import annotations

from pathlib import Path

import environ
from django.conf import settings

from labctl.facade import BROWSE_PATHS

from . import peers


def browser_url(service: str) -> str:
    """The service's base URL as a browser reaches it.

    The same as the dashboard's own peer URL on one machine; on containers,
    ``SERVICE_BROWSER_URLS`` (``user=http://localhost:8001,...``) says what the
    host's browser should open instead of the internal hostnames.
    """
    overrides = environ.Env().dict("SERVICE_BROWSER_URLS", default={})
    return str(overrides.get(service) or peers.base_url(service)).rstrip("/")


def service_links() -> list[dict]:
    return [
        {
            "name": service,
            "label": peers.LABELS[service],
            "api": browser_url(service) + BROWSE_PATHS[service],
            "docs": browser_url(service) + "/api/docs/",
        }
        for service in peers.SERVICES
    ]


def _dir(name: str) -> Path | None:
    path = Path(settings.LAB_ROOT) / name
    return path if path.is_dir() else None


def labs_dir() -> Path | None:
    return _dir("labs")


def loadtests_dir() -> Path | None:
    return _dir("loadtests")
