"""Lab 12, trust between services: its steps, checks, solves and questions (the text is lab.md).

Every figure comes from the lab itself: the requests each service refused or
served, by route and status, from its own ``/metrics`` (``lab_http_requests_total``,
counted from the baseline the steady-state check records); user_service's
state from its ``/health/`` and ``/_lab/faults/`` (or, under supervisord, the
process fault labctl recorded); the orders placed while it was down from
order's reconciliation API (the lab admin's identity, which needs no
user_service); what order's keys dir holds from the directory itself.

Run as a script, this file is the thief's tool of step 3 (and the caller of
step 2): it signs whatever claims it is given with a private key file, as
anyone who could read that file could::

    .venv/bin/python labs/12-trust-between-services/steps.py sign var/keys/order/order.private.pem iss=order aud=payment

The services decide what such a token is worth; the tool knows nothing they
do not show.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from pathlib import Path

import jwt
import requests
from cryptography.hazmat.primitives import serialization

from chassis import keys
from labctl.labs import checks
from labctl.labs.context import LabContext, parse_time
from labctl.labs.model import CheckError, Question, SolveError, Step, failed, fixed, passed

REQUESTS = "lab_http_requests_total"
# The doors this lab knocks at: (service, method, route) as the services' /metrics name them.
INTERNAL_RESERVATIONS = ("inventory", "GET", "/internal/reservations/")
INTERNAL_CHARGES = ("payment", "GET", "/internal/charges/")
ORDERS = ("order", "GET", "/api/orders/")
LOGIN = ("user", "POST", "/api/auth/login/")
# The figures the steady state records as the baseline: name → (door, status).
COUNTERS = {
    "customer_refused": (INTERNAL_RESERVATIONS, "403"),
    "caller_refused": (INTERNAL_CHARGES, "403"),
    "charges_read": (INTERNAL_CHARGES, "200"),
    "forged_refused": (ORDERS, "401"),
    "logins": (LOGIN, "200"),
}
USER_OUTAGE = {"id": "lab12-user-down", "kind": "outage", "ttl_seconds": 600}
SERVICE_TOKEN_SECONDS = 60
ACCESS_TOKEN_SECONDS = 900


# --- the thief's tool: sign anything with a key file ------------------------------------------


def _claim_value(text: str):
    return {"true": True, "false": False}.get(text.lower(), text)


def sign(key_file: Path | str, claims: dict) -> str:
    """A JWT of ``claims`` signed with the Ed25519 private key in ``key_file`` (EdDSA, as the services sign).

    ``iss`` is required. A ``typ`` of ``service`` (the default) gets ``sub`` = ``iss``
    and lives 60 s; any other ``typ`` (``access``) lives 15 minutes, like user_service's.
    """
    if not claims.get("iss"):
        raise ValueError("say who the token claims to be from: iss=<name>")
    try:
        key = serialization.load_pem_private_key(Path(key_file).read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{key_file} is not a readable private key: {exc}") from exc
    now = int(time.time())
    kind = claims.get("typ", "service")
    lifetime = SERVICE_TOKEN_SECONDS if kind == "service" else ACCESS_TOKEN_SECONDS
    payload = {"typ": kind, "iat": now, "exp": now + lifetime, "jti": uuid.uuid4().hex, **claims}
    if kind == "service":
        payload.setdefault("sub", payload["iss"])
    return jwt.encode(payload, key, algorithm="EdDSA")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="steps.py", description="Sign a JWT with a private key file, as whoever holds the file could."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    signing = commands.add_parser("sign", help="print a token of the given claims, signed with KEY_FILE")
    signing.add_argument("key_file", help="a private key, e.g. var/keys/order/order.private.pem")
    signing.add_argument("claims", nargs="+", metavar="NAME=VALUE", help="iss=order aud=payment (typ=service)")
    args = parser.parse_args(argv)
    claims = {}
    for item in args.claims:
        name, sep, value = item.partition("=")
        if not sep or not name:
            parser.error(f"a claim is NAME=VALUE, not {item!r}")
        claims[name] = _claim_value(value)
    try:
        print(sign(args.key_file, claims))
    except ValueError as exc:
        parser.error(str(exc))
    return 0


# --- what the checks read -------------------------------------------------------------------


def _count(ctx: LabContext, door: tuple[str, str, str], status: str) -> int:
    service, method, route = door
    return int(ctx.metrics(service).total(REQUESTS, method=method, route=route, status=status))


def _baseline(ctx: LabContext, name: str) -> int:
    observed = ctx.observed("steady-state")
    if name not in observed:
        raise CheckError("check the steady state first (its figures are this lab's baseline)")
    return int(observed[name])


def _grown(ctx: LabContext, name: str) -> tuple[int, int]:
    """``(requests since the baseline, requests in all)`` for one of the lab's counters."""
    door, status = COUNTERS[name]
    now = _count(ctx, door, status)
    return now - _baseline(ctx, name), now


