"""The Labs page's side of the guided labs: ``labctl.labs``' engine, wired to this dashboard and its visitor.

The engine (loading labs, running checks and solves, judging answers,
building reports) is ``labctl``'s, the same one ``labctl lab`` runs; this
module only supplies what differs in a browser: the dashboard's own service
identity for ``/_lab/``, the logged-in staff member's token and email, the
dashboard's database for progress, and the lab text rendered as HTML with
the places where each step's widget and the questions go.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import markdown
from django.conf import settings
from django.utils.safestring import mark_safe

from chassis import auth as chassis_auth
from labctl.facade import (
    CHECK_MARKER,
    QUESTIONS_MARKER,
    CheckError,
    Engine,
    LabApi,
    LabContext,
    LabDef,
    lab_paths,
    load_lab,
)

from . import auth
from .models import LabProgress

MARKDOWN_EXTENSIONS = ("fenced_code", "tables")
# Where the engine's markers land in the rendered HTML: Python-Markdown passes an HTML comment on a
# line of its own through verbatim, so the engine's own pattern still finds it.
_SLOT = re.compile(f"{CHECK_MARKER.pattern}|{re.escape(QUESTIONS_MARKER)}")


class DashboardLabApi(LabApi):
    """labctl's lab-admin client, signing each call with the dashboard's own service identity.

    The services' ``/_lab/`` and reconciliation endpoints accept the
    ``dashboard`` identity; inside the dashboard its key is already loaded by
    the chassis, so no key file is read per call.
    """

    def token(self, audience: str) -> str:
        return chassis_auth.service_token(audience)


def lab_api(*, timeout: float = 10.0) -> DashboardLabApi:
    """The lab admin's API at the URLs this dashboard uses for the services."""
    return DashboardLabApi(lab_paths(settings.LAB_ROOT), urls=dict(settings.CHASSIS["PEERS"]), timeout=timeout)


class DbStore:
    """:class:`labctl.labs.store.Store` over :class:`~console.models.LabProgress`: one row per (student, lab)."""

    def load(self, student: str, lab: str) -> dict | None:
        row = LabProgress.objects.filter(student=student, lab=lab).first()
        return row.data if row is not None else None

    def save(self, student: str, lab: str, data: dict) -> None:
        LabProgress.objects.update_or_create(student=student, lab=lab, defaults={"data": data})

    def delete(self, student: str, lab: str) -> None:
        LabProgress.objects.filter(student=student, lab=lab).delete()


@dataclass(frozen=True)
class _Loaded:
    stamp: tuple
    lab: LabDef | None
    error: str
    sections: tuple


_cache: dict[Path, _Loaded] = {}
_cache_lock = threading.Lock()


def _stamp(directory: Path) -> tuple:
    return tuple((p.name, p.stat().st_mtime_ns) for p in (directory / "lab.md", directory / "steps.py") if p.exists())


def _load(directory: Path) -> _Loaded:
    """The lab of ``directory``, loaded again only when its files change (a page view re-reads nothing)."""
    stamp = _stamp(directory)
    with _cache_lock:
        found = _cache.get(directory)
        if found is not None and found.stamp == stamp:
            return found
        try:
            lab = load_lab(directory)
        except Exception as exc:  # noqa: BLE001 — a lab being written must not take the other labs down
            loaded = _Loaded(stamp, None, f"{type(exc).__name__}: {exc}", ())
        else:
            loaded = _Loaded(stamp, lab, "", render_sections(lab))
        _cache[directory] = loaded
        return loaded


class DashboardEngine(Engine):
    """The engine, except that a lab that does not load is listed in ``broken`` instead of hiding every lab."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.broken: dict[str, str] = {}

    def labs(self) -> list[LabDef]:
        if self._labs is None:
            loaded = []
            directories = sorted(self.root.iterdir()) if self.root.is_dir() else []
            for directory in directories:
                if directory.is_dir() and (directory / "lab.md").exists():
                    result = _load(directory)
                    if result.lab is None:
                        self.broken[directory.name] = result.error
                    else:
                        loaded.append(result.lab)
            self._labs = sorted(loaded, key=lambda lab: lab.number)
        return self._labs


def labs_root() -> Path:
    return Path(settings.LAB_ROOT) / "labs"


def dashboard_url(request) -> str:
    """This dashboard's base URL for the checks that read its trace API: ``DASHBOARD_URL``, else the request's."""
    configured = getattr(settings, "DASHBOARD_URL", "")
    return (configured or request.build_absolute_uri("/")).rstrip("/")


def student_of(request) -> str:
    """Whose progress this is: the logged-in staff member's email ("" for a visitor, who records nothing)."""
    staff = auth.current_staff(request)
    if staff is None:
        return ""
    return staff.get("email") or f"staff-{staff.get('id')}"


