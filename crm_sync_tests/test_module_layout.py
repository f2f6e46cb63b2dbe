"""The package's layout: modules of a few hundred lines, functions under ~60, no import circle,
and a benchmark that names no CRM (it looks CRMs up in the registry).

Read with `ast` from the source files; nothing is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path
from crm_sync_tests.ast_source import parse as parse_source

PACKAGE = Path(__file__).resolve().parents[1] / "crm_sync"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def _modules(*parts: str) -> list[Path]:
    return sorted(PACKAGE.joinpath(*parts).rglob("*.py"))


def _name(path: Path) -> str:
    dotted = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return dotted.removesuffix(".__init__")


def _tree(path: Path) -> ast.Module:
    return parse_source(path.read_text(encoding="utf-8"), filename=str(path))




def test_every_module_is_at_most_400_lines():
    long = {_name(p): n for p in _modules()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES}
    assert long == {}, f"modules over {MAX_MODULE_LINES} lines: {long}"


def _long_functions(paths: list[Path]) -> dict[str, int]:
    long = {}
    for path in paths:
        for node in ast.walk(_tree(path)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long[f"{_name(path)}.{node.name} (line {node.lineno})"] = lines
    return long


def test_no_function_is_over_60_lines():
    paths = list(_modules())
    assert PACKAGE / "state" / "store.py" in paths and PACKAGE / "connectors" / "core.py" in paths
    long = _long_functions(paths)
    assert long == {}, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def _imports(path: Path, known: set[str]) -> set[str]:
    """The crm_sync modules a module imports at its top level (in `if` blocks too, such as
    `if TYPE_CHECKING:`; not inside functions, where a late import is how a cycle is broken)."""
    found: set[str] = set()
    this = _name(path)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]

    def visit(statements):
        for node in statements:
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    base = f"{parent}.{base}" if base else parent
                found.add(base)
                found.update(f"{base}.{a.name}" for a in node.names)
            elif isinstance(node, (ast.If, ast.Try)):
                visit(node.body)
                visit(node.orelse)
                for handler in getattr(node, "handlers", ()):
                    visit(handler.body)

    visit(_tree(path).body)
    return {name for name in found if name in known and name != this}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles of the graph (one path per strongly connected component)."""
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def connect(node: str) -> None:  # Tarjan
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return circles


def test_no_import_circle_among_the_modules():
    paths = _modules()
    known = {_name(p) for p in paths}
    # A package's module imports its package's __init__ first: that edge is implicit, not a
    # circle the code can avoid, so only the imports written are followed.
    graph = {_name(p): _imports(p, known) for p in paths}
    assert _cycles(graph) == []


def _named_crms() -> set[str]:
    return {p.stem for p in _modules("connectors")
            if "PROFILE = CrmProfile(" in p.read_text(encoding="utf-8")}


def test_the_benchmark_names_no_crm_in_a_comparison():
    crms, found = _named_crms(), []
    for path in _modules("devtools", "bench"):
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.Compare):
                for operand in (node.left, *node.comparators):
                    for const in ast.walk(operand):
                        if isinstance(const, ast.Constant) and const.value in crms:
                            found.append(f"{_name(path)} line {node.lineno}: {const.value!r}")
    assert crms and found == [], f"the benchmark branches on CRM names: {found}"
