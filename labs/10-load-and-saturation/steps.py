"""Lab 10, load and saturation: its steps, checks, solves and questions (the text is lab.md).

Every figure comes from the lab itself: each step load's own ``summary.json``
(``var/loadtests/<run>/``, as the Load page shows it) with one entry per step —
users, requests/s, mean and p95 response time, and what the machine's cores
did meanwhile (all of them, the load generator's, the database's) — and the
number of gunicorn worker processes inventory really runs (its master's
children, counted from ``/proc``), never a setting.

The users are anonymous catalog visitors (``STEP_USER=browse``): one request
per task, then a fixed think time, so that Little's law can be checked in
requests: users = throughput × (mean response time + think time).
"""

from __future__ import annotations

from labctl.labs.context import LabContext
from labctl.labs.model import CheckError, Question, SolveError, Step, failed, passed

SCENARIO = "step_load"
SERVICE = "inventory"  # the browse users call inventory alone
# What the solves run and the page is told: 4 steps of 20 users, 8 s each, 0.2 s of think time: on 2 cores
# the lab saturates around the second or third step (about 200 catalog requests/s), well before the last.
LOAD_STEPS, STEP_SECONDS, STEP_USERS, THINK = 4, 8, 20, "0.2"
USERS = LOAD_STEPS * STEP_USERS
DURATION = f"{LOAD_STEPS * STEP_SECONDS}s"
ENV = {"STEPS": str(LOAD_STEPS), "STEP_SECONDS": str(STEP_SECONDS), "STEP_USER": "browse", "THINK_TIME": THINK}
# loadtests/browse.py's wait_time when no THINK_TIME is given: between 0.5 and 2 s.
DEFAULT_THINK = "0.5-2"
# The knee: the first step after which requests/s grew by less than this share of the users' growth (users
# +50 %, req/s under +25 %): each added user bought less than half a user's worth of throughput...
KNEE_RPS_GROWTH = 0.5
# ... while p95 grew by more than this.
KNEE_P95_GROWTH = 0.50
# Little's law, users = X × (R + Z), must hold at the knee within this share.
LITTLE_TOLERANCE = 0.25
# Scaled out, the top step's throughput counts as "helped" when it rose by at least this share.
HELPED = 0.15
LINK = (
    f"/load/?scenario={SCENARIO}&users={USERS}&spawn_rate={STEP_USERS}&duration={DURATION}"
    f"&steps={LOAD_STEPS}&step_seconds={STEP_SECONDS}&step_user=browse&think_time={THINK}"
)
TERMINAL = (
    f"labctl load --scenario {SCENARIO} --users {USERS} --spawn-rate {STEP_USERS} --duration {DURATION} "
    f"--env STEPS={LOAD_STEPS} --env STEP_SECONDS={STEP_SECONDS} --env STEP_USER=browse --env THINK_TIME={THINK}"
)
HOW = (
    f"on the Load page choose step_load, Users {USERS}, Spawn rate {STEP_USERS}, Duration {DURATION}, "
    f"Steps {LOAD_STEPS}, Seconds per step {STEP_SECONDS}, Step users browse, Think time {THINK}"
)


# --- what the checks read -------------------------------------------------------------------


def think_seconds(env: dict) -> float:
    """The mean think time of a browse user: THINK_TIME's ``"a"`` or ``"a-b"`` (uniform: its middle)."""
    low, _, high = ((env or {}).get("THINK_TIME") or DEFAULT_THINK).strip().partition("-")
    return (float(low) + float(high)) / 2 if high else float(low)


def _env(run: dict) -> dict:
    return (run.get("parameters") or {}).get("env") or {}


def _steps(run: dict) -> list[dict]:
    return [s for s in run["summary"].get("steps") or [] if s.get("rps") and s.get("p95_ms") is not None]


def _no_run_yet(ctx: LabContext, since: float, what: str) -> str:
    live = ctx.running_run(SCENARIO, since)
    if live:
        return f"Run {live['run_id']} is still {live['state']}: its page says Finished at its end; check again then."
    return what


