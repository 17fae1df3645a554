"""The dashboard's settings for its unit tests: the real ones, with throwaway keys and a private cache.

The database is the real one from ``DATABASE_URL`` (pytest-django makes its
test database beside it). Keys live in a temporary directory, so the tests
can sign the user service's tokens without touching the lab's keys, and the
cache is per process, so a running dashboard sharing Redis is left alone.
"""

import os
import tempfile
from pathlib import Path

os.environ.setdefault("DJANGO_SECRET_KEY", "dashboard-tests")
os.environ["OTEL_SDK_DISABLED"] = "true"  # tests install their own tracer where they need one

from config.settings import *  # noqa: F403

# The dashboard's own keys dir; chassis.testing keeps the peers' test keys beside it.
CHASSIS = {**CHASSIS, "KEYS_DIR": Path(tempfile.mkdtemp(prefix="dashboard-tests-keys-")) / "dashboard"}  # noqa: F405
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "dashboard-tests"}}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
