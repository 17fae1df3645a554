"""The dashboard's pages. Thin: read through ``selectors``, act through ``lab`` / ``flows``, render.

Full pages are plain HTML forms (they work without JavaScript); the parts
that change on their own are htmx partials polled every couple of seconds.
Every peer call is wrapped (``console.peers``), so a dead service shows on
its card and never turns a page into a 500.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.http import FileResponse, Http404, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from opentelemetry.instrumentation.utils import suppress_instrumentation

from collector import selectors as traces
from labctl.facade import LabNotFound

from . import auth, flows, lab, links, peers, selectors, tracing
from . import labs as lab_pages
from . import load as load_runs
from .audit import anonymous_rate_limited, audit_shared, forget_shared
from .models import FlowRun
from .services import flow_run_record

HTMX_STOP_POLLING = 286
FAULT_FORM_DEFAULTS = {
    "kind": "latency",
    "probability": "100",
    "delay_ms": "500",
    "jitter_ms": "0",
    "status": "503",
    "db_mode": "fail",
    "dep_mode": "delay",
    "target": "",
    "path_prefix": "",
    "method": "",
    "ttl_seconds": "",
}


def _service_or_404(service: str) -> str:
    if service not in peers.SERVICES:
        raise Http404(f"No service {service!r}.")
    return service


# --- overview ----------------------------------------------------------------------------


@require_GET
@auth.read_view
def overview(request):
    return render(request, "console/overview.html", {"page": "overview", "lab": selectors.lab_overview()})


@require_GET
@auth.read_view
def overview_partial(request):
    return render(request, "console/_overview.html", {"lab": selectors.lab_overview()})


# --- faults --------------------------------------------------------------------------------


def _faults_context(request, *, forms=None, errors=None, status_service=None) -> dict:
    forms = forms or {}
    return {
        "page": "faults",
        "faults": selectors.faults_page(),
        "presets": lab.PRESETS.values(),
        "forms": {s: forms.get(s, FAULT_FORM_DEFAULTS) for s in peers.SERVICES},
        "errors": errors or {},
        "focus": status_service,
        "kinds": lab.FAULT_KINDS,
        "targets": peers.SERVICES,
    }


@require_GET
@auth.read_view
def faults(request):
    return render(request, "console/faults.html", _faults_context(request))


@require_GET
@auth.read_view
def faults_partial(request):
    return render(request, "console/_faults_list.html", {"faults": selectors.faults_page()})


@require_POST
@auth.staff_view
def fault_add(request, service: str):
    service = _service_or_404(service)
    body, errors = lab.fault_body_from_form(request.POST)
    if not errors:
        result = lab.fault_add(service, body)
        if result.ok:
            added = (result.data or {}).get("added", {}) if isinstance(result.data, dict) else {}
            messages.success(request, f"Injected a {body['kind']} fault on {service} ({added.get('id', 'new')}).")
            return redirect("console:faults")
        errors = result.fields or {"__all__": [f"{service} answered {result.status or result.state}: {result.message}"]}
    context = _faults_context(request, forms={service: request.POST}, errors={service: errors}, status_service=service)
    return render(request, "console/faults.html", context)


@require_POST
@auth.staff_view
def fault_clear(request, service: str, fault_id: str):
    service = _service_or_404(service)
    result = lab.fault_clear(service, fault_id)
    if result.ok:
        messages.success(request, f"Cleared {fault_id} on {service}.")
    else:
        messages.error(request, f"Could not clear {fault_id} on {service}: {result.message}")
    return redirect("console:faults")


@require_POST
@auth.staff_view
def faults_clear_all(request):
    results = lab.faults_clear_all()
    failed = {s: r for s, r in results.items() if not r.ok}
    cleared = sum(int((r.data or {}).get("cleared", 0)) for r in results.values() if r.ok and isinstance(r.data, dict))
    if failed:
        messages.error(
            request, "Could not clear: " + "; ".join(f"{s} ({r.state}: {r.message})" for s, r in failed.items())
        )
    messages.success(
        request,
        f"Cleared {cleared} fault(s) on {len(results) - len(failed)} of {len(results)} services. "
        f"The overview's 5xx and latency figures cover the last {settings.METRICS_WINDOW_SECONDS} s: "
        "a card that was failing shows its errors until they have left that window.",
    )
    return redirect(_back(request, "console:faults"))


@require_POST
@auth.staff_view
def preset_apply(request, slug: str):
    done, message = lab.preset_apply(slug)
    (messages.success if done else messages.error)(request, message)
    return redirect(_back(request, "console:faults"))


def _back(request, default: str) -> str:
    target = request.POST.get("next", "")
    if target and url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        return target
    return default


# --- resilience ----------------------------------------------------------------------------


@require_GET
@auth.read_view
def resilience(request):
    return render(
        request, "console/resilience.html", {"page": "resilience", "res": selectors.resilience_page(), "errors": {}}
    )


@require_GET
@auth.read_view
def resilience_partial(request):
    return render(request, "console/_breakers.html", {"res": selectors.resilience_page()})


@require_POST
@auth.staff_view
def switches_update(request, service: str):
    service = _service_or_404(service)
    changes, errors = lab.switches_from_form(request.POST)
    if not errors:
        result = lab.resilience_update(service, changes)
        if result.ok:
            messages.success(request, f"Updated {service}'s resilience switches.")
            return redirect("console:resilience")
        errors = result.fields or {"__all__": [f"{service} answered {result.status or result.state}: {result.message}"]}
    context = {"page": "resilience", "res": selectors.resilience_page(), "errors": {service: errors}}
    return render(request, "console/resilience.html", context)


@require_POST
@auth.staff_view
def breakers_reset(request, service: str):
    service = _service_or_404(service)
    result = lab.breakers_reset(service)
    if result.ok:
        messages.success(request, f"Closed every breaker of {service}.")
    else:
        messages.error(request, f"Could not reset {service}'s breakers: {result.message}")
    return redirect("console:resilience")


@require_POST
@auth.staff_view
def saga_mode(request):
    mode = request.POST.get("mode")
    if mode not in ("sync", "async"):
        messages.error(request, "The saga mode is sync or async.")
        return redirect("console:resilience")
    result = lab.saga_set(mode)
    if result.ok:
        messages.success(request, f"The checkout saga now runs {mode}.")
    else:
        messages.error(request, f"order_service refused the saga mode: {result.message}")
    return redirect("console:resilience")


# --- flows and traces ----------------------------------------------------------------------


@require_GET
@auth.read_view
def flows_page(request):
    saga = lab.saga_get()
    return render(
        request,
        "console/flows.html",
        {
            "page": "flows",
            "flows": flows.FLOWS.values(),
            "saga": saga.data if lab.saga_available(saga) else None,
            "runs": FlowRun.objects.all()[:15],
        },
    )


@require_POST
@auth.staff_view
def flow_run(request, slug: str):
    if slug not in flows.FLOWS:
        raise Http404(f"No flow {slug!r}.")
    result = flows.flow_run(slug)
    run = flow_run_record(result=result, started_by=auth.current_staff(request)["email"])
    return redirect("console:flow_detail", run_id=run.id)


@require_GET
@auth.read_view
def flow_detail(request, run_id):
    run = get_object_or_404(FlowRun, id=run_id)
    history = (run.order or {}).get("history") or []
    return render(
        request,
        "console/flow_detail.html",
        {
            "page": "flows",
            "run": run,
            "history": [{**h, "kind": _history_kind(h)} for h in history],
            "counts": _history_counts(history),
        },
    )


def _history_kind(entry: dict) -> str:
    text = f"{entry.get('step', '')} {entry.get('note', '')}".lower()
    if any(word in text for word in ("compensat", "release", "refund", "return")):
        return "compensation"
    if "retry" in text or "retried" in text:
        return "retry"
    return "step"


def _history_counts(history: list[dict]) -> dict:
    kinds = [_history_kind(h) for h in history]
    return {"steps": len(kinds), "retries": kinds.count("retry"), "compensations": kinds.count("compensation")}


def _flow_trace(run: FlowRun) -> dict | None:
    ids = []
    if run.trace_id:
        ids.append(run.trace_id)
    ids += [t for t in traces.trace_ids_for_request(request_id=run.request_id) if t not in ids]
    return traces.traces_tree(trace_ids=ids) if ids else None


@require_GET
@auth.read_view
def flow_trace(request, run_id):
    """The flow's waterfall; polls itself until the spans stop arriving (they come ~1 s late)."""
    run = get_object_or_404(FlowRun, id=run_id)
    tree = _flow_trace(run)
    count = tree["span_count"] if tree else 0
    try:
        seen, tries = int(request.GET.get("seen", -1)), int(request.GET.get("tries", 0))
    except ValueError:
        seen, tries = -1, 0
    settled = (count > 0 and count == seen and tries >= 3) or tries >= 12
    return render(
        request,
        "console/_waterfall.html",
        {
            "tree": tree,
            "rows": traces.waterfall_rows(tree) if tree else [],
            "poll": None if settled else {"seen": count, "tries": tries + 1},
            "run": run,
        },
    )


