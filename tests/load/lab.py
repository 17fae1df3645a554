"""A lab of the load tests' own: the integration harness' four gunicorn services on throwaway databases.

It loads a private copy of ``tests/integration/harness.py`` whose databases
carry a ``_load`` suffix, so this lab and the integration tests' lab can be up
in the same test session (the harness names databases after the pid).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[2]
WORKDIR = ROOT / "var" / "it-load"


def harness():
    spec = importlib.util.spec_from_file_location("load_lab_harness", ROOT / "tests" / "integration" / "harness.py")
    module = sys.modules.get(spec.name)
    if module is None:
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    if getattr(module, "_load_suffix", False):
        return module
    shared = module.recreate_database

    def recreate_database(url: str, workdir: Path, service: str) -> str:
        parsed = urlparse(url)
        if parsed.scheme.startswith("mysql"):
            url = parsed._replace(path=parsed.path.rstrip("/") + "_load").geturl()
        return shared(url, workdir, service)

    module.recreate_database = recreate_database
    module._load_suffix = True
    return module


def start(workdir: Path = WORKDIR):
    """Start the lab; the caller stops it (``lab.stop()``)."""
    return harness().start_lab(workdir)


def environment(lab) -> dict[str, str]:
    """What a load run needs to target this lab."""
    return {f"{name.upper()}_SERVICE_URL": url for name, url in lab.urls.items()}


if __name__ == "__main__":  # a lab to try scenarios by hand: python -m tests.load.lab
    import signal
    import time

    running = start()
    print(" ".join(f"export {k}={v};" for k, v in environment(running).items()), flush=True)
    try:
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        for _ in range(6 * 3600):  # at most 6 hours
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        running.stop()
        print(f"stopped (pid {os.getpid()})")
