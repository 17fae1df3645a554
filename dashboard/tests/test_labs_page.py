"""The Labs page on labctl's lab engine: a throwaway lab, checked against scripted services.

The lab written here has a steady state (the engine's own), one step whose
check looks at payment's faults (so a test decides whether it passes by what
the fake payment service answers) and two questions, one computed from what
the step observed and one multiple choice.
"""

from __future__ import annotations

import json
import time

import pytest
from django.core.cache import cache

from console import audit
from console import labs as lab_pages
from console.models import LabProgress

pytestmark = pytest.mark.django_db

STUDENT = "admin@lab.local"
LAB = "01-demo"
OUTAGE = {"id": "preset-payment-outage", "kind": "outage", "probability": 1.0}

LAB_MD = """\
---
title: Demo of a lab
minutes: 10
level: beginner
objectives:
  - why a check observes the real system
prerequisites: [00-intro]
concepts: [checks]
---
## Goal

Break **payment** and watch it.

<!-- check: steady-state -->

## Step 1: break payment

| service | fault |
|---|---|
| payment | outage |

```bash
labctl fault add payment outage
```

<!-- check: outage -->

## Questions

<!-- questions -->

That is all.
"""

STEPS_PY = '''\
"""The throwaway lab of the dashboard's tests."""

from labctl.labs.model import CheckError, Question, Step, failed, fixed, passed


def outage_check(ctx):
    faults = ctx.faults("payment")
    if not faults:
        return failed("payment has no fault yet: apply the Payment outage preset.")
    return passed("payment is in an outage.", fault_count=len(faults), fault_id=faults[0]["id"])


def outage_solve(ctx):
    ctx.add_fault("payment", kind="outage", id="preset-payment-outage")


def fault_count(ctx, progress):
    observed = ctx.observed("outage")
    if not observed:
        raise CheckError("pass step 1 first")
    return observed["fault_count"]


STEPS = [
    Step(key="outage", title="Payment is down", check=outage_check, solve=outage_solve,
         hints=("The Faults page has a preset for this.",), link="/faults/", link_label="Open Faults",
         terminal="labctl fault add payment outage"),
]
QUESTIONS = [
    Question(key="count", text="How many faults did payment have?", expected=fault_count, unit="faults",
             explanation="One preset, one fault."),
    Question(key="state", text="What does a client of payment see?", expected=fixed("503"),
             choices=("200", "503"), explanation="An outage answers 503 to everything."),
]
'''


def write_lab(root, name: str = LAB, md: str = LAB_MD, steps: str = STEPS_PY):
    directory = root / "labs" / name
    directory.mkdir(parents=True)
    (directory / "lab.md").write_text(md)
    (directory / "steps.py").write_text(steps)
    return directory


@pytest.fixture
def demo(settings, tmp_path, lab):
    """The throwaway lab under a temporary LAB_ROOT, the scripted services at their steady state."""
    settings.LAB_ROOT = tmp_path
    write_lab(tmp_path)
    lab["order"].on("GET", "/_lab/saga/", 200, {"mode": "sync"})
    for fake in lab.values():
        fake.on("DELETE", "/_lab/resilience/", 200, {"switches": {}, "breakers": {}})
    lab["order"].on("DELETE", "/_lab/saga/", 200, {"mode": "sync"})
    empty = {"count": 0, "next": None, "previous": None, "results": []}  # the audit: nothing out of place
    for service, path in (
        ("order", "orders"),
        ("inventory", "stock"),
        ("inventory", "reservations"),
        ("payment", "charges"),
    ):
        lab[service].on("GET", f"/internal/reconciliation/{path}/", 200, empty)
    return lab


def payment_down(lab) -> None:
    lab["payment"].on("GET", "/_lab/faults/", 200, {"service": "payment", "faults": [OUTAGE]})


def progress() -> dict:
    return LabProgress.objects.get(student=STUDENT, lab=LAB).data


# --- reading ----------------------------------------------------------------------------


def test_the_list_shows_each_lab_with_its_front_matter(client, demo):
    """Ensure /labs/ lists the lab's number, title, minutes, level, prerequisites and objectives."""
    html = client.get("/labs/").content.decode()
    assert 'data-testid="lab-01-demo"' in html
    assert "Demo of a lab" in html and "10 min" in html and "beginner" in html
    assert "after 00-intro" in html
    assert "why a check observes the real system" in html
    assert "Log in to check your steps" in html


