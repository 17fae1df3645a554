"""The lab engine on its own: loading, recording progress, judging answers, reports (no running lab).

The labs here are throwaway ones written into a temporary directory; their
checks observe a plain object standing in for the lab, which is the only
thing replaced.
"""

from __future__ import annotations

import pytest

from labctl.labs.engine import Engine, LabFormatError, load_lab
from labctl.labs.model import CheckError
from labctl.labs.store import FileStore, MemoryStore

LAB_MD = """\
---
title: A throwaway lab
minutes: 5
level: beginner
objectives: [see the engine work]
prerequisites: []
concepts: [testing]
---
## Goal
Text.
<!-- check: steady-state -->
## Steps
Turn the light on.
<!-- check: light -->
## Questions
<!-- questions -->
"""

STEPS_PY = """\
from labctl.labs.model import Question, Step, failed, fixed, passed

def steady(ctx):
    return passed("all quiet") if not ctx.world["light"] else failed("the light is on")

def light(ctx):
    if not ctx.world["light"]:
        return failed("the light is still off")
    return passed("the light is on", watts=ctx.world["watts"])

def switch_on(ctx):
    ctx.world["light"] = True

STEADY = Step("steady-state", "Steady", steady, lambda ctx: ctx.world.update(light=False), link="/")
STEPS = [Step("light", "Light", light, switch_on, link="/faults/")]
QUESTIONS = [
    Question("watts", "How many watts?", lambda ctx, p: ctx.observed("light")["watts"], relative=0.1, unit="W",
             explanation="Read it off the check."),
    Question("colour", "Which colour?", fixed("white"), choices=("white", "red"), explanation="LEDs."),
]
"""


class World:
    """What the throwaway lab's checks observe, instead of a running lab."""

    def __init__(self):
        self.world = {"light": False, "watts": 60}
        self.progress = {}
        self.now = 1_700_000_000.0

    def clock(self):
        self.now += 1
        return self.now

    def observed(self, key):
        return dict((self.progress.get("steps", {}).get(key) or {}).get("observed") or {})

    def restore_defaults(self):
        self.world["light"] = False


@pytest.fixture
def labs_root(tmp_path):
    directory = tmp_path / "labs" / "01-throwaway"
    directory.mkdir(parents=True)
    (directory / "lab.md").write_text(LAB_MD)
    (directory / "steps.py").write_text(STEPS_PY)
    return tmp_path / "labs"


@pytest.fixture
def engine(labs_root):
    return Engine(root=labs_root, ctx=World(), store=MemoryStore(), student="ada@lab.local")


def test_check_records_when_it_passed_and_what_it_measured(engine):
    """Ensure a failed check keeps only the attempt, and a pass keeps its time and figures."""
    lab = engine.lab("1")
    assert not engine.check(lab, "light").passed
    record = engine.progress(lab)["steps"]["light"]
    assert record["attempts"] == 1 and "passed_at" not in record
    engine.ctx.world["light"] = True
    outcome = engine.check(lab, 1)
    assert outcome.passed and outcome.observed == {"watts": 60}
    record = engine.progress(lab)["steps"]["light"]
    assert record["attempts"] == 2 and record["observed"] == {"watts": 60} and record["shown"] is False


def test_solve_marks_the_step_as_shown(engine):
    """Ensure Show me does the step and the report says it was shown, not done."""
    lab = engine.lab("throwaway")
    assert engine.solve(lab, "light").passed
    assert engine.report(lab)["steps"][1]["shown"] is True
    assert "shown (Show me)" in engine.report_markdown(lab)


def test_a_check_that_raises_fails_with_a_message(engine):
    """Ensure a check that breaks reports it instead of raising into the page."""
    lab = engine.lab(1)
    engine.ctx.world = None  # the check will raise TypeError
    outcome = engine.check(lab, "light")
    assert not outcome.passed and "The check itself failed (TypeError" in outcome.message


@pytest.mark.parametrize("raw, correct", [("60", True), ("63 W", True), ("54,5", True), ("70", False), ("0", False)])
def test_numeric_answers_are_judged_against_the_students_data(engine, raw, correct):
    """Ensure a number within the tolerance of the student's own figure is right, and outside it wrong."""
    lab = engine.lab(1)
    engine.solve(lab, "light")
    assert engine.answer(lab, "watts", raw).correct is correct


@pytest.mark.parametrize("raw", ["", "sixty", "blue"])
def test_what_is_not_an_answer_is_not_recorded(engine, raw):
    """Ensure an empty, non-numeric or unknown-choice answer says why and records nothing."""
    lab = engine.lab(1)
    engine.solve(lab, "light")
    question = "colour" if raw == "blue" else "watts"
    answer = engine.answer(lab, question, raw)
    assert not answer.correct and answer.message
    assert question not in engine.progress(lab)["answers"]


def test_a_question_before_its_data_asks_for_the_step(engine):
    """Ensure a question whose data is missing says so instead of raising."""
    lab = engine.lab(1)

    def nothing_yet(key):
        raise CheckError("pass step light first")

    engine.ctx.observed = nothing_yet
    answer = engine.answer(lab, "watts", "60")
    assert not answer.correct and "pass step light first" in answer.message


def test_finished_once_every_step_passed_and_every_answer_is_right(engine):
    """Ensure the lab is finished only when all steps passed and all answers are right."""
    lab = engine.lab(1)
    engine.check(lab, "steady-state")
    engine.solve(lab, "light")
    engine.answer(lab, "watts", "60")
    assert not engine.summary(lab)["finished"]
    engine.answer(lab, "colour", "red")
    assert not engine.summary(lab)["finished"]
    engine.answer(lab, "colour", "white")
    assert engine.summary(lab) == {"passed": 2, "total": 2, "answered": 2, "questions": 2, "finished": True}


def test_reset_restores_and_checks_the_steady_state(engine):
    lab = engine.lab(1)
    engine.ctx.world["light"] = True
    assert not engine.check(lab, "steady-state").passed
    assert engine.reset(lab).passed


def test_unknown_labs_and_steps_name_what_exists(engine):
    with pytest.raises(LookupError, match="01-throwaway"):
        engine.lab("99")
    with pytest.raises(KeyError, match="steps 0"):
        engine.lab(1).step(7)
    with pytest.raises(KeyError, match="no step 'nope'"):
        engine.lab(1).step("nope")


def test_a_lab_whose_text_misses_a_check_marker_is_refused(labs_root):
    directory = labs_root / "01-throwaway"
    (directory / "lab.md").write_text(LAB_MD.replace("<!-- check: light -->", ""))
    with pytest.raises(LabFormatError, match="marks checks"):
        load_lab(directory)


def test_file_store_keeps_progress_across_engines(labs_root, tmp_path):
    """Ensure progress survives a restart: a second engine on the same files sees it."""
    store = FileStore(tmp_path / "progress")
    first = Engine(root=labs_root, ctx=World(), store=store, student="ada@lab.local")
    first.solve(first.lab(1), "light")
    second = Engine(root=labs_root, ctx=World(), store=store, student="ada@lab.local")
    assert second.progress(second.lab(1))["steps"]["light"]["passed_at"]
    other = Engine(root=labs_root, ctx=World(), store=store, student="bob@lab.local")
    assert other.progress(other.lab(1))["steps"] == {}
