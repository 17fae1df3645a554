"""manage.py seed_lab."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from accounts.models import RefreshToken, User

from .helpers import login


def seed() -> str:
    out = StringIO()
    call_command("seed_lab", stdout=out)
    return out.getvalue()


def snapshot():
    return list(User.objects.order_by("email").values())


@pytest.mark.django_db
def test_seed_lab_creates_the_lab_accounts(api):
    """Ensure seed_lab creates alice, bob and a staff superuser admin who can log in with the default passwords."""
    output = seed()
    assert output.splitlines()[0] == "seed_lab: lab accounts 3 created, 0 updated, 0 unchanged"
    assert "alice@lab.local" in output and "admin-lab-2024" in output and "staff" in output
    alice, admin = User.objects.get(email="alice@lab.local"), User.objects.get(email="admin@lab.local")
    assert alice.name == "Alice Martin" and not alice.is_staff
    assert User.objects.get(email="bob@lab.local").name == "Bob Durand"
    assert admin.is_staff and admin.is_superuser
    for email, password in [
        ("alice@lab.local", "alice-lab-2024"),
        ("bob@lab.local", "bob-lab-2024"),
        ("admin@lab.local", "admin-lab-2024"),
    ]:
        assert login(api, email, password).status_code == 200, email


@pytest.mark.django_db
def test_seed_lab_twice_changes_nothing():
    """Ensure a second run reports every account unchanged and leaves every column as it was."""
    seed()
    before = snapshot()
    assert seed().splitlines()[0] == "seed_lab: lab accounts 0 created, 0 updated, 3 unchanged"
    assert snapshot() == before


@pytest.mark.django_db
def test_seed_lab_repairs_drifted_accounts(api, settings):
    """Ensure a changed name, lost staff flag or new password setting is put back, closing old sessions."""
    seed()
    session = login(api, "bob@lab.local", "bob-lab-2024").json()
    User.objects.filter(email="admin@lab.local").update(is_staff=False, name="Someone")
    settings.LAB_BOB_PASSWORD = "bob-new-secret-7"
    assert seed().splitlines()[0] == "seed_lab: lab accounts 0 created, 2 updated, 1 unchanged"
    admin = User.objects.get(email="admin@lab.local")
    assert admin.is_staff and admin.name == "Lab Admin"
    assert not RefreshToken.objects.filter(user__email="bob@lab.local", revoked_at__isnull=True).exists()
    assert login(api, "bob@lab.local", "bob-new-secret-7").status_code == 200
    assert api.post("/api/auth/refresh/", {"refresh": session["refresh"]}, format="json").status_code == 401


@pytest.mark.django_db
def test_seed_lab_refuses_a_weak_password(settings):
    """Ensure a password setting that fails the validators stops the command with the setting's name."""
    settings.LAB_ALICE_PASSWORD = "12345"
    with pytest.raises(CommandError, match="LAB_ALICE_PASSWORD"):
        seed()
    assert not User.objects.filter(email="alice@lab.local").exists()
