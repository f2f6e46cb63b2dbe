"""The sandbox stands on its own: it imports nothing of the client, and nothing imports its app.

The sandbox emulates the CRMs; the client (rules, validation, connectors, spec, runner) is what
it tests. If the sandbox borrowed the client's rules, a wrong rule would be wrong on both sides
and no test could see it. And a route module that imports the app that imports it is a circle:
the app can only be built in one import order.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import crm_sync.sandbox

SANDBOX_DIR = Path(crm_sync.sandbox.__file__).parent
# Only the entry points may import the app, and only inside a function (when it is used):
# server.py's serve() builds it; the package's __getattr__ re-exports its public names.
MAY_IMPORT_APP = {"server.py", "__init__.py"}


def sandbox_modules() -> list[Path]:
    return sorted(SANDBOX_DIR.rglob("*.py"))


def imported_names(path: Path) -> set[str]:
    """Every module a file imports, at any depth (function-level imports too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = "crm_sync.sandbox"
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # a relative import: resolve it against the sandbox package
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            names.add(module)
            # `from crm_sync.sandbox import app` imports the module crm_sync.sandbox.app.
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_the_sandbox_has_modules_to_check():
    names = {p.name for p in sandbox_modules()}
    assert {"app.py", "superleap.py", "hubspot.py", "salesforce.py", "brevo.py"} <= names


def test_the_sandbox_imports_nothing_of_the_client():
    offenders = {}
    for path in sandbox_modules():
        client = sorted(name for name in imported_names(path)
                        if within(name, "crm_sync") and not within(name, "crm_sync.sandbox"))
        if client:
            offenders[path.name] = client
    assert offenders == {}, f"sandbox modules import client code: {offenders}"


def test_no_sandbox_module_imports_the_app_back():
    offenders = sorted(
        path.name for path in sandbox_modules()
        if path.name not in MAY_IMPORT_APP and path.name != "app.py"
        and "crm_sync.sandbox.app" in imported_names(path))
    assert offenders == [], f"these modules import crm_sync.sandbox.app (an import circle): " \
                            f"{offenders}"


def module_level_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.add(node.module or "")
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_the_entry_points_import_the_app_only_when_used():
    for name in MAY_IMPORT_APP:
        assert "crm_sync.sandbox.app" not in module_level_imports(SANDBOX_DIR / name), name
    # And so importing the server (to start a sandbox process) loads no route module.
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, crm_sync.sandbox.server; "
         "print(sorted(m for m in sys.modules if m.startswith('crm_sync.sandbox')))"],
        capture_output=True, text=True, check=True, cwd=SANDBOX_DIR.parent.parent).stdout
    assert "crm_sync.sandbox.app" not in loaded and "crm_sync.sandbox.hubspot" not in loaded, \
        loaded


def test_the_app_keeps_its_public_names():
    from crm_sync.sandbox.app import DEFAULT_TOKENS, TOKEN_ENV, create_app

    assert set(TOKEN_ENV) == {"superleap", "brevo", "hubspot", "salesforce"}
    assert DEFAULT_TOKENS == {crm: f"sandbox-{crm}-token" for crm in TOKEN_ENV}
    assert callable(create_app)