def _trace_filters(request) -> dict:
    try:
        min_duration = traces.duration_filter(request.GET.get("min_duration_ms") or "0") or None
    except ValueError:
        min_duration = None
    try:
        limit = int(request.GET.get("limit") or 50)
    except ValueError:
        limit = 50
    return {
        "service": request.GET.get("service", "")
        if request.GET.get("service", "") in (*peers.SERVICES, "dashboard", "worker")
        else "",
        "errors_only": request.GET.get("status") == "error",
        "min_duration_ms": min_duration,
        "request_id": request.GET.get("request_id", "")[:64],
        "order_id": request.GET.get("order_id", "")[:32],
        # The worker's periodic jobs (every 15 s) would bury the requests: hidden unless asked for.
        "background": request.GET.get("background") == "show",
        "limit": limit,
    }


@require_GET
@auth.read_view
def traces_page(request):
    filters = _trace_filters(request)
    return render(
        request,
        "console/traces.html",
        {
            "page": "traces",
            "traces": traces.trace_list(**filters),
            "filters": filters,
            "query": request.GET.urlencode(),
            "services": (*peers.SERVICES, "worker", "dashboard"),
        },
    )


@require_GET
@auth.read_view
def traces_partial(request):
    filters = _trace_filters(request)
    return render(request, "console/_trace_table.html", {"traces": traces.trace_list(**filters), "filters": filters})