def _usable(run: dict) -> str:
    """Why the run cannot be read as this lab's step load ("" when it can)."""
    env = _env(run)
    if env.get("STEP_USER") != "browse":
        return (
            f"Run {run['run_id']} ran {env.get('STEP_USER') or 'mixed'} users: choose Step users browse "
            "(one request per task, so that Little's law can be counted in requests)."
        )
    steps = _steps(run)
    if len(steps) < 3:
        return f"Run {run['run_id']} has {len(steps)} step(s) with figures: run at least 3 steps of 6 s or more."
    return ""


def knee(steps: list[dict]) -> int | None:
    """The index of the first step after which requests/s grew by less than KNEE_RPS_GROWTH of the users'
    growth (in %) while p95 grew more
    than KNEE_P95_GROWTH (the last step whose users still bought throughput); None when throughput kept
    growing with the users."""
    for i in range(len(steps) - 1):
        here, after = steps[i], steps[i + 1]
        users_growth = after["users"] / here["users"] - 1 if here["users"] else 0
        if after["rps"] < here["rps"] * (1 + KNEE_RPS_GROWTH * users_growth) and after["p95_ms"] > here["p95_ms"] * (
            1 + KNEE_P95_GROWTH
        ):
            return i
    return None


def little(step: dict, think: float) -> float:
    """Little's law for a closed loop of users: N = X × (R + Z)."""
    return step["rps"] * ((step.get("mean_ms") or 0) / 1000 + think)


def _cpu(step: dict) -> dict:
    return step.get("cpu") or {}


def _peak(steps: list[dict]) -> dict:
    """The step that served the most requests per second: the run's capacity."""
    return max(steps, key=lambda step: step["rps"])


def _series(steps: list[dict], key: str, digits: int = 0) -> str:
    return " / ".join(f"{s.get(key) or 0:.{digits}f}" for s in steps)


def _workers(ctx: LabContext) -> int:
    count = ctx.service_workers(SERVICE)
    if count is None:
        raise CheckError(f"could not tell how many worker processes {SERVICE} runs")
    return count


def _run(ctx: LabContext, step_users: int = STEP_USERS) -> None:
    """One step load, as the Load page starts it; another run still going (one at a time) is waited for."""
    ctx.run_load(
        SCENARIO,
        users=LOAD_STEPS * step_users,
        spawn_rate=step_users,
        duration=DURATION,
        env=ENV,
        wait_for_others=300,
    )


# --- 1. a step load: the knee and Little's law -------------------------------------------------


