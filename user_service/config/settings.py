"""Settings of the user service: the chassis defaults plus accounts and tokens.

Every value comes from the environment (see ``.env.example``); the chassis
reads ``var/env/user.env`` first, so the variables below see it too.
"""

import re
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from chassis.settings import build

BASE_DIR = Path(__file__).resolve().parent.parent

globals().update(
    build(
        service="user",
        base_dir=BASE_DIR,
        apps=["accounts"],
        title="Lab user service",
        description=(
            "Registration, login with EdDSA-signed JWTs (access 15 min, refresh 7 days, rotated on use), "
            "the logged-in user's profile and addresses, and the staff list of users."
        ),
        django_auth=True,
    )
)

env = environ.Env()

AUTH_USER_MODEL = "accounts.User"

AUTH_PASSWORD_VALIDATORS = [
    {
        "NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator",
        "OPTIONS": {"user_attributes": ("email", "name")},
    },
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]


# Lifetimes of the tokens this service issues, in seconds.
ACCESS_TOKEN_TTL = env.int("ACCESS_TOKEN_TTL", default=15 * 60)
REFRESH_TOKEN_TTL = env.int("REFRESH_TOKEN_TTL", default=7 * 24 * 3600)

_RATE = re.compile(r"^\d+/(s|sec|second|m|min|minute|h|hour|d|day)$")


def _rate(name: str, default: str) -> str:
    value = env.str(name, default=default).strip()
    if not _RATE.match(value):
        raise ImproperlyConfigured(
            f"{name} must look like '10/min' (a count, '/', then s, min, hour or day); got {value!r}."
        )
    return value


# Login throttling, counted in the cache (Redis in the lab, so every gunicorn worker shares the counts):
# per email from one client, per email from all clients together (wider), per client IP.
LOGIN_RATE_PER_ACCOUNT = _rate("LOGIN_RATE_PER_ACCOUNT", "10/min")
LOGIN_RATE_PER_EMAIL = _rate("LOGIN_RATE_PER_EMAIL", "100/min")
LOGIN_RATE_PER_IP = _rate("LOGIN_RATE_PER_IP", "300/min")
# Accounts created per client IP: as many as logins, since a load run registers one per simulated user.
REGISTER_RATE_PER_IP = _rate("REGISTER_RATE_PER_IP", "300/min")

# How many reverse proxies sit in front of the service. 0 means the client's IP is
# REMOTE_ADDR and an X-Forwarded-For header sent by a client is ignored, so nobody can
# escape the per-IP login limit by inventing one.
REST_FRAMEWORK["NUM_PROXIES"] = env.int("NUM_PROXIES", default=0)  # noqa: F821

# Passwords of the accounts `manage.py seed_lab` creates.
LAB_ALICE_PASSWORD = env.str("LAB_ALICE_PASSWORD", default="alice-lab-2024")
LAB_BOB_PASSWORD = env.str("LAB_BOB_PASSWORD", default="bob-lab-2024")
LAB_ADMIN_PASSWORD = env.str("LAB_ADMIN_PASSWORD", default="admin-lab-2024")
