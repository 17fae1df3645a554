"""Install the lab's Python packages into the virtualenv, the MySQL driver apart.

Run by the Makefile with the virtualenv's own Python, before labctl itself is
installed, so it uses the standard library only:

    python labctl/bootstrap.py packages [--dev] REQUIREMENTS...   everything but the MySQL driver
    python labctl/bootstrap.py driver REQUIREMENTS...             the MySQL driver, when it can be built

The MySQL driver (mysqlclient) is the one requirement that compiles against
system headers (the MariaDB client library). Every service's requirements.txt
still names it, pinned, so a service installs whole on its own (its image
does); here it is held back from the first step and installed in a second one
that may fail without stopping ``make up``:

* the driver imports already: nothing to do;
* it builds: done;
* it does not build and the client headers are missing: when this process may
  install system packages (root with apt-get, or ``sudo -n``), it installs
  ``libmariadb-dev pkg-config`` and tries again, and says so;
  ``LAB_SYSTEM_PACKAGES=no`` forbids that;
* still no driver: the reason is written to ``var/mysql-driver.txt`` (labctl
  reads it to say why the lab runs on SQLite) and the step succeeds, unless
  MySQL is required (``LAB_DB=mysql`` or ``CI=true``). A later run tries again
  only once the headers can be found, so a second ``make up`` stays quick.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOG = ROOT / "var" / "log" / "pip-install.log"
DRIVER_NOTE = ROOT / "var" / "mysql-driver.txt"
WORK = ROOT / "var" / "install"  # the generated requirements file
# pip resolves a relative "-e ../chassis" of a requirements file against its own
# working directory, so it runs one level below the root.
PIP_CWD = ROOT / "labctl"
DRIVER = "mysqlclient"
SYSTEM_PACKAGES = ("libmariadb-dev", "pkg-config")
# The names mysqlclient asks pkg-config for (its setup.py tries them in turn).
PKG_CONFIG_NAMES = ("mysqlclient", "mariadb", "libmariadb")
MYSQL_HINT = "sudo apt-get install libmariadb-dev pkg-config && make up"


def say(text: str) -> None:
    print(text, flush=True)


def _is_driver(line: str) -> bool:
    return re.match(rf"^\s*{DRIVER}\s*(==|>=|~=|<|$)", line, re.IGNORECASE) is not None


def split_requirements(files: list[Path]) -> tuple[list[str], list[str]]:
    """(every line but the driver's, the driver's lines) of the requirement files."""
    others: list[str] = []
    driver: list[str] = []
    for path in files:
        for line in path.read_text().splitlines():
            (driver if _is_driver(line) else others).append(line)
    return others, sorted({d.strip() for d in driver})


def pip(args: list[str], what: str) -> bool:
    """Run pip quietly, its output appended to the log; say how long it took."""
    LOG.parent.mkdir(parents=True, exist_ok=True)
    say(f"  {what} (log: {LOG.relative_to(ROOT)}) ...")
    started = time.monotonic()
    with LOG.open("a") as log:
        log.write(f"\n=== pip install {' '.join(args)}\n")
        log.flush()
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *args],
            cwd=PIP_CWD,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    took = time.monotonic() - started
    say(f"  {what}: {'done' if proc.returncode == 0 else 'FAILED'} in {took:.0f} s")
    return proc.returncode == 0


def cmd_packages(args) -> int:
    WORK.mkdir(parents=True, exist_ok=True)
    LOG.parent.mkdir(parents=True, exist_ok=True)
    LOG.write_text("")
    files = [ROOT / f for f in args.requirements]
    if args.dev:
        files.append(ROOT / "requirements-dev.txt")
    others, _ = split_requirements(files)
    generated = WORK / "requirements.txt"
    generated.write_text("\n".join(others) + "\n")
    say("installing the Python packages (the MySQL driver comes next, on its own)")
    if not pip(["-r", str(generated), "-e", "../chassis", "-e", "../labctl"], "pip install"):
        say("")
        say("\n".join(LOG.read_text().splitlines()[-30:]))
        say(f"\nerror: pip install failed; the whole log is {LOG.relative_to(ROOT)}")
        return 1
    return 0


# ------------------------------------------------------------------------ driver


def driver_imports() -> bool:
    proc = subprocess.run([sys.executable, "-c", "import MySQLdb"], capture_output=True)
    return proc.returncode == 0


def headers_found() -> bool:
    pkg_config = shutil.which("pkg-config")
    if not pkg_config:
        return False
    return any(subprocess.run([pkg_config, "--exists", name]).returncode == 0 for name in PKG_CONFIG_NAMES)


def system_installer() -> list[str] | None:
    """The command prefix that may install system packages here, or None."""
    if os.environ.get("LAB_SYSTEM_PACKAGES", "").strip().lower() in ("no", "0", "false"):
        return None
    if not shutil.which("apt-get"):
        return None
    if os.geteuid() == 0:
        return []
    sudo = shutil.which("sudo")
    if sudo and subprocess.run([sudo, "-n", "true"], capture_output=True).returncode == 0:
        return [sudo, "-n"]
    return None


def install_headers(prefix: list[str]) -> bool:
    how = "with sudo" if prefix else "as root"
    say(f"  installing the MariaDB client headers with apt-get ({how}): {' '.join(SYSTEM_PACKAGES)} ...")
    started = time.monotonic()
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [*prefix, "apt-get", "install", "-y", "-qq", "--no-install-recommends", *SYSTEM_PACKAGES]
    with LOG.open("a") as log:
        ok = subprocess.run(install, stdout=log, stderr=subprocess.STDOUT, env=env).returncode == 0
        if not ok:  # an empty package list on a new machine
            subprocess.run([*prefix, "apt-get", "update", "-qq"], stdout=log, stderr=subprocess.STDOUT, env=env)
            ok = subprocess.run(install, stdout=log, stderr=subprocess.STDOUT, env=env).returncode == 0
    say(f"  apt-get: {'done' if ok else 'FAILED'} in {time.monotonic() - started:.0f} s")
    return ok


def mysql_required() -> str:
    if os.environ.get("LAB_DB", "").strip().lower() == "mysql":
        return "LAB_DB=mysql"
    if os.environ.get("CI", "").strip().lower() == "true":
        return "CI=true"
    return ""


def cmd_driver(args) -> int:
    WORK.mkdir(parents=True, exist_ok=True)
    LOG.parent.mkdir(parents=True, exist_ok=True)
    if os.environ.get("LAB_DB", "").strip().lower() == "sqlite":
        return 0
    if driver_imports():
        DRIVER_NOTE.unlink(missing_ok=True)
        return 0
    if DRIVER_NOTE.exists() and not headers_found() and not mysql_required():
        say(f"MySQL driver: still not built ({DRIVER_NOTE.read_text().strip()}); the lab runs on SQLite.")
        say(f"  For MySQL: {MYSQL_HINT}")
        return 0
    _, pins = split_requirements([ROOT / f for f in args.requirements])
    if len(pins) != 1:
        say(f"error: the requirement files pin {DRIVER} differently: {pins}; make them agree")
        return 1
    say(f"installing the MySQL driver ({pins[0]}, built against the MariaDB client library)")
    if not headers_found():
        prefix = system_installer()
        if prefix is not None:
            install_headers(prefix)
    if headers_found() and pip([pins[0]], f"pip install {pins[0]}") and driver_imports():
        DRIVER_NOTE.unlink(missing_ok=True)
        return 0
    reason = (
        "the MariaDB client headers are missing (pkg-config finds none of " + ", ".join(PKG_CONFIG_NAMES) + ")"
        if not headers_found()
        else f"{DRIVER} did not build; see {LOG.relative_to(ROOT)}"
    )
    DRIVER_NOTE.write_text(f"{DRIVER} could not be installed: {reason}\n")
    required = mysql_required()
    if required:
        say(f"error: {DRIVER} could not be installed: {reason}.")
        say(f"       {required} requires MySQL: {MYSQL_HINT}")
        return 1
    say(f"MySQL driver: not installed ({reason}).")
    say("  The lab will run on SQLite (one file per service under var/db/) instead of MySQL.")
    say(f"  For MySQL: {MYSQL_HINT}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    packages = sub.add_parser("packages")
    packages.add_argument("--dev", action="store_true", help="also requirements-dev.txt")
    packages.add_argument("requirements", nargs="+", help="requirement files, relative to the root")
    driver = sub.add_parser("driver")
    driver.add_argument("requirements", nargs="+", help="requirement files, relative to the root")
    args = parser.parse_args(argv)
    return {"packages": cmd_packages, "driver": cmd_driver}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
