"""Load the labs, run their checks and solves, keep progress, answer questions, build reports.

One engine for ``labctl lab`` and the dashboard. Every step's check result is
recorded in the student's progress: when it passed, what it measured, how
many attempts it took and whether it was done by the student or *shown*
(its solve was run). Progress survives a restart (the store is a database or
files), and a report is built from it alone.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from . import checks
from .context import LabContext, iso
from .model import CheckError, LabDef, Outcome, Question, SolveError, failed
from .store import Store

_FRONT_MATTER = re.compile(r"\A---\n(.*?)\n---\n", re.S)
CHECK_MARKER = re.compile(r"<!--\s*check:\s*([\w-]+)\s*-->")
QUESTIONS_MARKER = "<!-- questions -->"


class LabNotFound(LookupError):
    pass


class LabFormatError(Exception):
    """A lab's directory is not a valid lab; the message names the file and what is wrong."""


def load_lab(directory: Path) -> LabDef:
    """Read ``lab.md`` and ``steps.py`` of one lab directory (``NN-slug``)."""
    match = re.fullmatch(r"(\d{2})-([a-z0-9-]+)", directory.name)
    if not match:
        raise LabFormatError(f"{directory}: a lab directory is named NN-slug")
    text = (directory / "lab.md").read_text()
    front = _FRONT_MATTER.match(text)
    if not front:
        raise LabFormatError(f"{directory}/lab.md has no front matter (--- ... ---)")
    meta = yaml.safe_load(front.group(1)) or {}
    missing = [k for k in ("title", "minutes", "level", "objectives", "prerequisites", "concepts") if k not in meta]
    if missing:
        raise LabFormatError(f"{directory}/lab.md: front matter lacks {', '.join(missing)}")
    module_name = f"_lab_steps_{match.group(1)}_{match.group(2).replace('-', '_')}"
    spec = importlib.util.spec_from_file_location(module_name, directory / "steps.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    lab = LabDef(
        number=int(match.group(1)),
        slug=match.group(2),
        title=meta["title"],
        minutes=int(meta["minutes"]),
        level=meta["level"],
        objectives=list(meta["objectives"]),
        prerequisites=list(meta["prerequisites"] or []),
        concepts=list(meta["concepts"]),
        text=text[front.end() :],
        steady=getattr(module, "STEADY", checks.STEADY),
        steps=list(module.STEPS),
        questions=list(getattr(module, "QUESTIONS", [])),
        cleanup=getattr(module, "CLEANUP", None),
        path=directory,
    )
    keys = [s.key for s in lab.all_steps()]
    if len(set(keys)) != len(keys):
        raise LabFormatError(f"{directory}/steps.py: two steps share a key")
    marked = CHECK_MARKER.findall(lab.text)
    if sorted(marked) != sorted(keys):
        raise LabFormatError(f"{directory}/lab.md marks checks {marked}, steps.py has {keys}")
    if lab.questions and QUESTIONS_MARKER not in lab.text:
        raise LabFormatError(f"{directory}/lab.md has questions but no {QUESTIONS_MARKER} marker")
    return lab


def load_labs(root: Path) -> list[LabDef]:
    """Every lab under ``root`` (the repository's ``labs/``), by number."""
    if not root.is_dir():
        return []
    return sorted(
        (load_lab(d) for d in root.iterdir() if d.is_dir() and (d / "lab.md").exists()), key=lambda lab: lab.number
    )


@dataclass(frozen=True)
class Answer:
    correct: bool
    message: str
    expected: object
    explanation: str