def _key_file(ctx: LabContext, service: str) -> Path:
    return ctx.api.paths.keys / service / f"{service}{keys.PRIVATE_SUFFIX}"


def _request(method: str, url: str, **kwargs) -> requests.Response:
    try:
        return requests.request(method, url, timeout=10, **kwargs)
    except requests.RequestException as exc:
        raise SolveError(f"{url} did not answer: {type(exc).__name__}") from exc


def _bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}", "Connection": "close"}


# --- 0. steady state, and the baseline of the counters ---------------------------------------


def check_steady(ctx: LabContext):
    outcome = checks.steady_state(ctx)
    if not outcome.passed:
        return outcome
    counts = {name: _count(ctx, door, status) for name, (door, status) in COUNTERS.items()}
    return passed(
        outcome.message + " The requests each service has refused or served so far are recorded as your baseline.",
        **outcome.observed,
        **counts,
    )


STEADY = Step(
    key="steady-state",
    title=checks.STEADY.title,
    check=check_steady,
    solve=checks.STEADY.solve,
    hints=checks.STEADY.hints,
    link=checks.STEADY.link,
    link_label=checks.STEADY.link_label,
    terminal=checks.STEADY.terminal,
)


# --- 1. a customer's token at an internal endpoint --------------------------------------------


def check_customer_internal(ctx: LabContext):
    refused, total = _grown(ctx, "customer_refused")
    if refused <= 0:
        return failed(
            "inventory has refused no request to GET /internal/reservations/ since the steady state: log in as a "
            "customer and send GET /internal/reservations/?order_id=1 to inventory with your token (or open it in "
            "the browser, logged in on the browsable API)."
        )
    return passed(
        f"inventory answered 403 to {refused} request(s) of a customer at GET /internal/reservations/: the token "
        "was valid (you were authenticated), but the endpoint serves only the service order_service.",
        customer_refused_now=total,
        customer_refusals=refused,
    )


def solve_customer_internal(ctx: LabContext) -> None:
    customer = ctx.lab_customer()
    response = customer.call("GET", "inventory", "/internal/reservations/", params={"order_id": "1"})
    if response.status_code != 403:
        raise SolveError(f"inventory answered {response.status_code}, not 403: {response.text[:200]}")


# --- 2. a service token from a caller that is not allowed --------------------------------------


def check_caller_not_allowed(ctx: LabContext):
    refused, total = _grown(ctx, "caller_refused")
    if refused <= 0:
        return failed(
            "payment has refused no request to GET /internal/charges/ since the steady state: sign a service "
            "token as inventory for payment (the command under this step) and send it to "
            "/internal/charges/?order_id=1."
        )
    return passed(
        f"payment answered 403 to {refused} request(s) at GET /internal/charges/: the service token verified "
        "(signed by its issuer's key), but its caller is not on the endpoint's list (only order may charge).",
        caller_refused_now=total,
        caller_refusals=refused,
    )


def solve_caller_not_allowed(ctx: LabContext) -> None:
    token = sign(_key_file(ctx, "inventory"), {"iss": "inventory", "aud": "payment"})
    response = _request(
        "GET", ctx.urls["payment"] + "/internal/charges/", params={"order_id": "1"}, headers=_bearer(token)
    )
    if response.status_code != 403:
        raise SolveError(f"payment answered {response.status_code}, not 403: {response.text[:200]}")


# --- 3. what a stolen key could and could not sign ---------------------------------------------


def _keys_dir_holdings(ctx: LabContext, service: str) -> tuple[list[str], list[str]]:
    """``(private key files, public key files)`` in ``service``'s keys dir (names only: nothing is opened)."""
    directory = ctx.api.paths.keys / service
    if not directory.is_dir():
        raise CheckError(
            f"{directory} is not on this machine: steps 2 and 3 use the keys of the lab `make up` runs "
            "(docker-compose keeps each in a volume of its own); run `labctl keys` if it is that lab"
        )
    names = sorted(p.name for p in directory.iterdir())
    return [n for n in names if n.endswith(keys.PRIVATE_SUFFIX)], [n for n in names if n.endswith(keys.PUBLIC_SUFFIX)]


