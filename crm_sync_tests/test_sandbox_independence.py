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
from crm_sync_tests.ast_source import parse as parse_source

SANDBOX_DIR = Path(crm_sync.sandbox.__file__).parent
# Only the entry points may import the app, and only inside a function (when it is used):
# server.py's serve() builds it; the package's __getattr__ re-exports its public names.
MAY_IMPORT_APP = {"server.py", "__init__.py"}


def sandbox_modules() -> list[Path]:
    return sorted(SANDBOX_DIR.rglob("*.py"))


# Calls that import a module named by a string: importlib.import_module("x"),
# __import__("x"), importlib.util.find_spec("x"), pkgutil.resolve_name("x:y").
_DYNAMIC_IMPORTS = {"import_module", "__import__", "find_spec", "resolve_name"}


def _called_name(node: ast.Call) -> str:
    func = node.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def _pinned_to_the_sandbox(node) -> bool:
    """An f-string that starts with the literal `crm_sync.sandbox.`: whatever is filled in,
    the module named is one of the sandbox's."""
    if not isinstance(node, ast.JoinedStr) or not node.values:
        return False
    head = node.values[0]
    return isinstance(head, ast.Constant) and str(head.value).startswith("crm_sync.sandbox.")


def imported_names(path: Path) -> set[str]:
    return imported_names_in(path.read_text(encoding="utf-8"), str(path))


def imported_names_in(source: str, filename: str = "<source>") -> set[str]:
    """Every module a source imports, at any depth: `import` and `from` statements anywhere
    (function-level too), and the string given to importlib.import_module, __import__,
    importlib.util.find_spec or pkgutil.resolve_name. A string built at run time is reported
    as `<dynamic>`, so it cannot slip through unchecked, unless it is an f-string whose literal
    start pins it inside the sandbox (`f"crm_sync.sandbox.{crm}"`: a sandbox module)."""
    tree = parse_source(source, filename=filename)
    package = "crm_sync.sandbox"
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _called_name(node) in _DYNAMIC_IMPORTS:
            first = node.args[0] if node.args else None
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                module = first.value.split(":")[0]
                if module.startswith("."):  # import_module(".x", package) inside the sandbox
                    module = package + module
                names.add(module)
            elif _pinned_to_the_sandbox(first):
                names.add(package + ".<any>")
            else:
                names.add("<dynamic>")
        elif isinstance(node, ast.Import):
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
        client = client_imports(imported_names(path))
        if client:
            offenders[path.name] = client
    assert offenders == {}, f"sandbox modules import client code: {offenders}"


def client_imports(names: set[str]) -> list[str]:
    return sorted(name for name in names if name == "<dynamic>" or (
        within(name, "crm_sync") and not within(name, "crm_sync.sandbox")))


def test_the_import_walk_sees_every_kind_of_import():
    """The walk itself is tested: each way a sandbox module could reach the client is seen."""
    sources = {
        "import crm_sync.transform.validate": "crm_sync.transform.validate",
        "from crm_sync.connectors import brevo": "crm_sync.connectors.brevo",
        "from crm_sync import rules": "crm_sync.rules",
        "from .. import connectors": "crm_sync.connectors",
        "def f():\n    from crm_sync.transform.rules import EMAIL_PATTERN\n":
            "crm_sync.transform.rules",
        "class C:\n    def m(self):\n        import crm_sync.connectors.superleap\n":
            "crm_sync.connectors.superleap",
        "import importlib\nimportlib.import_module('crm_sync.transform')": "crm_sync.transform",
        "from importlib import import_module\nimport_module('crm_sync.connectors.hubspot')":
            "crm_sync.connectors.hubspot",
        "__import__('crm_sync.transform.schemas')": "crm_sync.transform.schemas",
        "import importlib\nname = 'crm_sync.' + 'connectors'\nimportlib.import_module(name)":
            "<dynamic>",
        "import importlib\nimportlib.import_module(f'crm_sync.{part}')": "<dynamic>",
        "import importlib\nimportlib.import_module(f'{root}.sandbox.x')": "<dynamic>",
    }
    for source, expected in sources.items():
        found = client_imports(imported_names_in(source))
        assert expected in found, (source, found)
    # Imports inside the sandbox, and of other libraries, are not client imports.
    for source in ("from crm_sync.sandbox.formats import EMAIL", "from . import formats",
                   "import importlib\nimportlib.import_module('crm_sync.sandbox.brevo')",
                   "import importlib\nimportlib.import_module(f'crm_sync.sandbox.{crm}')",
                   "import starlette.responses", "import re, json"):
        assert client_imports(imported_names_in(source)) == [], source


def test_loading_every_sandbox_module_loads_no_client_module():
    """What the import statements say, checked again at run time: import every sandbox module
    in a fresh interpreter and list the crm_sync modules loaded outside crm_sync.sandbox."""
    code = ("import importlib, pkgutil, sys, crm_sync.sandbox as s\n"
            "for m in pkgutil.walk_packages(s.__path__, 'crm_sync.sandbox.'):\n"
            "    importlib.import_module(m.name)\n"
            "import crm_sync.sandbox.app\n"
            "crm_sync.sandbox.app.create_app()\n"
            "print(sorted(m for m in sys.modules if m.startswith('crm_sync.')\n"
            "             and not m.startswith('crm_sync.sandbox')))\n")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, cwd=SANDBOX_DIR.parent.parent).stdout.strip()
    assert loaded == "[]", f"loading the sandbox loaded client modules: {loaded}"


def test_no_sandbox_module_imports_the_app_back():
    offenders = sorted(
        path.name for path in sandbox_modules()
        if path.name not in MAY_IMPORT_APP and path.name != "app.py"
        and "crm_sync.sandbox.app" in imported_names(path))
    assert offenders == [], f"these modules import crm_sync.sandbox.app (an import circle): " \
                            f"{offenders}"


def module_level_imports(path: Path) -> set[str]:
    tree = parse_source(path.read_text(encoding="utf-8"), filename=str(path))
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
