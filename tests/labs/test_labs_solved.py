"""Every guided lab, solved end to end on a real lab: each check fails before its step and passes after it.

This is what proves the checks can fail: a step's check is run before its
solve (it must fail and say what is missing), then the solve does the step
through the public APIs (as *Show me* does) and the check must pass with the
figures it measured. Then each question refuses a wrong answer and accepts
the one computed from this run's own data, the report holds every figure,
and the reset brings the lab back to its steady state.
"""

from __future__ import annotations

import pytest

from browser.lab import ROOT
from labctl.labs.engine import load_labs

LABS = [lab.name for lab in load_labs(ROOT / "labs")]


def wrong_answer(question, expected) -> str:
    if question.choices:
        return next(choice for choice in question.choices if choice != expected)
    margin = max(question.tolerance, abs(float(expected)) * question.relative)
    return f"{float(expected) + 10 * margin + 1000:g}"


@pytest.mark.parametrize("name", LABS)
def test_lab_solved_end_to_end(engine, name):
    """Ensure every step's check fails before its solve and passes after it, and the questions judge right."""
    lab = engine.lab(name)
    steady = engine.reset(lab)
    assert steady.passed, f"steady state on a reset lab: {steady.message}"

    for step in lab.steps:
        before = engine.check(lab, step.key)
        assert not before.passed, f"{name}/{step.key} passed before its step was done: {before.message}"
        assert before.message, f"{name}/{step.key} failed without saying what is missing"
        after = engine.solve(lab, step.key)
        assert after.passed, f"{name}/{step.key} after its solve: {after.message}"
        assert after.observed, f"{name}/{step.key} passed without recording what it measured"

    for question in lab.questions:
        expected = question.expected(engine.ctx, engine.progress(lab))
        wrong = engine.answer(lab, question.key, wrong_answer(question, expected))
        assert not wrong.correct, f"{name}/{question.key} accepted a wrong answer"
        right = engine.answer(lab, question.key, str(expected))
        assert right.correct, f"{name}/{question.key}: {right.message}"

    report = engine.report(lab)
    for step in report["steps"][1:]:
        assert step["passed_at"] and step["shown"], step
    markdown = engine.report_markdown(lab)
    for step in report["steps"]:
        for value in step["observed"].values():
            assert str(value) in markdown

    again = engine.reset(lab)
    assert again.passed, f"{name}: the reset did not bring back the steady state: {again.message}"
    assert engine.summary(lab)["finished"], engine.summary(lab)
