"""What a guided lab is made of: its text, its steps (check + solve), its questions.

A step's **check** observes the running lab through its public surfaces and
returns an :class:`Outcome`: passed or not, a message saying what was seen or
what is missing, and the figures it measured (kept in the student's report).
A check never changes the lab. A step's **solve** does the step through the
same public APIs a student would use; CI runs it, and so does the dashboard's
*Show me* button (the report marks such steps as shown, not done).

A **question**'s right answer is computed from the student's own data when it
is asked (their trace, their orders, their metrics), or is one of fixed
choices; either way the explanation is shown once answered.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Outcome:
    """The result of a check: ``passed``, a sentence for the student, and what was measured."""

    passed: bool
    message: str
    observed: dict = field(default_factory=dict)


def passed(message: str, **observed: Any) -> Outcome:
    return Outcome(True, message, observed)


def failed(message: str, **observed: Any) -> Outcome:
    return Outcome(False, message, observed)


class CheckError(Exception):
    """A check could not observe what it needs (a service unreachable...); it fails with this message."""


class SolveError(Exception):
    """A solve could not do its step; the message says why."""


@dataclass(frozen=True)
class Step:
    """One thing the student does and the automatic check that it happened.

    ``link`` is a dashboard path where the step is done (``/faults/#preset-payment-outage``),
    ``terminal`` the same step with curl or labctl, shown under the step.
    """

    key: str
    title: str
    check: Callable[..., Outcome]
    solve: Callable[..., None] | None = None
    hints: tuple[str, ...] = ()
    link: str = ""
    link_label: str = ""
    terminal: str = ""


@dataclass(frozen=True)
class Question:
    """A question checked against an answer computed from the student's data (or a fixed choice).

    ``expected(ctx, progress)`` returns the right answer: a number (accepted
    within ``tolerance``, absolute, or ``relative`` of it, whichever is wider)
    or one of ``choices``. It may raise :class:`CheckError` when the data it
    needs is not there yet ("run the checkout of step 2 first").
    """

    key: str
    text: str
    expected: Callable[..., Any]
    choices: tuple[str, ...] = ()
    tolerance: float = 0.0
    relative: float = 0.0
    unit: str = ""
    explanation: str = ""

    @property
    def numeric(self) -> bool:
        return not self.choices


def fixed(answer: Any) -> Callable[..., Any]:
    """``expected=`` for a question whose answer does not depend on the student's data."""
    return lambda ctx, progress: answer


@dataclass
class LabDef:
    """One lab, as loaded from ``labs/NN-slug/``."""

    number: int
    slug: str
    title: str
    minutes: int
    level: str
    objectives: list[str]
    prerequisites: list[str]
    concepts: list[str]
    text: str  # the Markdown body, front matter removed
    steady: Step
    steps: list[Step]
    questions: list[Question]
    cleanup: Callable[..., None] | None
    path: Path

    @property
    def name(self) -> str:
        return f"{self.number:02d}-{self.slug}"

    def all_steps(self) -> list[Step]:
        """The steady-state check first, then the steps, in order."""
        return [self.steady, *self.steps]

    def step(self, ref: str | int) -> Step:
        """A step by key, or by number (0 = steady state, 1 = the first step)."""
        steps = self.all_steps()
        if isinstance(ref, int) or str(ref).isdigit():
            index = int(ref)
            if 0 <= index < len(steps):
                return steps[index]
            raise KeyError(f"lab {self.number} has steps 0 (steady state) to {len(steps) - 1}, not {index}")
        for step in steps:
            if step.key == ref:
                return step
        raise KeyError(f"lab {self.number} has no step {ref!r} (steps: {', '.join(s.key for s in steps)})")

    def question(self, key: str) -> Question:
        for question in self.questions:
            if question.key == key:
                return question
        raise KeyError(f"lab {self.number} has no question {key!r}")