def test_the_list_shows_a_staff_members_progress(staff, demo):
    """Ensure a logged-in student sees "n/m steps, a/q answers", and "finished" once everything is done."""
    assert "0/2 steps, 0/2 answers" in staff.get("/labs/").content.decode()
    staff.post("/labs/01-demo/steps/steady-state/check/")
    assert "1/2 steps, 0/2 answers" in staff.get("/labs/").content.decode()
    payment_down(demo)
    staff.post("/labs/01-demo/steps/outage/check/")
    staff.post("/labs/01-demo/questions/count/answer/", {"answer": "1"})
    staff.post("/labs/01-demo/questions/state/answer/", {"answer": "503"})
    html = staff.get("/labs/").content.decode()
    assert 'data-testid="progress-01-demo">finished<' in html


def test_the_lab_page_renders_the_markdown_with_a_widget_at_each_marker(client, demo):
    """Ensure the text is Markdown as HTML and each step's widget sits where its marker was."""
    html = client.get("/labs/01-demo/").content.decode()
    assert "<strong>payment</strong>" in html
    assert "<table>" in html and "<td>outage</td>" in html
    assert '<code class="language-bash">' in html
    assert "<!-- check:" not in html and "<!-- questions -->" not in html
    # Each widget comes right after the text that precedes its marker, the questions before "That is all."
    goal, steady = html.index("<h2>Goal</h2>"), html.index('id="step-steady-state"')
    step1, outage = html.index("Step 1: break payment"), html.index('id="step-outage"')
    questions, end = html.index('data-testid="questions"'), html.index("That is all.")
    assert goal < steady < step1 < outage < questions < end
    assert "Open Faults ›" in html and 'href="/faults/"' in html
    assert "labctl fault add payment outage" in html
    assert "The Faults page has a preset for this." in html
    assert "How many faults did payment have?" in html


def test_anonymous_readers_get_no_buttons_but_a_login_link(client, demo):
    """Ensure a visitor reads the lab but is offered a login instead of Check, Show me and the forms."""
    html = client.get("/labs/01-demo/").content.decode()
    assert 'data-testid="check-outage"' not in html and 'data-testid="solve-outage"' not in html
    assert 'data-testid="answer-form-count"' not in html and 'data-testid="lab-reset"' not in html
    assert html.count("Log in to check your steps") >= 3


def test_staff_get_check_show_me_reset_and_report(staff, demo):
    """Ensure a logged-in student has every control, and Show me says it marks the step as shown."""
    html = staff.get("/labs/01-demo/").content.decode()
    for testid in (
        "check-outage",
        "solve-outage",
        "check-steady-state",
        "lab-reset",
        "lab-forget",
        "report-md",
        "report-json",
        "answer-form-count",
        "answer-form-state",
    ):
        assert f'data-testid="{testid}"' in html, testid
    assert "your report will mark it as <em>shown</em>" in html
    assert 'hx-indicator="#working-outage"' in html and "working…" in html
    assert 'type="radio" name="answer" value="503"' in html
    assert 'type="number" step="any"' in html and "faults</span>" in html


def test_a_lab_is_found_by_number_and_slug_and_shown_at_its_name(client, demo):
    """Ensure /labs/1/ and /labs/demo/ redirect to /labs/01-demo/."""
    for ref in ("1", "01", "demo"):
        response = client.get(f"/labs/{ref}/")
        assert response.status_code == 302 and response["Location"] == "/labs/01-demo/"


def test_a_lab_that_does_not_load_is_named_and_the_others_still_list(client, demo, settings):
    """Ensure a half-written lab shows its error on the list instead of taking every lab down."""
    write_lab(settings.LAB_ROOT, "02-broken", md=LAB_MD.replace("<!-- check: outage -->", ""))
    html = client.get("/labs/").content.decode()
    assert 'data-testid="labs-broken"' in html and "02-broken" in html and "marks checks" in html
    assert 'data-testid="lab-01-demo"' in html
    assert client.get("/labs/02-broken/").status_code == 404


def test_without_a_labs_directory_the_list_says_so(client, settings, tmp_path):
    settings.LAB_ROOT = tmp_path
    response = client.get("/labs/")
    assert response.status_code == 200 and 'data-testid="no-labs"' in response.content.decode()


# --- the store --------------------------------------------------------------------------