def check_stolen_key(ctx: LabContext):
    private, public = _keys_dir_holdings(ctx, "order")
    foreign = keys.foreign_private_keys(ctx.api.paths.keys / "order", "order")
    if foreign:
        return failed(
            f"order's keys dir holds {', '.join(foreign)} besides its own key: a thief with it could sign as those "
            "too. Run `labctl keys` (it moves each private key into its own service's dir) and check again."
        )
    read, read_now = _grown(ctx, "charges_read")
    refused, refused_now = _grown(ctx, "forged_refused")
    missing = []
    if read <= 0:
        missing.append(
            "payment has served no GET /internal/charges/ since the steady state: sign a token as order for "
            "payment with order's key and send it there"
        )
    if refused <= 0:
        missing.append(
            "order has refused no forged token (401) at GET /api/orders/ since the steady state: sign a staff "
            "user token (iss=user) with order's key and send it to order's /api/orders/"
        )
    if missing:
        return failed("; ".join(missing) + ".")
    return passed(
        f"With order's key alone, the token signed as order was served by payment ({read} request(s) at its "
        f"internal charges endpoint), and the staff token claiming user_service as issuer was refused {refused} "
        f"time(s) with 401: it is verified with user's public key, which order's key does not match. Order's "
        f"keys dir holds {len(private)} private key ({', '.join(private)}) and {len(public)} public keys.",
        charges_read_now=read_now,
        stolen_key_accepted=read,
        forged_refused_now=refused_now,
        forged_refusals=refused,
        order_private_keys=len(private),
        order_public_keys=len(public),
    )


def solve_stolen_key(ctx: LabContext) -> None:
    stolen = _key_file(ctx, "order")
    as_order = sign(stolen, {"iss": "order", "aud": "payment"})
    accepted = _request(
        "GET", ctx.urls["payment"] + "/internal/charges/", params={"order_id": "1"}, headers=_bearer(as_order)
    )
    if accepted.status_code != 200:
        raise SolveError(f"payment answered {accepted.status_code} to order's token: {accepted.text[:200]}")
    as_staff = sign(
        stolen, {"iss": "user", "typ": "access", "sub": "1", "email": "thief@lab.local", "name": "", "staff": True}
    )
    refused = _request("GET", ctx.urls["order"] + "/api/orders/", headers=_bearer(as_staff))
    if refused.status_code != 401:
        raise SolveError(f"order answered {refused.status_code} to a forged staff token: {refused.text[:200]}")


# --- 4. user_service down; the logged-in customer keeps shopping --------------------------------


def _user_down(ctx: LabContext) -> tuple[bool, str, float | None]:
    """``(down, how, since)``: user_service's state, and since when it is down (None: unknown)."""
    status, _ = ctx.health("user")
    if status == 200:
        return False, "up", None
    if status is None:
        from labctl import process

        stops = [s for s in process.active(ctx.api.paths) if s.get("program") == "user"]
        return True, "stopped (no answer)", (float(stops[0]["since"]) if stops else None)
    faults = ctx.faults("user")
    since = min((float(f["created_at"]) for f in faults if f.get("created_at")), default=None)
    return True, f"answers {status} ({', '.join(f['kind'] for f in faults) or 'no fault'})", since


def _orders_since(ctx: LabContext, since: float) -> list[dict]:
    """Confirmed orders created since ``since``, read as the lab admin (no user_service needed)."""
    params = {"status": "CONFIRMED", "page_size": 50}
    body = ctx.admin("GET", "order", "/internal/reconciliation/orders/", params=params)
    return [o for o in body.get("results", []) if (parse_time(o.get("created_at")) or 0) >= since]