@require_GET
@auth.read_view
def trace_detail(request, trace_id: str):
    if not traces.trace_id_valid(trace_id):
        return render(
            request, "console/trace_detail.html", {"page": "traces", "trace_id": trace_id, "invalid": True}, status=400
        )
    tree = traces.trace_get(trace_id=trace_id)
    return render(
        request,
        "console/trace_detail.html",
        {
            "page": "traces",
            "trace_id": trace_id,
            "tree": tree,
            "rows": traces.waterfall_rows(tree) if tree else [],
        },
        status=200 if tree else 404,
    )


# --- data, audit, load, labs ---------------------------------------------------------------


@require_GET
@auth.read_view
def data(request):
    if auth.current_staff(request) is None:
        # Customers' emails, names and cards: the services give them to a staff token only. A
        # watcher gets a page that says so (and where to log in), not a silent bounce to the login.
        return render(request, "console/data.html", {"page": "data", "staff_only": True})
    token = auth.staff_access_token(request)
    if token is None:
        messages.error(request, "Your login has expired at the user service: log in again to read the data.")
        return redirect(f"{reverse('console:login')}?next={request.path}")
    return render(request, "console/data.html", {"page": "data", "data": selectors.data_page(token)})


@require_GET
@auth.read_view
def audit(request):
    return render(request, "console/audit.html", {"page": "audit"})


