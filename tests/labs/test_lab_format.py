"""Every lab in labs/ has the shape the curriculum promises (no running lab needed)."""

from __future__ import annotations

import re

import pytest

from browser.lab import ROOT
from labctl.labs.engine import QUESTIONS_MARKER, load_labs

LABS = load_labs(ROOT / "labs")
SECTIONS = [
    "Goal",
    "Steady state",
    "Hypothesis",
    "Steps",
    "Why it happened",
    "Turn on the defence|The fix",
    "Check again",
    "Clean up",
    "Questions",
]
DASHBOARD_PAGES = ("/", "/faults/", "/resilience/", "/flows/", "/traces/", "/data/", "/audit/", "/load/")


def test_the_six_first_labs_are_there():
    """Ensure labs 1 to 6 exist, numbered without gaps."""
    assert [lab.number for lab in LABS][:6] == [1, 2, 3, 4, 5, 6], [lab.name for lab in LABS]


@pytest.mark.parametrize("lab", LABS, ids=lambda lab: lab.name)
def test_lab_has_the_shape_of_a_lab(lab):
    """Ensure the sections come in order, the lab fits in 20 minutes and every step can be shown."""
    headings = re.findall(r"^## (.+)$", lab.text, flags=re.M)
    positions = []
    for section in SECTIONS:
        found = [i for i, heading in enumerate(headings) if re.fullmatch(section, heading.strip())]
        assert found, f"{lab.name}: no section '## {section}' (has {headings})"
        positions.append(found[0])
    assert positions == sorted(positions), f"{lab.name}: sections out of order: {headings}"
    assert 1 <= lab.minutes <= 20
    assert lab.objectives and lab.concepts
    known = {other.name for other in LABS}
    for prerequisite in lab.prerequisites:
        assert prerequisite in known, f"{lab.name}: prerequisite {prerequisite} is not a lab"
    assert lab.steps, f"{lab.name} has no step"
    for step in lab.all_steps():
        assert step.solve is not None, f"{lab.name}/{step.key} has no solve"
        assert step.link.split("#")[0].split("?")[0] in DASHBOARD_PAGES, f"{lab.name}/{step.key}: {step.link}"
    assert lab.questions, f"{lab.name} asks no question"
    for question in lab.questions:
        assert question.explanation, f"{lab.name}/{question.key} has no explanation"
    assert lab.text.count(QUESTIONS_MARKER) == 1