def check_user_down(ctx: LabContext):
    down, how, since = _user_down(ctx)
    if not down:
        return failed(
            "user_service is up: log in and save a card first if you have none, then on the Faults page add an "
            "outage to user_service (or, under supervisord: labctl fault add user process --action stop --ttl 300)."
        )
    since = since or ctx.passed_at("stolen-key") or ctx.started_at
    orders = _orders_since(ctx, since)
    if not orders:
        return failed(
            f"user_service is down ({how}). Now, with the token you got before, place an order at order_service "
            "(curl, or the browsable API you logged in to) and check again while user_service is still down."
        )
    order = orders[0]
    observed = {}
    if how.startswith("answers"):  # its /metrics still answers under an outage fault: a process stop has none
        observed["logins_at_outage"] = _count(ctx, LOGIN, "200")
        observed["logins_refused"] = _count(ctx, LOGIN, "503")
    return passed(
        f"user_service is down ({how}), and {len(orders)} order(s) were confirmed since it went down, the latest "
        f"#{order['id']} of customer {order['customer_id']} for {order['total_cents']} cents: order, inventory "
        "and payment verified the customer's token with user's public key, without calling user_service.",
        user_state=how,
        orders_while_down=len(orders),
        order_while_down=order["id"],
        **observed,
    )


def solve_user_down(ctx: LabContext) -> None:
    customer = ctx.lab_customer()  # logged in (and a card saved) while user_service is still up
    sku = ctx.in_stock_sku()
    ctx.add_fault("user", **USER_OUTAGE)
    login = _request("POST", ctx.urls["user"] + "/api/auth/login/", json={"email": customer.email, "password": "x"})
    if login.status_code != 503:
        raise SolveError(f"user_service answered a login with {login.status_code} while down, not 503")
    response = customer.order(sku)
    if response.status_code != 201 or response.json().get("status") != "CONFIRMED":
        raise SolveError(f"the order answered {response.status_code}: {response.text[:200]}")


# --- 5. user_service back -----------------------------------------------------------------------


def check_user_back(ctx: LabContext):
    down, how, _ = _user_down(ctx)
    if down:
        return failed(
            f"user_service is still down ({how}): clear its fault on the Faults page (or: labctl fault clear user)."
        )
    faults = ctx.faults("user")
    if faults:
        return failed(f"user_service answers, but still has {len(faults)} fault(s): clear them on the Faults page.")
    logins = _count(ctx, LOGIN, "200")
    before = ctx.observed("user-down").get("logins_at_outage", _baseline(ctx, "logins"))
    if logins <= before:
        return failed("user_service is back, but nobody has logged in since it went down: log in again.")
    return passed(
        f"user_service is back and answered {logins - before} login(s) since the outage; the tokens issued before "
        "it were never affected.",
        logins_after=logins - before,
    )


def solve_user_back(ctx: LabContext) -> None:
    status, _ = ctx.health("user")
    if status is None:
        from labctl import process

        try:
            process.clear(ctx.api.paths, "user")
        except process.ProcessFaultError as exc:
            raise SolveError(f"user_service does not answer and could not be started: {exc}") from exc
        ctx.sleep(5)
    ctx.clear_faults("user")
    ctx.lab_customer()  # logs in again


