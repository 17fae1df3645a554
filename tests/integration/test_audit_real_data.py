"""``labctl audit`` against a running lab whose databases hold real violations, past the first page of every list.

The rows are written straight into the services' own databases (through
each service's models, in a ``manage.py shell`` of that service, as the
service itself would store them): more than 1,000 cancelled orders with their
declined charges and released reservations, so that the audit must read a
second page of orders, charges and reservations; then a double capture, an
orphan capture, an orphan HELD reservation and a capture kept on a CANCELLED
order, placed where only a later page shows them. Everything written is
removed afterwards, so the lab is clean again for the tests that follow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest

from .harness import ROOT, SERVICES

FILL = 1_050  # more than one reconciliation page (page_size 1000) of orders, charges and reservations
ORPHAN_CHARGE_ORDER = "990000001"
ORPHAN_HOLD_ORDER = "990000002"

ORDER_WRITE = """
from datetime import UTC, datetime
from orders.models import Order

p = PARAMS
def order(key, status, total):
    return Order(customer_id=p["customer_id"], status=status, saga_step="done", idempotency_key=key,
                 request_fingerprint="-", payment_method="pm_audit", total_cents=total, currency="EUR")
Order.objects.bulk_create([order(f"{p['tag']}-fill-{i}", "CANCELLED", 1000) for i in range(p["fill"])])
Order.objects.bulk_create([order(f"{p['tag']}-double", "CONFIRMED", 1000)])
Order.objects.bulk_create([order(f"{p['tag']}-kept", "CANCELLED", 1500)])
mine = Order.objects.filter(customer_id=p["customer_id"], idempotency_key__startswith=p["tag"])
# The double-charged order is the oldest: the audit reads orders newest first, so it is on the last page.
mine.filter(idempotency_key=f"{p['tag']}-double").update(created_at=datetime(2020, 1, 1, tzinfo=UTC))
ids = dict(mine.values_list("idempotency_key", "pk"))
RESULT = {
    "fill": [ids[f"{p['tag']}-fill-{i}"] for i in range(p["fill"])],
    "double": ids[f"{p['tag']}-double"],
    "kept": ids[f"{p['tag']}-kept"],
    "orders": Order.objects.count(),
}
"""

ORDER_REMOVE = """
from orders.models import Order
RESULT = Order.objects.filter(customer_id=PARAMS["customer_id"], idempotency_key__startswith=PARAMS["tag"]).delete()[0]
"""

PAYMENT_WRITE = """
from payments.models import Charge, PaymentMethod

p = PARAMS
method = PaymentMethod.objects.create(token=p["token"], customer_id=p["customer_id"], brand="visa", last4="4242",
                                      exp_month=12, exp_year=2035, outcome="approve")
def charge(key, order_id, status, amount):
    return Charge(order_id=str(order_id), customer_id=p["customer_id"], payment_method=method, amount_cents=amount,
                  currency="EUR", status=status, decline_code="card_declined" if status == "DECLINED" else "",
                  idempotency_key=f"{p['tag']}-{key}", request_fingerprint="-")
# Charges are read oldest first: the fill comes first, the violations after it, on the last page.
Charge.objects.bulk_create([charge(f"fill-{i}", order_id, "DECLINED", 1000) for i, order_id in enumerate(p["fill"])])
Charge.objects.bulk_create([
    charge("double-1", p["double"], "CAPTURED", 1000),
    charge("double-2", p["double"], "CAPTURED", 1000),
    charge("orphan", p["orphan"], "CAPTURED", 700),
    charge("kept", p["kept"], "CAPTURED", 1500),
])
RESULT = dict(Charge.objects.filter(idempotency_key__startswith=p["tag"]).exclude(status="DECLINED")
              .values_list("idempotency_key", "id"))
RESULT = {key: str(value) for key, value in RESULT.items()}
"""

PAYMENT_REMOVE = """
from payments.models import Charge, PaymentMethod
RESULT = Charge.objects.filter(idempotency_key__startswith=PARAMS["tag"]).delete()[0]
PaymentMethod.objects.filter(token=PARAMS["token"]).delete()
"""

INVENTORY_WRITE = """
from datetime import timedelta
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from catalog.models import Product, Reservation, ReservationLine, Stock

p = PARAMS
now = timezone.now()
def reservation(key, order_id, status):
    return Reservation(order_id=str(order_id), idempotency_key=f"{p['tag']}-{key}", request_fingerprint="-",
                       status=status, expires_at=now + timedelta(days=1))
Reservation.objects.bulk_create([reservation(f"fill-{i}", oid, "RELEASED") for i, oid in enumerate(p["fill"])])
Reservation.objects.bulk_create([reservation("double", p["double"], "COMMITTED")])
with transaction.atomic():
    # The orphan hold holds real units, moved from available to reserved: only its owner is wrong.
    Reservation.objects.bulk_create([reservation("orphan", p["orphan"], "HELD")])
    held = Reservation.objects.get(idempotency_key=f"{p['tag']}-orphan")
    product = Product.objects.get(sku=p["sku"])
    ReservationLine.objects.create(reservation=held, product=product, quantity=2, unit_price_cents=product.price_cents,
                                   currency=product.currency)
    Stock.objects.filter(product=product).update(available=F("available") - 2, reserved=F("reserved") + 2)
