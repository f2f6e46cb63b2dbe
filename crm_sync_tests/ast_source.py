"""`ast.parse` for the tests that read the package's source, safe inside a long test session."""

from __future__ import annotations

import ast
import gc


def parse(source: str, filename: str = "<unknown>") -> ast.Module:
    """`ast.parse` with no garbage collection while CPython 3.11 builds the tree: finalizers a
    collection runs inside the AST constructor (earlier tests' connections) upset its recursion
    count, "SystemError: AST constructor recursion depth mismatch" (python/cpython#106905)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return ast.parse(source, filename=filename)
    finally:
        if enabled:
            gc.enable()