@require_GET
@auth.read_view
def audit_partial(request):
    """The last shared audit (anonymous: rate-limited per IP); staff with ``?fresh=1`` compute a new one."""
    staff = auth.current_staff(request) is not None
    if not staff:
        wait = anonymous_rate_limited(request.META.get("REMOTE_ADDR", ""))
        if wait:
            # An HTML fragment the page swaps in like a 200 (console.js: data-swap-refusals), so
            # the visitor reads why nothing changed instead of a page that silently stays put.
            response = render(request, "console/_audit_throttled.html", {"wait": wait}, status=429)
            response["Retry-After"] = str(wait)
            return response
    audit = audit_shared(force=staff and request.GET.get("fresh") == "1")
    return render(request, "console/_audit.html", {"audit": audit, "staff": staff})


@require_GET
@auth.read_view
def load(request):
    directory = links.loadtests_dir()
    return render(
        request,
        "console/load.html",
        {
            "page": "load",
            "loadtests": directory is not None,
            "scenarios": load_runs.scenarios(),
            "descriptions": load_runs.scenario_descriptions(),
            "runs": load_runs.runs(),
            "form": request.GET,
            "limits": load_runs.LIMITS,
            "step_users": load_runs.STEP_USERS,
            "max_steps": load_runs.MAX_STEPS,
            "scale": load_runs.scale_rows(),
        },
    )


@require_POST
@auth.staff_view
def load_scale(request):
    done, message = load_runs.scale(request.POST)
    (messages.success if done else messages.error)(request, message if done else f"Not scaled: {message}")
    return redirect("console:load")


@require_POST
@auth.staff_view
def load_start(request):
    spec, error = load_runs.start_request_from_form(request.POST)
    run_id = None
    if spec is not None:
        run_id, error = load_runs.start(spec)
    if run_id is None:
        messages.error(request, f"The run did not start: {error}")
        return redirect("console:load")
    # No flash message: the run's page says whether it is running or finished, and keeps saying it as it changes.
    return redirect("console:load_run", run_id=run_id)


@require_GET
@auth.read_view
def load_run(request, run_id: str):
    status, error = load_runs.status(run_id)
    if status is None:
        raise Http404(error)
    return render(request, "console/load_run.html", {"page": "load", **_load_context(status)})


@require_GET
@auth.read_view
def load_run_partial(request, run_id: str):
    status, error = load_runs.status(run_id)
    if status is None:
        return render(request, "console/_load_run.html", {"error": error}, status=HTMX_STOP_POLLING)
    context = _load_context(status)
    # A finished run stops its page's polling (htmx stops on this status).
    return render(request, "console/_load_run.html", context, status=200 if context["live"] else HTMX_STOP_POLLING)


def _load_context(status: dict) -> dict:
    history = status.get("history") or []
    measured = load_runs.measured(history)
    charts = {key: load_runs.chart_points(history, key) for key in ("p95_ms", "users")}
    charts.update({key: load_runs.chart_points(measured, key) for key in ("rps", "failures_per_s")})
    return {
        "run": status,
        "live": status.get("state") in ("starting", "running"),
        "rate_measured": bool(measured),
        "charts": charts,
        "endpoints": load_runs.endpoint_table(status),
        "rate_after": {"seconds": load_runs.RATE_AFTER_SECONDS, "requests": load_runs.RATE_AFTER_REQUESTS},
    }


@require_POST
@auth.staff_view
def load_stop(request, run_id: str):
    done, message = load_runs.stop(run_id)
    (messages.success if done else messages.error)(request, message)
    return redirect("console:load_run", run_id=run_id)


@require_GET
@auth.read_view
def load_report(request, run_id: str):
    """Locust's own HTML report of a finished run."""
    status, error = load_runs.status(run_id)
    if status is None or not status.get("report"):
        raise Http404(error or "This run has no report (yet).")
    return FileResponse(open(status["report"], "rb"), content_type="text/html")


# --- guided labs ---------------------------------------------------------------------------
# The engine is labctl's (console.labs wires it to this dashboard); these views only pick the
# lab, step or question a URL names, call one engine method and render or redirect.

_FLASH = "lab_flash"  # an answer's verdict, carried across the redirect of a form sent without JavaScript


