"""The ledger is append-only and always adds up to what was captured minus what was refunded."""

import pytest
from django.db import IntegrityError, transaction
from django.db.models import Sum

from payments import services
from payments.models import AppendOnlyError, Charge, LedgerEntry, Refund

from .conftest import ALICE, BOB, DECLINE_CARD, INSUFFICIENT_CARD, new_key

pytestmark = pytest.mark.django_db


def test_existing_entry_cannot_be_saved_again(make_charge):
    """Ensure saving an existing ledger entry raises instead of rewriting history."""
    make_charge(amount_cents=500)
    entry = LedgerEntry.objects.get()
    entry.amount_cents = 1
    with pytest.raises(AppendOnlyError):
        entry.save()
    assert LedgerEntry.objects.get().amount_cents == 500


def test_entries_cannot_be_deleted_or_bulk_updated(make_charge):
    """Ensure delete() on a row or a queryset and queryset update() all raise."""
    make_charge(amount_cents=500)
    entry = LedgerEntry.objects.get()
    with pytest.raises(AppendOnlyError):
        entry.delete()
    with pytest.raises(AppendOnlyError):
        LedgerEntry.objects.all().delete()
    with pytest.raises(AppendOnlyError):
        LedgerEntry.objects.filter(pk=entry.pk).update(amount_cents=0)
    assert LedgerEntry.objects.get().amount_cents == 500


def test_a_copy_with_an_existing_id_cannot_overwrite(make_charge):
    """Ensure a new object reusing an existing id is inserted (and refused), never updated over the old row."""
    make_charge(amount_cents=500)
    entry = LedgerEntry.objects.get()
    forged = LedgerEntry(
        id=entry.id, kind="CHARGE", charge_id=entry.charge_id, amount_cents=1, currency="EUR", customer_id=ALICE
    )
    with pytest.raises(IntegrityError), transaction.atomic():
        forged.save()
    assert LedgerEntry.objects.get().amount_cents == 500


def test_ledger_sum_equals_captured_minus_refunded(make_charge):
    """Ensure, after captures, declines and refunds, the ledger total is captured − refunded, per charge too."""
    charges = [
        make_charge(customer_id=ALICE, amount_cents=1000),
        make_charge(customer_id=ALICE, amount_cents=2500),
        make_charge(customer_id=BOB, amount_cents=700),
        make_charge(customer_id=BOB, amount_cents=900, number=DECLINE_CARD),
        make_charge(customer_id=BOB, amount_cents=400, number=INSUFFICIENT_CARD),
    ]
    for charge, amount in ((charges[0], 300), (charges[0], None), (charges[1], 1)):
        services.refund_create(charge_id=charge.id, amount_cents=amount, reason="t", idempotency_key=new_key())

    captured = Charge.objects.filter(status="CAPTURED").aggregate(total=Sum("amount_cents"))["total"]
    refunded = Refund.objects.aggregate(total=Sum("amount_cents"))["total"]
    assert (captured, refunded) == (4200, 1001)
    assert LedgerEntry.objects.aggregate(total=Sum("amount_cents"))["total"] == captured - refunded
    for charge in Charge.objects.all():
        net = LedgerEntry.objects.filter(charge=charge).aggregate(total=Sum("amount_cents"))["total"] or 0
        expected = charge.amount_cents - charge.refunded_cents if charge.status == "CAPTURED" else 0
        assert net == expected