STEPS = [
    Step(
        "customer-internal",
        "A customer's token at an internal endpoint",
        check_customer_internal,
        solve_customer_internal,
        hints=(
            "Log in on the browsable API (top right of http://127.0.0.1:8003/api/products/), then open "
            "http://127.0.0.1:8003/internal/reservations/?order_id=1.",
            "Or with curl: the login's `access` token in $TOKEN, then the GET with `Authorization: Bearer $TOKEN`.",
        ),
        link="/traces/",
        link_label="Traces: your refused request",
        terminal="TOKEN=$(curl -s -X POST http://127.0.0.1:8001/api/auth/login/ -H 'Content-Type: application/json' "
        '-d \'{"email": "alice@lab.local", "password": "alice-lab-2024"}\' | '
        ".venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)[\"access\"])')\n"
        "curl -i 'http://127.0.0.1:8003/internal/reservations/?order_id=1' -H \"Authorization: Bearer $TOKEN\"",
    ),
    Step(
        "caller-not-allowed",
        "A service token from a caller that is not allowed",
        check_caller_not_allowed,
        solve_caller_not_allowed,
        hints=(
            "Sign as inventory with inventory's own key, for payment (aud=payment): the command under this step.",
            "Send it to payment's GET /internal/charges/?order_id=1: only order may call it.",
        ),
        link="/traces/",
        link_label="Traces: payment's 403",
        terminal="SVC=$(.venv/bin/python labs/12-trust-between-services/steps.py sign "
        "var/keys/inventory/inventory.private.pem iss=inventory aud=payment)\n"
        "curl -i 'http://127.0.0.1:8004/internal/charges/?order_id=1' -H \"Authorization: Bearer $SVC\"",
    ),
    Step(
        "stolen-key",
        "What a stolen key could and could not sign",
        check_stolen_key,
        solve_stolen_key,
        hints=(
            "Sign as order with var/keys/order/order.private.pem, for payment: payment serves it.",
            "Sign a staff user token (iss=user typ=access sub=1 staff=true) with the same key and send it to "
            "order's /api/orders/: 401.",
        ),
        link="/traces/",
        link_label="Traces: accepted, then refused",
        terminal="KEY=var/keys/order/order.private.pem\n"
        "SIGN='.venv/bin/python labs/12-trust-between-services/steps.py sign'\n"
        "curl -i 'http://127.0.0.1:8004/internal/charges/?order_id=1' "
        '-H "Authorization: Bearer $($SIGN $KEY iss=order aud=payment)"\n'
        "curl -i http://127.0.0.1:8002/api/orders/ "
        '-H "Authorization: Bearer $($SIGN $KEY iss=user typ=access sub=1 email=thief@lab.local staff=true)"',
    ),
    Step(
        "user-down",
        "user_service down: the logged-in customer keeps shopping",
        check_user_down,
        solve_user_down,
        hints=(
            "Before the outage: a fresh token in $TOKEN, and a saved card (POST /api/payment-methods/ on payment).",
            "Faults page → user_service → kind outage, TTL 300 → Add. Then order with your token.",
            "Press Check while user_service is still down.",
        ),
        link="/faults/#fault-form-user",
        link_label="Faults: an outage on user_service",
        terminal="labctl fault add user outage --ttl 300\n"
        'curl -i -X POST http://127.0.0.1:8002/api/orders/ -H "Authorization: Bearer $TOKEN" '
        "-H 'Content-Type: application/json' -H \"Idempotency-Key: lab12-$RANDOM\" "
        '-d \'{"lines": [{"sku": "KB-001", "quantity": 1}], "payment_method": "pm_…your card token…"}\'',
    ),
    Step(
        "user-back",
        "user_service back",
        check_user_back,
        solve_user_back,
        hints=("Faults page → clear user_service's outage; then log in again (curl, or the browsable API).",),
        link="/faults/",
        link_label="Faults: clear user_service's outage",
        terminal="labctl fault clear user\n"
        "curl -s -X POST http://127.0.0.1:8001/api/auth/login/ -H 'Content-Type: application/json' "
        '-d \'{"email": "alice@lab.local", "password": "alice-lab-2024"}\'',
    ),
]


# --- questions --------------------------------------------------------------------------------


QUESTIONS = [
    Question(
        "orders-while-down",
        "How many orders were confirmed while user_service was down (step 4's check)?",
        lambda ctx, progress: ctx.figure("user-down", "orders_while_down"),
        explanation="An order needs a valid customer token, not user_service: every service verifies the token's "
        "signature with user's public key, and reads the revocations from the shared store, not from "
        "user_service. Only logging in, registering and refreshing needed it.",
    ),
    Question(
        "private-keys",
        "How many private keys does order_service's keys dir hold (step 3's check)?",
        lambda ctx, progress: ctx.figure("stolen-key", "order_private_keys"),
        explanation="Its own only: order.private.pem, with every identity's public key beside it. A thief with "
        "the dir can sign as order, and as no one else; chassis' load_private_key refuses to start from a dir "
        "that holds another issuer's private key.",
    ),
    Question(
        "401-or-403",
        "Step 2's token was refused with 403, step 3's forged staff token with 401. What does the 401 say?",
        fixed("the token itself was not believed"),
        choices=(
            "the token itself was not believed",
            "the caller is known but not allowed there",
            "the endpoint does not exist",
        ),
        explanation="401: authentication failed — the signature does not verify with the public key of the "
        "issuer the token names. 403: authentication passed (a genuine token of inventory), authorization "
        "refused — inventory is not on the endpoint's list of callers.",
    ),
    Question(
        "stolen-key-worth",
        "A thief copies order_service's keys dir. What can they sign that the services will accept?",
        fixed("service tokens as order"),
        choices=(
            "service tokens as order",
            "tokens for any customer, staff included",
            "service tokens as payment",
        ),
        explanation="Exactly what order may do: reserve stock, charge cards — bad enough, and the reason to "
        "rotate that key. But not a customer's token (only user's key signs those) nor another service's. "
        "Before each service had its own dir, one stolen dir held every private key: the whole lab.",
    ),
]


if __name__ == "__main__":
    sys.exit(main())