def _lab_or_404(request, name: str):
    engine = lab_pages.engine_for(request)
    try:
        return engine, engine.lab(name)
    except LabNotFound:
        raise Http404(f"No lab {name!r}.") from None


def _step_or_404(lab_def, key: str):
    try:
        return lab_def.step(key)
    except KeyError:
        raise Http404(f"Lab {lab_def.number} has no step {key!r}.") from None


def _question_or_404(lab_def, key: str):
    try:
        return lab_def.question(key)
    except KeyError:
        raise Http404(f"Lab {lab_def.number} has no question {key!r}.") from None


def _lab_url(lab_def, anchor: str = "") -> str:
    return reverse("console:lab", args=[lab_def.name]) + (f"#{anchor}" if anchor else "")


@require_GET
@auth.read_view
def labs(request):
    engine = lab_pages.engine_for(request)
    logged_in = auth.current_staff(request) is not None
    entries = []
    for lab_def in engine.labs():
        summary = engine.summary(lab_def) if logged_in else None
        entries.append(
            {"lab": lab_def, "summary": summary, "progress": lab_pages.summary_text(summary) if summary else ""}
        )
    return render(request, "console/labs.html", {"page": "labs", "entries": entries, "broken": engine.broken})


@require_GET
@auth.read_view
def lab_page(request, name: str):
    engine, lab_def = _lab_or_404(request, name)
    if name != lab_def.name:  # /labs/5/ and /labs/circuit-breaker/ find it; one address is shown
        return redirect(_lab_url(lab_def))
    return render(request, "console/lab.html", _lab_page_context(request, engine, lab_def))


def _lab_page_context(request, engine, lab_def, *, question_errors: dict | None = None) -> dict:
    logged_in = auth.current_staff(request) is not None
    progress = engine.progress(lab_def) if logged_in else {"steps": {}, "answers": {}}
    flash = request.session.pop(_FLASH, {}) if logged_in else {}
    flash = flash.get(lab_def.name, {}) if isinstance(flash, dict) else {}
    errors = question_errors or {}
    sections = []
    for section in lab_pages.sections_of(lab_def):
        if "step" in section:
            sections.append({"step": lab_pages.step_view(lab_def, progress, section["step"])})
        elif "questions" in section:
            sections.append(
                {
                    "questions": [
                        lab_pages.question_view(
                            lab_def, progress, q.key, fresh=flash.get(q.key), error=errors.get(q.key, "")
                        )
                        for q in lab_def.questions
                    ]
                }
            )
        else:
            sections.append(section)
    summary = engine.summary(lab_def) if logged_in else None
    known = {other.name for other in engine.labs()}
    return {
        "page": "labs",
        "lab": lab_def,
        "sections": sections,
        "summary": summary,
        "progress": lab_pages.summary_text(summary) if summary else "",
        "started_at": lab_pages.when(progress.get("started_at")),
        "finished_at": lab_pages.when(progress.get("finished_at")),
        "prerequisites": [{"name": p, "known": p in known} for p in lab_def.prerequisites],
    }


def _htmx(request) -> bool:
    return bool(request.headers.get("HX-Request"))


def _step_answer(request, engine, lab_def, step):
    """The step's widget again (htmx), or back to it on the lab page (a plain form)."""
    if _htmx(request):
        view = lab_pages.step_view(lab_def, engine.progress(lab_def), step.key)
        return render(request, "console/_lab_step.html", {"s": view})
    return redirect(_lab_url(lab_def, f"step-{step.key}"))


@require_POST
@auth.staff_view
def lab_check(request, name: str, key: str):
    engine, lab_def = _lab_or_404(request, name)
    step = _step_or_404(lab_def, key)
    with tracing.untraced():  # a check only reads; its reads are not the student's traffic
        engine.check(lab_def, step.key)
    return _step_answer(request, engine, lab_def, step)


@require_POST
@auth.staff_view
def lab_solve(request, name: str, key: str):
    engine, lab_def = _lab_or_404(request, name)
    step = _step_or_404(lab_def, key)
    # What a solve does is the student's traffic, as if sent with curl: each call starts its own
    # trace in the services (like labctl's), instead of hanging under a dashboard span nobody keeps.
    with suppress_instrumentation():
        engine.solve(lab_def, step.key)
    return _step_answer(request, engine, lab_def, step)