def check_step_load(ctx: LabContext):
    run = ctx.finished_run(SCENARIO, ctx.started_at)
    if run is None:
        return failed(
            _no_run_yet(ctx, ctx.started_at, f"No step load of yours has finished since you started this lab: {HOW}.")
        )
    problem = _usable(run)
    if problem:
        return failed(problem)
    steps = _steps(run)
    found = knee(steps)
    users, rps, p95 = _series(steps, "users"), _series(steps, "rps", 1), _series(steps, "p95_ms")
    if found is None:
        return failed(
            f"Run {run['run_id']}: users {users}, req/s {rps}, p95 {p95} ms — throughput still grew with the users "
            f"(by half as much as the users or more, from step to step, or p95 did not climb {KNEE_P95_GROWTH:.0%}): "
            "no knee yet. Run more users per step, or more steps."
        )
    at, top = steps[found], steps[-1]
    think = think_seconds(_env(run))
    predicted = little(at, think)
    error = predicted / at["users"] - 1
    if abs(error) > LITTLE_TOLERANCE:
        return failed(
            f"Run {run['run_id']}: at the knee ({at['users']} users) {at['rps']:.1f} req/s × ({at['mean_ms']:.0f} ms "
            f"+ {think:g} s) = {predicted:.1f} users, {error:+.0%} off the {at['users']} that ran. Was the machine "
            "busy with something else (the load generator starved of CPU)? Run it again."
        )
    workers = _workers(ctx)
    used = _cpu(top)
    return passed(
        f"Run {run['run_id']}: users {users}, req/s {rps}, p95 {p95} ms. The knee is at {at['users']} users "
        f"({at['rps']:.1f} req/s, p95 {at['p95_ms']:.0f} ms): after it throughput grew by less than half as much "
        f"as the users while p95 grew more than {KNEE_P95_GROWTH:.0%}. Little's law there: "
        f"{at['rps']:.1f} req/s × ({at['mean_ms']:.0f} ms + {think:g} s think) = {predicted:.1f} users, "
        f"{error:+.0%} off the {at['users']} that ran. At the top step {used.get('busy_cores', '?')} of "
        f"{used.get('cores', '?')} cores were busy (the load generator {used.get('load_generator_cores', '?')}, "
        f"the database {used.get('database_cores', '?')}); {SERVICE} runs {workers} worker process(es).",
        run=run["run_id"],
        step_users=users,
        step_rps=rps,
        step_p95_ms=p95,
        knee_users=at["users"],
        knee_rps=round(at["rps"], 1),
        knee_p95_ms=round(at["p95_ms"]),
        knee_mean_ms=round(at["mean_ms"], 1),
        think_s=think,
        little_users=round(predicted, 1),
        little_error_pct=round(100 * error, 1),
        top_users=top["users"],
        top_rps=round(top["rps"], 1),
        top_p95_ms=round(top["p95_ms"]),
        top_busy_cores=_cpu(top).get("busy_cores"),
        top_load_generator_cores=_cpu(top).get("load_generator_cores"),
        top_database_cores=_cpu(top).get("database_cores"),
        top_cpu_ms_per_request=_cpu(top).get("cpu_ms_per_request"),
        peak_users=_peak(steps)["users"],
        peak_rps=round(_peak(steps)["rps"], 1),
        peak_cpu_ms_per_request=_cpu(_peak(steps)).get("cpu_ms_per_request"),
        cores=_cpu(top).get("cores") or run["summary"].get("machine", {}).get("cpus"),
        workers=workers,
    )


def solve_step_load(ctx: LabContext) -> None:
    # A noisy machine can hide the knee, and a quiet one with cores to spare may not reach it with 20 users a
    # step: as the check's message says, run again with more users per step (the same ones in step 3).
    for step_users in (STEP_USERS, STEP_USERS, 2 * STEP_USERS):
        ctx.state["step_users"] = step_users
        _run(ctx, step_users)
        if check_step_load(ctx).passed:
            return


# --- 2. scale inventory out ---------------------------------------------------------------------


def check_scale_out(ctx: LabContext):
    before = ctx.observed("step-load").get("workers")
    if before is None:
        return failed("Do step 1 first: its check notes how many worker processes inventory ran.")
    now = _workers(ctx)
    if now <= before:
        return failed(
            f"{SERVICE} runs {now} worker process(es), as many as in step 1 ({before}): "
            f"`labctl scale {SERVICE}={2 * before}` restarts it with {2 * before}."
        )
    return passed(
        f"{SERVICE} now runs {now} worker processes (step 1: {before}): {now}× the processes, each with its own "
        "threads and its own Python interpreter, on the same cores.",
        workers_before=before,
        workers_after=now,
    )


def solve_scale_out(ctx: LabContext) -> None:
    before = ctx.observed("step-load").get("workers")
    if before is None:
        raise SolveError("step 1 has not recorded inventory's worker count yet")
    ctx.scale(SERVICE, 2 * before)


# --- 3. the same step load, scaled ------------------------------------------------------------