class Engine:
    """The labs of ``root`` for one ``student``, run against ``ctx``, progress in ``store``."""

    def __init__(self, *, root: Path, ctx: LabContext, store: Store, student: str):
        self.root = root
        self.ctx = ctx
        self.store = store
        self.student = student
        self._labs: list[LabDef] | None = None

    # --- finding labs ---------------------------------------------------------------------

    def labs(self) -> list[LabDef]:
        if self._labs is None:
            self._labs = load_labs(self.root)
        return self._labs

    def lab(self, ref: str | int) -> LabDef:
        """A lab by number (``5``, ``05``), slug (``circuit-breaker``) or name (``05-circuit-breaker``)."""
        ref = str(ref).strip()
        for lab in self.labs():
            if ref in (lab.name, lab.slug) or (ref.isdigit() and int(ref) == lab.number):
                return lab
        raise LabNotFound(f"no lab {ref!r}; the labs are: " + ", ".join(lab.name for lab in self.labs()))

    # --- progress -------------------------------------------------------------------------

    def progress(self, lab: LabDef) -> dict:
        return self.store.load(self.student, lab.name) or {
            "lab": lab.name,
            "student": self.student,
            "started_at": None,
            "finished_at": None,
            "steps": {},
            "answers": {},
        }

    def _save(self, lab: LabDef, progress: dict) -> None:
        done = all((progress["steps"].get(s.key) or {}).get("passed_at") for s in lab.all_steps())
        answered = all((progress["answers"].get(q.key) or {}).get("correct") for q in lab.questions)
        if done and answered and not progress.get("finished_at"):
            progress["finished_at"] = iso(self.ctx.clock())
        self.store.save(self.student, lab.name, progress)

    def forget(self, lab: LabDef) -> None:
        """Start the lab over: its progress is deleted (the lab itself is not touched)."""
        self.store.delete(self.student, lab.name)

    def summary(self, lab: LabDef) -> dict:
        """``{"passed", "total", "answered", "questions", "finished"}`` for the list of labs."""
        progress = self.progress(lab)
        steps = lab.all_steps()
        return {
            "passed": sum(1 for s in steps if (progress["steps"].get(s.key) or {}).get("passed_at")),
            "total": len(steps),
            "answered": sum(1 for q in lab.questions if (progress["answers"].get(q.key) or {}).get("correct")),
            "questions": len(lab.questions),
            "finished": bool(progress.get("finished_at")),
        }

    # --- checks and solves ----------------------------------------------------------------

    def check(self, lab: LabDef, step_key: str | int, *, shown: bool = False) -> Outcome:
        """Run one step's check, record it, return its outcome. Never raises for what the lab does."""
        step = lab.step(step_key)
        progress = self.progress(lab)
        now = self.ctx.clock()
        if not progress.get("started_at"):
            progress["started_at"] = iso(now)
        self.ctx.progress = progress
        try:
            outcome = step.check(self.ctx)
        except CheckError as exc:
            outcome = failed(f"Could not observe the lab: {exc}")
        except Exception as exc:  # noqa: BLE001 — a broken check must say so, not break the page
            outcome = failed(f"The check itself failed ({type(exc).__name__}: {exc}); tell the instructor.")
        record = progress["steps"].setdefault(step.key, {"attempts": 0})
        record["attempts"] = record.get("attempts", 0) + 1
        record["last"] = {"passed": outcome.passed, "message": outcome.message, "at": iso(now)}
        if outcome.passed:
            record.update(
                passed_at=iso(now),
                message=outcome.message,
                observed=outcome.observed,
                shown=shown or (record.get("shown", False) and record.get("passed_at") is not None),
            )
        self._save(lab, progress)
        return outcome

    def solve(self, lab: LabDef, step_key: str | int) -> Outcome:
        """Do the step through the public APIs (*Show me*), then check it; the report marks it as shown."""
        step = lab.step(step_key)
        progress = self.progress(lab)
        if not progress.get("started_at"):
            progress["started_at"] = iso(self.ctx.clock())
            self.store.save(self.student, lab.name, progress)
        self.ctx.progress = progress
        if step.solve is None:
            return failed(f"Step {step.key!r} has no solve: it is yours to do.")
        try:
            step.solve(self.ctx)
        except (SolveError, CheckError) as exc:
            return failed(f"Show me could not do this step: {exc}")
        finally:
            self.store.save(self.student, lab.name, self.ctx.progress)  # what the solve remembered (ctx.state)
        return self.check(lab, step.key, shown=True)

    def reset(self, lab: LabDef) -> Outcome:
        """Clear faults, restore every switch and the saga mode, close breakers, run the lab's clean-up; then
        check the steady state (recorded like any check). The checks' window (``started_at``) starts again."""
        try:
            self.ctx.restore_defaults()
            if lab.cleanup is not None:
                lab.cleanup(self.ctx)
        except (CheckError, SolveError) as exc:
            return failed(f"The reset did not finish: {exc}")
        # Starting again: the checks look at what happens from now on, not at the previous attempt's orders.
        progress = self.progress(lab)
        progress["started_at"] = iso(self.ctx.clock())
        self.store.save(self.student, lab.name, progress)
        return self.check(lab, lab.steady.key)

    # --- questions ------------------------------------------------------------------------

    def answer(self, lab: LabDef, question_key: str, raw: str) -> Answer:
        question = lab.question(question_key)
        progress = self.progress(lab)
        self.ctx.progress = progress
        raw = (raw or "").strip()
        try:
            expected = question.expected(self.ctx, progress)
        except CheckError as exc:
            return Answer(False, f"This question needs your data first: {exc}", None, "")
        correct, message = _judge(question, raw, expected)
        if correct is None:
            return Answer(False, message, None, "")  # not an answer at all: nothing recorded
        record = progress["answers"].setdefault(question.key, {"attempts": 0})
        record["attempts"] = record.get("attempts", 0) + 1
        if not record.get("correct"):
            record.update(answer=raw, correct=correct, expected=expected, at=iso(self.ctx.clock()))
        self._save(lab, progress)
        return Answer(correct, message, expected, question.explanation)

    # --- the report -----------------------------------------------------------------------

    def report(self, lab: LabDef) -> dict:
        progress = self.progress(lab)
        steps = []
        for number, step in enumerate(lab.all_steps()):
            record = progress["steps"].get(step.key) or {}
            steps.append(
                {
                    "number": number,
                    "key": step.key,
                    "title": step.title,
                    "passed_at": record.get("passed_at"),
                    "shown": bool(record.get("shown")),
                    "attempts": record.get("attempts", 0),
                    "message": record.get("message", ""),
                    "observed": record.get("observed", {}),
                }
            )
        answers = []
        for question in lab.questions:
            record = progress["answers"].get(question.key) or {}
            answers.append(
                {
                    "key": question.key,
                    "question": question.text,
                    "answer": record.get("answer"),
                    "correct": record.get("correct"),
                    "expected": record.get("expected"),
                    "attempts": record.get("attempts", 0),
                }
            )
        return {
            "lab": lab.name,
            "title": lab.title,
            "student": self.student,
            "started_at": progress.get("started_at"),
            "finished_at": progress.get("finished_at"),
            "steps": steps,
            "answers": answers,
        }

    def report_markdown(self, lab: LabDef) -> str:
        report = self.report(lab)
        lines = [
            f"# Lab report: {lab.number}. {lab.title}",
            "",
            f"- Student: {report['student']}",
            f"- Started: {report['started_at'] or 'not yet'}",
            f"- Finished: {report['finished_at'] or 'not yet'}",
            "",
            "## Steps",
            "",
        ]
        for step in report["steps"]:
            if step["passed_at"]:
                how = "shown (Show me)" if step["shown"] else "done"
                lines.append(
                    f"### {step['number']}. {step['title']} — passed {step['passed_at']}, {how}, "
                    f"{step['attempts']} check(s)"
                )
                lines.append("")
                lines.append(step["message"])
                for name, value in step["observed"].items():
                    lines.append(f"- {name}: {value}")
            else:
                lines.append(f"### {step['number']}. {step['title']} — not passed ({step['attempts']} check(s))")
            lines.append("")
        lines += ["## Questions", ""]
        for answer in report["answers"]:
            verdict = {True: "right", False: "wrong", None: "not answered"}[answer["correct"]]
            lines.append(f"- {answer['question']}  ")
            lines.append(
                f"  answer: {answer['answer'] if answer['answer'] is not None else '—'} ({verdict}"
                + (f"; expected {answer['expected']}" if answer["correct"] is not None else "")
                + ")"
            )
        return "\n".join(lines) + "\n"


def _judge(question: Question, raw: str, expected) -> tuple[bool | None, str]:
    """(right?, message); right is None when ``raw`` is not an answer to this question."""
    if not raw:
        return None, "Give an answer first."
    if question.choices:
        if raw not in question.choices:
            return None, f"Choose one of: {', '.join(question.choices)}."
        if raw == expected:
            return True, "Right."
        return False, "Not quite — think again, or read the explanation."
    try:
        value = (
            float(raw.replace(",", ".").removesuffix(question.unit).strip())
            if question.unit
            else float(raw.replace(",", "."))
        )
    except ValueError:
        return None, "Answer with a number" + (f" (in {question.unit})" if question.unit else "") + "."
    margin = max(question.tolerance, abs(float(expected)) * question.relative)
    if abs(value - float(expected)) <= margin:
        return True, f"Right: your data says {_fmt(expected)}{question.unit}."
    return False, "Not what your data says; look again" + (
        f" (within ±{_fmt(margin)}{question.unit})." if margin else "."
    )


def _fmt(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
