"""Every service answers as its OpenAPI schema says: schemathesis against the four running services.

For each service the test loads ``/api/schema/`` from the running process and
sends, for every operation, schemathesis' examples: random valid and invalid
ones (derandomized: the same examples every run, a fixed number of them) and
its coverage cases (each constraint at its bounds and just past them). Each
answer is checked: no server error, a documented status code, a documented
content type, a body that matches the documented schema, and invalid input
refused with a 4xx.

Each request carries the token its operation is meant for: a customer's for
the customer operations, the staff account's for the staff ones, a service
token signed with the calling service's own key (as a peer mints it) for the
internal endpoints. The random examples name things the test made (a
product, an address, an order, a card, a charge, a reservation) in their
paths, so that they reach the rules behind a 404. Faults and switches
(``/_lab/`` writes) are left out: they change how the lab under test fails.
"""

from __future__ import annotations

import collections
import itertools
import time
import uuid
from dataclasses import dataclass, field

import jwt
import pytest
import requests
import schemathesis
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.config import SchemathesisConfig
from schemathesis.core.failures import FailureGroup

# The coverage phase's generator (not in schemathesis' public API, hence the exact pin).
from schemathesis.generation.drivers import CoverageGenerator
from schemathesis.generation.feedback import FeedbackSources
from schemathesis.generation.overrides import Override

from .harness import ROOT

SERVICES = ("user", "order", "inventory", "payment")
EXAMPLES = 25  # random examples per operation and generation mode
COVERAGE_CASES = 150  # at most, per operation
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
CONFIG = SchemathesisConfig.from_dict(
    {
        "generation": {
            # The test sends each operation's token itself; schemathesis should not take it for a parameter.
            "with-security-parameters": False,
            # The services ignore query parameters they do not know, as HTTP services commonly do
            # (and as DRF's own ``format`` is one): no schema can say so, so none are made up.
            "allow-extra-parameters": False,
            # DRF's CharField refuses a NUL in any string (a 400); the schemas do not repeat it on each one.
            "allow-x00": False,
        },
        "checks": {
            # gunicorn's 414 to a request line over 4094 bytes is a refusal too (the schemas list it).
            "negative_data_rejection": {"expected-statuses": [400, 401, 403, 404, 405, 406, 409, 414, 415, 422, 429]},
        },
    }
)
# Operations a staff token is for (the rest of /api/ is a customer's).
STAFF = {
    ("GET", "/api/users/"),
    ("GET", "/api/ledger/"),
    ("POST", "/api/products/"),
    ("PATCH", "/api/products/{sku}/"),
    ("POST", "/api/products/{sku}/restock/"),
    ("GET", "/api/products/{sku}/movements/"),
}
# (method, path) -> {check: why this answer is right although the check says otherwise}.
# Each entry is one operation and one check, for a business rule the schema cannot express.
EXEMPT: dict[tuple[str, str], dict] = {}


def service_token(caller: str, audience: str) -> str:
    """A service token as ``caller`` mints it for ``audience``, with the caller's own key from var/keys."""
    key = load_pem_private_key((ROOT / "var" / "keys" / caller / f"{caller}.private.pem").read_bytes(), None)
    now = int(time.time())
    claims = {"typ": "service", "sub": caller, "aud": audience, "iss": caller, "iat": now, "exp": now + 60}
    return jwt.encode({**claims, "jti": uuid.uuid4().hex}, key, algorithm="EdDSA")


def caller_of(path: str) -> str:
    """Which service calls an internal endpoint: the dashboard reconciles, the order service does the rest."""
    return "dashboard" if path.startswith("/internal/reconciliation/") else "order"


class WritePace:
    """Keep each user's writes under the services' per-user write limit (WRITE_RATE_PER_USER, 20/s).

    A 429 is documented and right, but every example answered 429 is one that tested nothing else.
    """

    def __init__(self, per_second: int = 15):
        self.per_second = per_second
        self.sent: dict[str, collections.deque] = {}

    def wait(self, token: str) -> None:
        sent = self.sent.setdefault(token, collections.deque(maxlen=self.per_second))
        if len(sent) == self.per_second:
            time.sleep(max(0.0, sent[0] + 1.0 - time.monotonic()))
        sent.append(time.monotonic())


@dataclass
class Caller:
    """Sends a service's cases, each with the token its operation is for, and checks the answers."""

    service: str
    customer_token: str
    staff_token: str
    pace: WritePace = field(default_factory=WritePace)

    def token_for(self, method: str, path: str) -> str:
        if path.startswith("/internal/"):
            return service_token(caller_of(path), self.service)
        if path.startswith("/_lab/") or (method, path) in STAFF:
            return self.staff_token
        return self.customer_token

    def send(self, case) -> None:
        """Send ``case`` and run the checks its operation is not exempt from; raise FailureGroup on a failure."""
        key = (case.method.upper(), case.operation.path)
        token = self.token_for(*key)
        if key[0] != "GET" and not key[1].startswith("/internal/"):
            self.pace.wait(token)
        checks = [check for check in CHECKS if check not in EXEMPT.get(key, {})]
        case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, checks=checks, timeout=30)