def test_the_db_store_round_trips_the_engines_document():
    """Ensure load gives back what save stored, save replaces (one row per student and lab), delete forgets."""
    store = lab_pages.DbStore()
    assert store.load(STUDENT, LAB) is None
    store.save(STUDENT, LAB, {"steps": {"a": {"observed": {"p95_ms": 12.5}}}, "answers": {}})
    store.save(STUDENT, LAB, {"steps": {"a": {"observed": {"p95_ms": 14.0}}}, "answers": {"q": {"correct": True}}})
    store.save("bob@lab.local", LAB, {"steps": {}})
    assert store.load(STUDENT, LAB) == {
        "steps": {"a": {"observed": {"p95_ms": 14.0}}},
        "answers": {"q": {"correct": True}},
    }
    assert LabProgress.objects.filter(student=STUDENT).count() == 1
    store.delete(STUDENT, LAB)
    assert store.load(STUDENT, LAB) is None
    assert store.load("bob@lab.local", LAB) == {"steps": {}}


# --- checks and solves ------------------------------------------------------------------


def test_check_fails_then_passes_and_records_what_it_observed(staff, demo):
    """Ensure Check asks the real (here: scripted) payment, records FAIL, then PASS with its figures."""
    response = staff.post("/labs/01-demo/steps/outage/check/")
    assert response.status_code == 302 and response["Location"] == "/labs/01-demo/#step-outage"
    record = progress()["steps"]["outage"]
    assert record["last"]["passed"] is False and "passed_at" not in record
    assert demo["payment"].sent("GET", "/_lab/faults/")
    html = staff.get("/labs/01-demo/").content.decode()
    assert 'data-testid="verdict-outage">FAIL<' in html and "payment has no fault yet" in html

    payment_down(demo)
    staff.post("/labs/01-demo/steps/outage/check/")
    record = progress()["steps"]["outage"]
    assert record["passed_at"] and record["attempts"] == 2 and record["shown"] is False
    assert record["observed"] == {"fault_count": 1, "fault_id": "preset-payment-outage"}
    html = staff.get("/labs/01-demo/").content.decode()
    assert 'data-testid="verdict-outage">PASS<' in html
    assert '<td class="mono">fault_id</td><td class="mono">preset-payment-outage</td>' in html


