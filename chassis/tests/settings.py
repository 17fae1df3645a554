"""Settings of the chassis' own test project: the service "inventory" in a temporary lab root."""

import os
import tempfile
from pathlib import Path

from chassis.settings import build

os.environ.setdefault("LAB_ROOT", tempfile.mkdtemp(prefix="chassis-tests-"))
os.environ.setdefault("DJANGO_SECRET_KEY", "chassis-tests")
os.environ.setdefault("REDIS_URL", "")

BASE_DIR = Path(__file__).resolve().parent
globals().update(build(service="inventory", base_dir=BASE_DIR, apps=["tests"], title="chassis tests"))
ROOT_URLCONF = "tests.urls"