def check_scaled_run(ctx: LabContext):
    first = ctx.observed("step-load")
    scaled = ctx.observed("scale-out").get("workers_after")
    if not first or scaled is None:
        return failed("Do steps 1 and 2 first.")
    since = ctx.since_passed("scale-out")
    run = ctx.finished_run(SCENARIO, since)
    if run is None:
        return failed(_no_run_yet(ctx, since, f"No step load has finished since you scaled {SERVICE}: {HOW}."))
    problem = _usable(run)
    if problem:
        return failed(problem)
    now = _workers(ctx)
    if now < scaled:
        return failed(
            f"{SERVICE} runs {now} worker process(es) again, not the {scaled} of step 2: scale it out and run again."
        )
    steps = _steps(run)
    if [s["users"] for s in steps] != [int(u) for u in str(first["step_users"]).split(" / ")]:
        return failed(
            f"Run {run['run_id']} stepped through {_series(steps, 'users')} users, not step 1's "
            f"{first['step_users']}: run the same step load, so that the two compare."
        )
    top, peak = steps[-1], _peak(steps)
    ratio = peak["rps"] / first["peak_rps"] if first.get("peak_rps") else 0
    before_cpu, after_cpu = first.get("peak_cpu_ms_per_request"), _cpu(peak).get("cpu_ms_per_request")
    cpu_ratio = after_cpu / before_cpu if before_cpu and after_cpu else 0
    cores, busy = first.get("cores"), first.get("top_busy_cores")
    helped = ratio >= 1 + HELPED
    verdict = (
        f"more processes raised the peak by {ratio - 1:.0%}: with {busy} of {cores} cores busy in the first run, "
        "there was idle CPU for a second process to use"
        if helped
        else f"the peak moved by {ratio - 1:+.0%}: {busy} of {cores} cores were already busy in the first run, and "
        "more processes only take turns on the same cores"
    )
    return passed(
        f"Run {run['run_id']} with {now} worker processes: req/s {_series(steps, 'rps', 1)}, p95 "
        f"{_series(steps, 'p95_ms')} ms. Peak throughput {peak['rps']:.1f} req/s (at {peak['users']} users) vs "
        f"{first['peak_rps']} before: ×{ratio:.2f}; {after_cpu or '?'} busy core-ms per request there vs "
        f"{before_cpu or '?'}. At the top step ({top['users']} users) p95 {top['p95_ms']:.0f} ms vs "
        f"{first['top_p95_ms']}, {_cpu(top).get('busy_cores', '?')} of {_cpu(top).get('cores', '?')} cores busy vs "
        f"{busy}. So {verdict}.",
        scaled_run=run["run_id"],
        scaled_workers=now,
        scaled_step_rps=_series(steps, "rps", 1),
        scaled_step_p95_ms=_series(steps, "p95_ms"),
        scaled_peak_users=peak["users"],
        scaled_peak_rps=round(peak["rps"], 1),
        scaled_peak_cpu_ms_per_request=after_cpu,
        scaled_top_p95_ms=round(top["p95_ms"]),
        scaled_top_busy_cores=_cpu(top).get("busy_cores"),
        scaled_top_load_generator_cores=_cpu(top).get("load_generator_cores"),
        scaled_top_database_cores=_cpu(top).get("database_cores"),
        throughput_ratio=round(ratio, 2),
        cpu_per_request_ratio=round(cpu_ratio, 2),
        helped=helped,
    )


def solve_scaled_run(ctx: LabContext) -> None:
    _run(ctx, ctx.state.get("step_users", STEP_USERS))  # the same step load as step 1's


STEPS = [
    Step(
        "step-load",
        "A step load: find the knee, check Little's law",
        check_step_load,
        solve_step_load,
        hints=(
            f"Load page → step_load, Users {USERS}, Spawn rate {STEP_USERS}, Duration {DURATION}, Steps {LOAD_STEPS}, "
            f"Seconds per step {STEP_SECONDS}, Step users browse, Think time {THINK} → Start.",
            "When it has finished, read its Steps table: where does req/s stop growing while p95 climbs?",
            "Little's law: users = req/s × (mean response time + think time), in seconds.",
        ),
        link=LINK,
        link_label="Load: the step load, filled in",
        terminal=TERMINAL,
    ),
    Step(
        "scale-out",
        f"Scale {SERVICE} out",
        check_scale_out,
        solve_scale_out,
        hints=(
            f"Load page → Scale → {SERVICE}, Workers 2 (twice its default of 1) → Scale; supervisord restarts it.",
            f"Or in a terminal: labctl scale {SERVICE}=2; labctl scale alone shows what each service runs.",
        ),
        link="/load/#scale",
        link_label=f"Load: scale {SERVICE}",
        terminal=f"labctl scale {SERVICE}=2 && labctl scale",
    ),
    Step(
        "scaled-run",
        "The same step load, scaled: did it help?",
        check_scaled_run,
        solve_scaled_run,
        hints=(
            "Run exactly the same step load again from the Load page.",
            "Compare the top step: req/s, p95, cores busy, core-ms per request.",
        ),
        link=LINK,
        link_label="Load: the same step load again",
        terminal=TERMINAL,
    ),
]