RESULT = {
    "orphan": str(held.pk),
    "double": str(Reservation.objects.get(idempotency_key=f"{p['tag']}-double").pk),
}
"""

INVENTORY_REMOVE = """
from django.db import transaction
from django.db.models import F
from catalog.models import Product, Reservation, ReservationLine, Stock

p = PARAMS
with transaction.atomic():
    lines = ReservationLine.objects.filter(reservation__idempotency_key=f"{p['tag']}-orphan")
    if lines.exists():
        Stock.objects.filter(product__sku=p["sku"]).update(available=F("available") + 2, reserved=F("reserved") - 2)
        lines.delete()
    RESULT = Reservation.objects.filter(idempotency_key__startswith=p["tag"]).delete()[0]
"""


def in_service(lab, service: str, script: str, params: dict):
    """Run ``script`` in a Django shell of ``service`` (its settings, its database); return what it put in RESULT."""
    code = "\n".join(
        (
            "import json",
            f"PARAMS = json.loads({json.dumps(json.dumps(params))})",
            script,
            "print('RESULT:' + json.dumps(RESULT))",
        )
    )
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT / SERVICES[service][0],
        env=lab.envs[service],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    [line] = [line for line in done.stdout.splitlines() if line.startswith("RESULT:")]
    return json.loads(line.removeprefix("RESULT:"))


def labctl_audit(lab, *argv: str) -> subprocess.CompletedProcess:
    urls = ",".join(f"{name}={url}" for name, url in lab.urls.items())
    return subprocess.run(
        [sys.executable, "-m", "labctl", "audit", *argv, "--urls", urls],
        cwd=ROOT,
        text=True,
        capture_output=True,
        timeout=120,
        env={**os.environ, "LAB_ROOT": str(ROOT)},
    )


@pytest.fixture
def violations(lab, product):
    """Write the fill and the four violations into the lab's databases; remove all of it afterwards."""
    tag = f"audit-it-{uuid.uuid4().hex[:8]}"
    params = {"tag": tag, "customer_id": 990_000, "fill": FILL, "token": f"pm_{tag}"[:32], "sku": product(stock=10)}
    written = {"sku": params["sku"], "tag": tag}
    before = labctl_audit(lab)
    assert before.returncode == 0, "the lab must be clean before the violations are written:\n" + before.stdout
    try:
        written["orders"] = in_service(lab, "order", ORDER_WRITE, params)
        order_ids = {key: written["orders"][key] for key in ("fill", "double", "kept")}
        written["charges"] = in_service(
            lab, "payment", PAYMENT_WRITE, {**params, **order_ids, "orphan": ORPHAN_CHARGE_ORDER}
        )
        written["reservations"] = in_service(
            lab, "inventory", INVENTORY_WRITE, {**params, **order_ids, "orphan": ORPHAN_HOLD_ORDER}
        )
        yield written
    finally:
        removed = {
            "payment": in_service(lab, "payment", PAYMENT_REMOVE, params),
            "inventory": in_service(lab, "inventory", INVENTORY_REMOVE, params),
            "order": in_service(lab, "order", ORDER_REMOVE, params),
        }
        assert labctl_audit(lab).returncode == 0, f"the lab is not clean again after removing {removed}"


def test_audit_names_each_violation_written_into_real_databases(lab, violations):
    """Ensure `labctl audit` exits 1 naming a double capture, an orphan capture, an orphan hold and a kept capture.

    More than 1,000 orders, charges and reservations: each violation is only on a later page.
    """
    double, kept = violations["orders"]["double"], violations["orders"]["kept"]
    tag, charges = violations["tag"], violations["charges"]

    audited = labctl_audit(lab)
    as_json = labctl_audit(lab, "--json")

    assert audited.returncode == 1, audited.stdout + audited.stderr
    assert f"Audit of {violations['orders']['orders']} orders" in audited.stdout
    assert f"order {double} is CONFIRMED with 2 captured charges" in audited.stdout
    assert f"700 cents captured for unknown order {ORPHAN_CHARGE_ORDER}" in audited.stdout
    assert f"stock held for unknown order {ORPHAN_HOLD_ORDER}" in audited.stdout
    assert f"order {kept} is CANCELLED but 1500 cents are still captured" in audited.stdout
    assert "Invariants are broken: see above." in audited.stdout

    assert as_json.returncode == 1
    result = json.loads(as_json.stdout)
    assert result["counts"]["orders"] == violations["orders"]["orders"] > FILL
    assert result["counts"]["charges"] > FILL and result["counts"]["reservations"] > FILL
    found = {check["name"]: [v["ids"] for v in check["violations"]] for check in result["checks"]}
    for ids in found["confirmed_paid_and_committed"]:
        ids["charges"] = sorted(ids["charges"])
    assert found == {
        "confirmed_paid_and_committed": [
            {
                "order": str(double),
                "charges": sorted([charges[f"{tag}-double-1"], charges[f"{tag}-double-2"]]),
                "reservations": [violations["reservations"]["double"]],
            }
        ],
        "cancelled_clean": [{"order": str(kept), "charges": [charges[f"{tag}-kept"]], "reservations": []}],
        "stock_conserved": [],
        "no_stuck_orders": [],
        "no_orphans": [
            {"order": ORPHAN_CHARGE_ORDER, "charges": [charges[f"{tag}-orphan"]]},
            {"order": ORPHAN_HOLD_ORDER, "reservations": [violations["reservations"]["orphan"]]},
        ],
    }
