"""Where a student's progress through a lab is kept: one JSON document per (student, lab).

The dashboard keeps it in its own database (``console.models.LabProgress``);
``labctl lab`` in files under ``var/labs/progress/``. Both speak this
protocol, so the engine does not care which.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Protocol


class Store(Protocol):
    def load(self, student: str, lab: str) -> dict | None: ...

    def save(self, student: str, lab: str, data: dict) -> None: ...

    def delete(self, student: str, lab: str) -> None: ...


class FileStore:
    """``<root>/<student>/<lab>.json``, written atomically (a crash leaves the previous version)."""

    def __init__(self, root: Path):
        self.root = root

    def _path(self, student: str, lab: str) -> Path:
        safe = re.sub(r"[^A-Za-z0-9@._-]", "_", student) or "student"
        return self.root / safe / f"{lab}.json"

    def load(self, student: str, lab: str) -> dict | None:
        path = self._path(student, lab)
        try:
            return json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            return None

    def save(self, student: str, lab: str, data: dict) -> None:
        path = self._path(student, lab)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(data, indent=2, sort_keys=True))
        temporary.replace(path)

    def delete(self, student: str, lab: str) -> None:
        self._path(student, lab).unlink(missing_ok=True)


class MemoryStore:
    """Progress kept in a dict: for a one-off run (CI's solves) that should leave no file."""

    def __init__(self):
        self.data: dict[tuple[str, str], dict] = {}

    def load(self, student: str, lab: str) -> dict | None:
        found = self.data.get((student, lab))
        return json.loads(json.dumps(found)) if found is not None else None

    def save(self, student: str, lab: str, data: dict) -> None:
        self.data[(student, lab)] = json.loads(json.dumps(data))

    def delete(self, student: str, lab: str) -> None:
        self.data.pop((student, lab), None)
