"""``manage.py seed_lab``: the lab's known accounts, created or brought back in line.

Idempotent: a second run finds every account as wanted and changes nothing
(a password is reset only when the stored hash does not match it).
"""

from dataclasses import dataclass

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from rest_framework.exceptions import ValidationError

from accounts.services import lab_account_ensure


@dataclass(frozen=True)
class LabAccount:
    email: str
    name: str
    password_setting: str
    staff: bool


LAB_ACCOUNTS = (
    LabAccount("alice@lab.local", "Alice Martin", "LAB_ALICE_PASSWORD", staff=False),
    LabAccount("bob@lab.local", "Bob Durand", "LAB_BOB_PASSWORD", staff=False),
    LabAccount("admin@lab.local", "Lab Admin", "LAB_ADMIN_PASSWORD", staff=True),
)


class Command(BaseCommand):
    help = "Create or update the lab accounts (alice, bob, admin); safe to run again."

    def handle(self, *args, **options):
        outcomes = {"created": 0, "updated": 0, "unchanged": 0}
        rows = []
        for account in LAB_ACCOUNTS:
            password = getattr(settings, account.password_setting)
            try:
                outcome = lab_account_ensure(
                    email=account.email, name=account.name, password=password, staff=account.staff
                )
            except ValidationError as exc:
                problems = " ".join(str(message) for message in exc.detail.get("password", []))
                raise CommandError(f"{account.password_setting} is refused for {account.email}: {problems}") from exc
            outcomes[outcome] += 1
            rows.append((account.email, password, "staff" if account.staff else "customer"))
        self.stdout.write("seed_lab: lab accounts " + ", ".join(f"{n} {k}" for k, n in outcomes.items()))
        width = max(len(email) for email, _, _ in rows)
        pwidth = max(len(password) for _, password, _ in rows)
        self.stdout.write(f"  {'email':<{width}}  {'password':<{pwidth}}  role")
        for email, password, role in rows:
            self.stdout.write(f"  {email:<{width}}  {password:<{pwidth}}  {role}")