def path_values(operation, known: dict[str, str]) -> dict[str, str]:
    """The path parameters of ``operation`` that name a thing the test made, so that requests reach it."""
    return {name: value for name, value in known.items() if f"{{{name}}}" in operation.path}


def run_examples(operation, *, mode: GenerationMode, caller: Caller, known: dict[str, str]) -> tuple[int, list[str]]:
    """Send ``operation`` ``mode``'s examples: how many were sent, and the first failure (its checks' findings)."""
    key = (operation.method.upper(), operation.path)
    found: list[str] = []
    sent = 0

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,  # the same examples on every run
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: each step is an HTTP request
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path_values(operation, known) or None))
    def run(case):
        nonlocal sent
        sent += 1
        try:
            caller.send(case)
        except FailureGroup as failure:  # what each check found, one exception each
            found.append(f"{key[0]} {key[1]} ({mode.value}): {failure}\n    {case.as_curl_command()}")
            raise

    try:
        run()
    except FailureGroup:
        pass  # recorded in ``found``: the first failure is enough, the next run sends the same examples
    except Unsatisfiable:
        assert mode is GenerationMode.NEGATIVE, f"{key}: no valid example could be made"
        # Nothing in this operation can be invalid (no parameters, no body).
    return sent, found[:1]


def run_coverage(operation, *, caller: Caller) -> tuple[int, list[str]]:
    """Send schemathesis' coverage cases of ``operation``: each constraint at its bounds and just past them.

    They are deterministic by construction (no randomness); at most COVERAGE_CASES are sent.
    """
    key = (operation.method.upper(), operation.path)
    generator = CoverageGenerator(
        operation=operation,
        generation_modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
        generation_config=operation.schema.config.generation,
        auth_storage=None,
        # Path parameters as generated, not the things the test made: an override would turn
        # each invalid one back into a valid one (the random examples reach those things).
        override=Override(),
        feedback=FeedbackSources(),
    )
    found: list[str] = []
    seen: list[list[str]] = []
    sent = 0
    for case in itertools.islice(generator, COVERAGE_CASES):
        sent += 1
        try:
            caller.send(case)
        except FailureGroup as failure:
            kinds = sorted(type(exc).__name__ for exc in failure.exceptions)
            if kinds not in seen:  # one report per kind of failure is enough
                seen.append(kinds)
                found.append(f"{key[0]} {key[1]} (coverage): {failure}")
    return sent, found


def things_to_name(lab, customer, product) -> dict[str, str]:
    """A product, an address, a card, a draft order, a confirmed one's charge and reservation: the customer's.

    Random path parameters name nothing (404); these let the requests reach the business rules behind.
    """
    sku = product(stock=1000)
    address = customer.post(
        "user",
        "/api/users/me/addresses/",
        json={"label": "Home", "line1": "1 Main St", "city": "Lyon", "postal_code": "69001", "country": "FR"},
    )
    assert address.status_code == 201, address.text
    confirmed = customer.order([{"sku": sku, "quantity": 1}], customer.add_card())
    assert confirmed.status_code == 201 and confirmed.json()["status"] == "CONFIRMED", confirmed.text
    draft = customer.order([{"sku": sku, "quantity": 1}], customer.add_card(), checkout=False)
    assert draft.status_code == 201, draft.text
    charges = customer.get("payment", "/api/payments/").json()["results"]
    reservations = requests.get(
        f"{lab.urls['inventory']}/internal/reservations/",
        params={"order_id": str(confirmed.json()["id"])},
        headers={"Authorization": f"Bearer {service_token('order', 'inventory')}"},
        timeout=30,
    ).json()["results"]
    return {
        "sku": sku,
        "address_id": str(address.json()["id"]),
        "order_id": str(draft.json()["id"]),
        "token": customer.add_card(),
        "charge_id": str(charges[0]["id"]),
        "reservation_id": str(reservations[0]["id"]),
    }


@pytest.mark.timeout(300)
@pytest.mark.parametrize("service", SERVICES)
def test_service_answers_as_its_schema_says(lab, admin, new_customer, product, service):
    """Ensure every operation of the service answers as its schema says, to valid and to invalid input."""
    schema = schemathesis.openapi.from_url(f"{lab.urls[service]}/api/schema/?format=json", config=CONFIG, timeout=30)
    schema.config.update(base_url=lab.urls[service])
    customer = new_customer()
    caller = Caller(service=service, customer_token=customer.token, staff_token=admin.token)
    known = things_to_name(lab, customer, product)
    failures = []
    operations = sent = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path.startswith("/_lab/") and operation.method.upper() != "GET":
            continue  # writes to the lab's faults and switches would break the lab under test
        operations += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            count, found = run_examples(operation, mode=mode, caller=caller, known=known)
            sent += count
            failures += found
        count, found = run_coverage(operation, caller=caller)
        sent += count
        failures += found
    assert operations >= 5 and sent > 5 * operations, (operations, sent)
    print(f"{service}: {operations} operations, {sent} requests")
    assert not failures, f"{len(failures)} failure(s):\n\n" + "\n\n".join(failures)