def test_check_over_htmx_answers_only_the_steps_widget(staff, demo):
    """Ensure an htmx Check gets the widget back (for an outerHTML swap), not a page or a redirect."""
    payment_down(demo)
    response = staff.post("/labs/01-demo/steps/outage/check/", HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert response.status_code == 200
    assert html.lstrip().startswith('<section class="lab-step is-pass" id="step-outage"')
    assert "<html" not in html and 'data-testid="observed-outage"' in html


def test_the_steady_state_check_is_the_engines(staff, demo):
    """Ensure the steady-state step asks every service and fails while payment has a fault."""
    staff.post("/labs/01-demo/steps/steady-state/check/")
    assert progress()["steps"]["steady-state"]["last"]["passed"] is True
    payment_down(demo)
    staff.post("/labs/01-demo/steps/0/check/")
    last = progress()["steps"]["steady-state"]["last"]
    assert last["passed"] is False and "payment has 1 active fault" in last["message"]


def test_show_me_does_the_step_and_marks_it_shown(staff, demo):
    """Ensure Show me sends the solve's fault to payment, then checks, and the step is recorded as shown."""
    payment_down(demo)  # the scripted payment cannot remember the fault; it answers as if it had
    response = staff.post("/labs/01-demo/steps/outage/solve/", HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    (sent,) = demo["payment"].sent("PUT", "/_lab/faults/")
    assert sent["json"] == {"kind": "outage", "id": "preset-payment-outage"}
    assert progress()["steps"]["outage"]["shown"] is True
    assert "shown by “Show me”" in response.content.decode()


def test_reset_restores_the_defaults_and_says_the_steady_state(staff, demo):
    """Ensure Reset clears faults and switches on every service, resets the saga and reports the steady state."""
    response = staff.post("/labs/01-demo/reset/", follow=True)
    html = response.content.decode()
    for name, fake in demo.items():
        assert fake.sent("DELETE", "/_lab/faults/") and fake.sent("DELETE", "/_lab/resilience/"), name
    assert demo["order"].sent("DELETE", "/_lab/saga/")
    assert "Reset: cleared every fault" in html and "Steady state: PASS" in html
    assert progress()["steps"]["steady-state"]["passed_at"]


def test_reset_drops_the_shared_audit(staff, demo):
    """Ensure the audit read after a reset is computed anew, not the red one cached from before it."""
    cache.set(audit.AUDIT_CACHE_KEY, {"computed_at": time.time(), "result": {"ok": False}})
    staff.post("/labs/01-demo/reset/")
    assert cache.get(audit.AUDIT_CACHE_KEY) is None


def test_start_over_forgets_the_progress(staff, demo):
    staff.post("/labs/01-demo/steps/steady-state/check/")
    assert LabProgress.objects.filter(student=STUDENT, lab=LAB).exists()
    response = staff.post("/labs/01-demo/forget/")
    assert response.status_code == 302
    assert not LabProgress.objects.filter(student=STUDENT, lab=LAB).exists()


def test_a_check_with_the_services_dead_fails_with_a_reason(staff, demo, dead_lab):
    """Ensure a check that cannot reach payment records a FAIL saying so, not a 500."""
    response = staff.post("/labs/01-demo/steps/outage/check/", HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    assert "Could not observe the lab" in progress()["steps"]["outage"]["last"]["message"]


# --- questions --------------------------------------------------------------------------


def test_a_question_computed_from_the_students_data(staff, demo):
    """Ensure the answer is judged against the figure the step observed, and explained once answered."""
    response = staff.post("/labs/01-demo/questions/count/answer/", {"answer": "1"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 400 and "needs your data first" in response.content.decode()
    assert not LabProgress.objects.exists()

    payment_down(demo)
    staff.post("/labs/01-demo/steps/outage/check/")
    response = staff.post("/labs/01-demo/questions/count/answer/", {"answer": "3"}, HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert response.status_code == 200 and "Not what your data says" in html and "One preset, one fault." in html
    response = staff.post("/labs/01-demo/questions/count/answer/", {"answer": "1"})
    assert response.status_code == 302 and response["Location"] == "/labs/01-demo/#question-count"
    html = staff.get("/labs/01-demo/").content.decode()
    assert 'data-testid="answer-message-count"' in html and "Right: your data says 1" in html
    assert 'data-testid="answer-verdict-count">right<' in html
    assert progress()["answers"]["count"] == {
        "answer": "1",
        "correct": True,
        "expected": 1,
        "attempts": 2,
        "at": progress()["answers"]["count"]["at"],
    }


@pytest.mark.parametrize(
    "question, answer, message",
    [
        ("count", "many", "Answer with a number (in faults)."),
        ("count", "", "Give an answer first."),
        ("state", "404", "Choose one of: 200, 503."),
    ],
)
def test_what_is_not_an_answer_is_refused_and_not_recorded(staff, demo, question, answer, message):
    """Ensure a non-number or a non-choice gets the engine's message as a 400, and nothing is recorded."""
    payment_down(demo)
    staff.post("/labs/01-demo/steps/outage/check/")
    for htmx in (False, True):
        headers = {"HTTP_HX_REQUEST": "true"} if htmx else {}
        response = staff.post(f"/labs/01-demo/questions/{question}/answer/", {"answer": answer}, **headers)
        assert response.status_code == 400
        assert message in response.content.decode()
    assert question not in progress()["answers"]


def test_a_multiple_choice_answer(staff, demo):
    response = staff.post("/labs/01-demo/questions/state/answer/", {"answer": "503"}, HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert "Right." in html and "An outage answers 503 to everything." in html
    assert 'data-testid="answer-form-state"' not in html  # answered right: nothing left to send


# --- reports ----------------------------------------------------------------------------


def test_the_reports_download_with_the_students_figures(staff, demo):
    """Ensure report.md and report.json are attachments holding the observed figures and the answers."""
    payment_down(demo)
    staff.post("/labs/01-demo/steps/outage/check/")
    staff.post("/labs/01-demo/questions/count/answer/", {"answer": "1"})

    response = staff.get("/labs/01-demo/report.md")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/markdown")
    assert response["Content-Disposition"] == 'attachment; filename="lab-01-demo-report.md"'
    text = response.content.decode()
    assert "# Lab report: 1. Demo of a lab" in text and f"Student: {STUDENT}" in text
    assert "- fault_id: preset-payment-outage" in text and "- fault_count: 1" in text
    assert "answer: 1 (right; expected 1)" in text

    response = staff.get("/labs/01-demo/report.json")
    assert response["Content-Disposition"] == 'attachment; filename="lab-01-demo-report.json"'
    report = json.loads(response.content)
    (outage,) = [s for s in report["steps"] if s["key"] == "outage"]
    assert outage["observed"] == {"fault_count": 1, "fault_id": "preset-payment-outage"}
    assert report["student"] == STUDENT


# --- access and bad input ---------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/labs/01-demo/steps/outage/check/",
        "/labs/01-demo/steps/outage/solve/",
        "/labs/01-demo/questions/count/answer/",
        "/labs/01-demo/reset/",
        "/labs/01-demo/forget/",
    ],
)
def test_anonymous_visitors_cannot_act(client, demo, path):
    """Ensure every action needs a staff login and leaves the services and the progress alone."""
    assert client.post(path, {"answer": "1"}).status_code == 403
    assert not demo["payment"].sent("PUT", "/_lab/faults/") and not demo["payment"].sent("DELETE", "/_lab/faults/")
    assert not LabProgress.objects.exists()


def test_anonymous_visitors_are_sent_to_log_in_for_the_report(client, demo):
    response = client.get("/labs/01-demo/report.md")
    assert response.status_code == 302 and response["Location"].startswith("/login/?next=")


@pytest.mark.parametrize(
    "method, path, status",
    [
        ("get", "/labs/no-such-lab/", 404),
        ("get", "/labs/99/", 404),
        ("get", "/labs/no-such-lab/report.md", 404),
        ("get", "/labs/no-such-lab/report.json", 404),
        ("post", "/labs/no-such-lab/steps/outage/check/", 404),
        ("post", "/labs/01-demo/steps/no-such-step/check/", 404),
        ("post", "/labs/01-demo/steps/99/check/", 404),
        ("post", "/labs/01-demo/steps/no-such-step/solve/", 404),
        ("post", "/labs/01-demo/questions/no-such-question/answer/", 404),
        ("post", "/labs/no-such-lab/reset/", 404),
        ("post", "/labs/no-such-lab/forget/", 404),
        ("get", "/labs/01-demo/steps/outage/check/", 405),
        ("get", "/labs/01-demo/reset/", 405),
        ("post", "/labs/01-demo/report.md", 405),
        ("post", "/labs/01-demo/", 405),
    ],
)
def test_bad_requests_are_refused_not_crashed(staff, demo, method, path, status):
    """Ensure nothing a client can send turns into a 500."""
    assert getattr(staff, method)(path).status_code == status


@pytest.mark.parametrize(
    "answer, status, correct",
    [
        # Numbers Python's float() reads are judged (200) and recorded, right or wrong ...
        ("1" * 5000, 200, False),  # the view keeps the first 200 characters: 1.1e199
        ("1e999", 200, False),  # inf
        ("nan", 200, False),
        ("-inf", 200, False),
        ("١", 200, True),  # ARABIC-INDIC DIGIT ONE reads as 1
        ("1 faults", 200, True),  # the unit may follow the number
        # ... anything else is not an answer: a 400, nothing recorded.
        ("0x10", 400, None),
        ("\x00", 400, None),
        ("<b>1</b>", 400, None),
    ],
)
def test_odd_answers_are_judged_or_refused_never_crashed(staff, demo, answer, status, correct):
    """Ensure each odd answer gets its one outcome: judged and recorded, or refused with nothing recorded."""
    payment_down(demo)
    staff.post("/labs/01-demo/steps/outage/check/")
    response = staff.post("/labs/01-demo/questions/count/answer/", {"answer": answer}, HTTP_HX_REQUEST="true")
    assert response.status_code == status, response.content.decode()[:300]
    assert "<b>1</b>" not in response.content.decode()
    answers = progress()["answers"]
    if correct is None:
        assert "count" not in answers, answers
    else:
        assert answers["count"]["correct"] is correct, answers


def test_the_widget_markup_matches_what_htmx_swaps(staff, demo):
    """Ensure each form targets its own widget, so a swap replaces exactly the step or question it came from."""
    html = staff.get("/labs/01-demo/").content.decode()
    assert 'hx-post="/labs/01-demo/steps/outage/check/" hx-target="#step-outage"' in html
    assert 'hx-post="/labs/01-demo/questions/count/answer/" hx-target="#question-count"' in html