# --- clean-up: inventory back to its default -----------------------------------------------------


def cleanup(ctx: LabContext) -> None:
    """Scale inventory back to its default worker count (the reset has cleared faults and switches)."""
    ctx.scale(SERVICE, None)


CLEANUP = cleanup


# --- questions --------------------------------------------------------------------------------


def _why(ctx: LabContext, progress: dict) -> str:
    return CHOICES[0] if ctx.figure("scaled-run", "helped") else CHOICES[1]


CHOICES = (
    "the first run left cores idle, and more worker processes put them to work",
    "the cores were already busy: more processes share the same cores with the load generator and the database",
    "inventory had too few threads: more of them are always faster",
)

QUESTIONS = [
    Question(
        "knee-users",
        "In your first step load (step 1), at how many users is the knee: the last step before throughput "
        "stopped growing while p95 climbed?",
        lambda ctx, progress: ctx.figure("step-load", "knee_users"),
        explanation="Before the knee each new user adds throughput: the requests find a free core and wait for "
        "nothing. After it the users only add waiting: throughput is at the machine's capacity, and every extra "
        "user makes each request wait longer in a queue (a thread's, the GIL's, a core's).",
    ),
    Question(
        "knee-rps",
        "How many requests per second did that knee step serve?",
        lambda ctx, progress: ctx.figure("step-load", "knee_rps"),
        relative=0.05,
        tolerance=1,
        unit="req/s",
        explanation="The throughput at the knee is this lab's capacity for these requests on this machine: the "
        "figure to plan with. Beyond it, more users get you latency, not throughput.",
    ),
    Question(
        "little-users",
        "Little's law at the knee: its req/s × (its mean response time + the think time), in seconds. How many "
        "users does that give?",
        lambda ctx, progress: ctx.figure("step-load", "little_users"),
        relative=0.05,
        tolerance=0.5,
        unit="users",
        explanation="Each user is always either waiting for an answer (R) or thinking (Z): N = X × (R + Z). "
        "With N fixed by the load generator, once X cannot grow any more, R must: that is why latency climbs "
        "after the knee, by exactly as much as the extra users need.",
    ),
    Question(
        "top-busy-cores",
        "In your first run's top step, how many of the machine's cores were busy (all processes together)?",
        lambda ctx, progress: ctx.figure("step-load", "top_busy_cores"),
        relative=0.1,
        tolerance=0.1,
        unit="cores",
        explanation="Busy cores near the machine's count mean the CPU is the bound. Part of it is the load "
        "generator itself and the database, which share the machine with the services.",
    ),
    Question(
        "throughput-ratio",
        "Scaled out (step 3), the peak throughput (the most req/s of any step) divided by the first run's: what ratio?",
        lambda ctx, progress: ctx.figure("scaled-run", "throughput_ratio"),
        relative=0.05,
        tolerance=0.02,
        explanation="Near 1: more processes did not add capacity. Well above 1: the first run was bound by "
        "something one process has (its threads, its interpreter lock) and not by the machine's cores.",
    ),
    Question(
        "why-scaling",
        "From your figures (cores busy, core-ms per request, throughput), why did scaling out do what it did?",
        _why,
        choices=CHOICES,
        explanation="Scaling out adds processes, not cores. It pays while a process is what bounds throughput "
        "(one Python interpreter runs one thread at a time) and there are idle cores for a second one. When the "
        "cores are already busy — with the load generator and the database on the same machine — more processes "
        "only take turns on them, and each request costs as much CPU as before, or more.",
    ),
]
