"""``labctl lab``: the guided labs from the terminal, on the same engine as the dashboard's Labs page.

    labctl lab list                     every lab, its minutes, level and your progress
    labctl lab show N                   the lab's text, with the check command under each step
    labctl lab check N [--step K]       run the checks (all, or step K): PASS/FAIL lines
    labctl lab solve N [--step K]       do the step(s) for you, then check (the report says "shown")
    labctl lab reset N [--forget]       restore the lab's defaults (and forget your progress)
    labctl lab answer N QUESTION VALUE  answer one of the lab's questions
    labctl lab report N [--json]        your report, as Markdown (or JSON)

Exit status: 0 only when every check asked for passed (``answer``: when the
answer is right). Progress is kept per student (``--student``, default
``$LAB_STUDENT`` or your user name) under ``var/labs/progress/``.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os

import requests

from .. import config
from ..config import Paths
from ..faultcli import CliError, _urls_option, resolve_urls
from ..labapi import LabApi
from ..provision import read_env_file
from .context import LabContext
from .engine import CHECK_MARKER, QUESTIONS_MARKER, Engine, LabNotFound
from .store import FileStore

ADMIN_EMAIL = "admin@lab.local"


def _student(args) -> str:
    return args.student or os.environ.get("LAB_STUDENT") or f"{getpass.getuser()}@terminal"


def staff_login(user_url: str, paths: Paths):
    """A function returning the lab admin's access token (``LAB_ADMIN_PASSWORD``, else the seeded default)."""

    def token() -> str:
        password = (
            os.environ.get("LAB_ADMIN_PASSWORD")
            or read_env_file(paths.env / "user.env").get("LAB_ADMIN_PASSWORD")
            or "admin-lab-2024"
        )
        email = os.environ.get("LAB_ADMIN_EMAIL", ADMIN_EMAIL)
        try:
            response = requests.post(
                f"{user_url}/api/auth/login/", json={"email": email, "password": password}, timeout=10
            )
        except requests.RequestException as exc:
            raise CliError(f"user_service did not answer the lab admin's login: {type(exc).__name__}") from exc
        if response.status_code != 200:
            raise CliError(
                f"the lab admin ({email}) could not log in: {response.status_code} {response.text[:160]}"
                " (set LAB_ADMIN_PASSWORD)"
            )
        return response.json()["access"]

    return token


def build_engine(paths: Paths, args) -> Engine:
    urls = resolve_urls(getattr(args, "urls", None))
    urls["dashboard"] = (args.dashboard_url or os.environ.get("DASHBOARD_URL") or config.DASHBOARD.url).rstrip("/")
    api = LabApi(paths, urls=urls, timeout=10)
    ctx = LabContext(api=api, urls=urls, staff_token=staff_login(urls["user"], paths))
    return Engine(
        root=paths.root / "labs", ctx=ctx, store=FileStore(paths.var / "labs" / "progress"), student=_student(args)
    )


def _line(number: int, title: str, outcome) -> str:
    figures = ", ".join(f"{k}={v}" for k, v in outcome.observed.items()) if outcome.passed else ""
    return f"{'PASS' if outcome.passed else 'FAIL'}  {number}. {title}\n      {outcome.message}" + (
        f"\n      observed: {figures}" if figures else ""
    )


def _steps(lab, args):
    return [lab.step(args.step)] if args.step is not None else lab.all_steps()


def cmd_lab(paths: Paths, args) -> int:
    try:
        engine = build_engine(paths, args)
        return ACTIONS[args.lab_command](engine, args)
    except (LabNotFound, KeyError, CliError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"labctl lab {args.lab_command}: {message}", flush=True)
        return 2


def _list(engine: Engine, args) -> int:
    for lab in engine.labs():
        s = engine.summary(lab)
        needs = f"  after: {', '.join(lab.prerequisites)}" if lab.prerequisites else ""
        state = (
            "finished"
            if s["finished"]
            else f"{s['passed']}/{s['total']} steps, {s['answered']}/{s['questions']} answers"
        )
        print(f"{lab.number:>2}. {lab.title:<44} {lab.minutes:>2} min  {lab.level:<12} {state}{needs}")
    return 0