@require_POST
@auth.staff_view
def lab_answer(request, name: str, key: str):
    engine, lab_def = _lab_or_404(request, name)
    question = _question_or_404(lab_def, key)
    with tracing.untraced():
        answer = engine.answer(lab_def, question.key, request.POST.get("answer", "")[:200])
    # The engine records nothing for what is not an answer ("Answer with a number."): say so, as a 400.
    recorded = answer.correct or answer.expected is not None
    fresh = {"correct": answer.correct, "message": answer.message}
    if _htmx(request):
        view = lab_pages.question_view(
            lab_def,
            engine.progress(lab_def),
            question.key,
            fresh=fresh if recorded else None,
            error="" if recorded else answer.message,
        )
        return render(request, "console/_lab_question.html", {"qv": view}, status=200 if recorded else 400)
    if not recorded:
        context = _lab_page_context(request, engine, lab_def, question_errors={question.key: answer.message})
        return render(request, "console/lab.html", context, status=400)
    request.session[_FLASH] = {lab_def.name: {question.key: fresh}}
    return redirect(_lab_url(lab_def, f"question-{question.key}"))


@require_POST
@auth.staff_view
def lab_reset(request, name: str):
    engine, lab_def = _lab_or_404(request, name)
    with tracing.untraced():
        outcome = engine.reset(lab_def)
    forget_shared()  # the audit shown next is of the lab as the reset left it (a repair may have run)
    restored = (
        "Reset: cleared every fault, put every resilience switch and the saga mode back to their defaults, "
        "closed every breaker and refunded any charge an unsafe switch took twice"
        + (", then ran this lab's clean-up" if lab_def.cleanup else "")
        + ". "
    )
    if outcome.passed:
        messages.success(request, f"{restored}Steady state: PASS — {outcome.message}")
    else:
        messages.error(request, f"{restored}Steady state: FAIL — {outcome.message}")
    return redirect(_lab_url(lab_def))


@require_POST
@auth.staff_view
def lab_forget(request, name: str):
    engine, lab_def = _lab_or_404(request, name)
    engine.forget(lab_def)
    messages.success(
        request,
        f"Forgot your progress in lab {lab_def.number}: every step and answer starts over. "
        "The lab itself was not touched (use “Reset this lab” for that).",
    )
    return redirect(_lab_url(lab_def))


def _attachment(response, filename: str):
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@require_GET
@auth.staff_view
def lab_report_markdown(request, name: str):
    engine, lab_def = _lab_or_404(request, name)
    response = HttpResponse(engine.report_markdown(lab_def), content_type="text/markdown; charset=utf-8")
    return _attachment(response, f"lab-{lab_def.name}-report.md")


@require_GET
@auth.staff_view
def lab_report_json(request, name: str):
    engine, lab_def = _lab_or_404(request, name)
    response = JsonResponse(engine.report(lab_def), json_dumps_params={"indent": 2})
    return _attachment(response, f"lab-{lab_def.name}-report.json")


# --- login ----------------------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
def login(request):
    next_url = request.POST.get("next") or request.GET.get("next") or "/"
    if not url_has_allowed_host_and_scheme(next_url, allowed_hosts={request.get_host()}):
        next_url = "/"
    error = ""
    email = ""
    if request.method == "POST":
        email = request.POST.get("email", "").strip()
        password = request.POST.get("password", "")
        if not email or not password:
            error = "Enter the email and the password of a staff account."
        else:
            try:
                who = auth.staff_login(request, email=email, password=password)
            except auth.LoginRefused as refused:
                error = str(refused)
            else:
                messages.success(request, f"Logged in as {who['email']}.")
                return redirect(next_url)
    return render(
        request, "console/login.html", {"page": "login", "error": error, "email": email, "next": next_url}, status=200
    )


@require_POST
def logout(request):
    auth.staff_logout(request)
    messages.info(request, "Logged out.")
    return redirect("console:overview")