def engine_for(request) -> DashboardEngine:
    """The engine for one request: the lab's services, this visitor's progress in the dashboard's database."""

    def staff_token() -> str:
        token = auth.staff_access_token(request)
        if token is None:
            raise CheckError("log in again: your staff login at the user service has expired")
        return token

    urls = {**dict(settings.CHASSIS["PEERS"]), "dashboard": dashboard_url(request)}
    ctx = LabContext(api=lab_api(), urls=urls, staff_token=staff_token)
    return DashboardEngine(root=labs_root(), ctx=ctx, store=DbStore(), student=student_of(request))


# --- what the templates show -------------------------------------------------------------


def render_sections(lab: LabDef) -> tuple:
    """The lab's Markdown as HTML, cut where the engine's markers are.

    ``({"html": ...}, {"step": key}, {"html": ...}, {"questions": True}, ...)``:
    the page puts each step's widget and the questions form in the slots.
    """
    html = markdown.markdown(lab.text, extensions=list(MARKDOWN_EXTENSIONS))
    sections, start = [], 0
    for match in _SLOT.finditer(html):
        # The lab's own text from the repository, written by its authors: its HTML is meant to be kept.
        sections.append({"html": mark_safe(html[start : match.start()])})
        sections.append({"step": match.group(1)} if match.group(1) else {"questions": True})
        start = match.end()
    sections.append({"html": mark_safe(html[start:])})
    return tuple(s for s in sections if "html" not in s or s["html"].strip())


def sections_of(lab: LabDef) -> tuple:
    return _load(lab.path).sections or render_sections(lab)


def when(value: str | None) -> str:
    """An engine timestamp (ISO 8601, UTC) as the wall-clock time a student reads on the page."""
    if not value:
        return ""
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def step_view(lab: LabDef, progress: dict, key: str) -> dict:
    """What a step's widget shows: the step, its number, the last check and, once passed, what it measured."""
    step = lab.step(key)
    record = progress.get("steps", {}).get(step.key) or {}
    last = record.get("last") or None
    if last is None:
        state = "new"
    else:
        state = "pass" if last.get("passed") else "fail"
    return {
        "step": step,
        # Django calls a callable it meets in a template: the solve is looked at here, never there.
        "can_solve": step.solve is not None,
        "number": lab.all_steps().index(step),
        "state": state,
        "last": last,
        "last_at": when((last or {}).get("at")),
        "passed_at": when(record.get("passed_at")),
        "shown": bool(record.get("shown")),
        "attempts": record.get("attempts", 0),
        "observed": (record.get("observed") or {}) if record.get("passed_at") else {},
        "lab": lab,
    }


def question_view(lab: LabDef, progress: dict, key: str, *, fresh=None, error: str = "") -> dict:
    """What a question shows: the form, the student's recorded answer, the explanation once answered.

    ``fresh`` is the engine's :class:`~labctl.labs.engine.Answer` just given;
    ``error`` the engine's message for something that was not an answer.
    """
    question = lab.question(key)
    record = progress.get("answers", {}).get(question.key) or {}
    answered = bool(record.get("attempts"))
    if not answered:
        state = "new"
    else:
        state = "right" if record.get("correct") else "wrong"
    return {
        "q": question,
        "number": lab.questions.index(question) + 1,
        "record": record,
        "state": state,
        "answered": answered,
        "fresh": fresh,
        "error": error,
        "lab": lab,
    }


def summary_text(summary: dict) -> str:
    """ "3/6 steps, 1/3 answers", or "finished"."""
    if summary["finished"]:
        return "finished"
    text = f"{summary['passed']}/{summary['total']} steps"
    if summary["questions"]:
        text += f", {summary['answered']}/{summary['questions']} answers"
    return text