def _show(engine: Engine, args) -> int:
    lab = engine.lab(args.lab)
    numbers = {step.key: n for n, step in enumerate(lab.all_steps())}

    def marker(match):
        n = numbers[match.group(1)]
        return f"    [check: labctl lab check {lab.number} --step {n}]"

    text = CHECK_MARKER.sub(marker, lab.text)
    questions = "\n".join(
        f"- {q.key}: {q.text}"
        + (f" ({' / '.join(q.choices)})" if q.choices else "")
        + f"\n    [answer: labctl lab answer {lab.number} {q.key} VALUE]"
        for q in lab.questions
    )
    print(f"# {lab.number}. {lab.title}  ({lab.minutes} min, {lab.level})\n")
    print(text.replace(QUESTIONS_MARKER, questions))
    return 0


def _check(engine: Engine, args) -> int:
    lab = engine.lab(args.lab)
    results = []
    for step in _steps(lab, args):
        outcome = engine.check(lab, step.key)
        results.append(outcome.passed)
        print(_line(lab.all_steps().index(step), step.title, outcome), flush=True)
    return 0 if all(results) else 1


def _solve(engine: Engine, args) -> int:
    lab = engine.lab(args.lab)
    results = []
    for step in _steps(lab, args):
        print(f"...   {lab.all_steps().index(step)}. {step.title}: doing it", flush=True)
        outcome = engine.solve(lab, step.key)
        results.append(outcome.passed)
        print(_line(lab.all_steps().index(step), step.title, outcome), flush=True)
        if not outcome.passed:
            break
    return 0 if all(results) else 1


def _reset(engine: Engine, args) -> int:
    lab = engine.lab(args.lab)
    if args.forget:
        engine.forget(lab)
        print(f"forgot your progress in lab {lab.number}")
    outcome = engine.reset(lab)
    print(_line(0, lab.steady.title, outcome))
    return 0 if outcome.passed else 1


def _answer(engine: Engine, args) -> int:
    lab = engine.lab(args.lab)
    answer = engine.answer(lab, args.question, args.value)
    print(("RIGHT " if answer.correct else "WRONG ") + answer.message)
    if answer.explanation and answer.expected is not None:
        print(f"      {answer.explanation}")
    return 0 if answer.correct else 1


def _report(engine: Engine, args) -> int:
    lab = engine.lab(args.lab)
    print(json.dumps(engine.report(lab), indent=2) if args.json else engine.report_markdown(lab))
    return 0


ACTIONS = {
    "list": _list,
    "show": _show,
    "check": _check,
    "solve": _solve,
    "reset": _reset,
    "answer": _answer,
    "report": _report,
}


def add_parser(sub) -> None:
    lab = sub.add_parser(
        "lab",
        help="the guided labs: list, show, check, solve, reset, answer, report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = lab.add_subparsers(dest="lab_command", required=True, metavar="ACTION")

    def common(parser):
        _urls_option(parser)
        parser.add_argument("--dashboard-url", help="the dashboard (its trace API); default DASHBOARD_URL or :8000")
        parser.add_argument("--student", help="whose progress (default $LAB_STUDENT or your user name)")
        return parser

    common(actions.add_parser("list", help="every lab and your progress"))
    common(actions.add_parser("show", help="the lab's text")).add_argument("lab", help="number or slug")
    for name, what in (("check", "run the checks"), ("solve", "do the step(s), then check")):
        parser = common(actions.add_parser(name, help=what))
        parser.add_argument("lab", help="number or slug")
        parser.add_argument("--step", help="one step: its number (0 = steady state) or key")
    reset = common(actions.add_parser("reset", help="restore the lab's defaults"))
    reset.add_argument("lab")
    reset.add_argument("--forget", action="store_true", help="also forget your progress in this lab")
    answer = common(actions.add_parser("answer", help="answer a question"))
    answer.add_argument("lab")
    answer.add_argument("question", help="the question's key (see labctl lab show N)")
    answer.add_argument("value")
    report = common(actions.add_parser("report", help="your report of the lab"))
    report.add_argument("lab")
    report.add_argument("--json", action="store_true")
