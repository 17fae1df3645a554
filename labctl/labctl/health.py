"""Ask each service's ``GET /health/`` how it is, and wait until all say 200."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from .config import Service


@dataclass
class Health:
    """The answer of one ``/health/`` call."""

    code: int | None  # HTTP status, None when nothing answered
    detail: str  # "ok", the failing checks, or why nothing answered

    @property
    def ok(self) -> bool:
        return self.code == 200

    def label(self) -> str:
        if self.code is None:
            return f"no answer ({self.detail})"
        return f"{self.code} {self.detail}".strip()


def check(service: Service, timeout: float = 3.0) -> Health:
    """One ``GET /health/``; never raises."""
    url = f"{service.url}/health/"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return Health(resp.status, _summarise(resp.read()))
    except urllib.error.HTTPError as exc:
        return Health(exc.code, _summarise(exc.read()))
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return Health(None, str(reason))


def _summarise(body: bytes) -> str:
    """ "ok", or the names of the failing checks, from the health JSON."""
    try:
        data = json.loads(body)
    except ValueError:
        return "(not JSON)"
    if not isinstance(data, dict):
        return ""
    failing = [
        name
        for name, result in (data.get("checks") or {}).items()
        if isinstance(result, dict) and result.get("status") not in (None, "ok", "up")
    ]
    if failing:
        return f"{data.get('status', '')}: {', '.join(failing)}".strip()
    return str(data.get("status", ""))


def wait_healthy(
    services: Iterable[Service],
    timeout: float,
    given_up: Callable[[Service], bool] = lambda s: False,
    interval: float = 0.5,
) -> dict[str, Health]:
    """Poll until every service answers 200, ``timeout`` passes, or ``given_up`` says so.

    Returns the last answer of each service by short name.
    """
    pending = {s.short: s for s in services}
    results: dict[str, Health] = {}
    deadline = time.monotonic() + timeout
    while pending:
        for name, service in list(pending.items()):
            results[name] = check(service)
            if results[name].ok or given_up(service):
                del pending[name]
        if not pending or time.monotonic() > deadline:
            break
        time.sleep(interval)
    return results


def tail(path: Path, lines: int = 40, skip: str = '"GET /health/ ') -> str:
    """The last ``lines`` lines of a log file, or a note that it is missing.

    Lines containing ``skip`` are left out: by default the access-log lines of
    our own health polling, which would otherwise bury the service's errors.
    """
    if not path.exists():
        return f"({path} does not exist)"
    with path.open(errors="replace") as f:
        kept = deque((line for line in f if not (skip and skip in line)), maxlen=lines)
    return "".join(kept).rstrip() or "(nothing logged)"
