"""labctl.facade is the dashboard's one door into labctl."""

import ast
from pathlib import Path

from labctl import facade

ROOT = Path(__file__).resolve().parents[2]


def test_the_dashboard_imports_labctl_only_through_the_facade():
    """Ensure no dashboard module (tests aside) imports a labctl module other than labctl.facade."""
    imports = []
    for path in (ROOT / "dashboard").rglob("*.py"):
        if "tests" in path.relative_to(ROOT / "dashboard").parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "labctl":
                names = [alias.name for alias in node.names]
                imports.append(path.name)
                assert node.module == "labctl.facade" or (node.module == "labctl" and names == ["facade"]), (
                    f"{path}: from {node.module} import {', '.join(names)}"
                )
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    assert alias.name.split(".")[0] != "labctl", f"{path}: import {alias.name}"
    assert {"lab.py", "load.py", "audit.py", "labs.py", "views.py"} <= set(imports)


def test_the_facade_exports_what_it_says():
    """Ensure every name of the facade's __all__ exists and each function has a docstring."""
    for name in facade.__all__:
        value = getattr(facade, name)
        if callable(value) and getattr(value, "__module__", "") == facade.__name__:
            assert value.__doc__, name


def test_the_dashboard_declares_labctl():
    """Ensure labctl is a requirement of the dashboard, not something it hopes to find."""
    assert "-e ../labctl" in (ROOT / "dashboard" / "requirements.txt").read_text().splitlines()
