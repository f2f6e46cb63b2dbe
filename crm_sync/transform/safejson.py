"""JSON parsing for source values: strict about what no CRM request can carry.

Python's `json.loads` accepts `NaN`, `Infinity` and `-Infinity` (not JSON) and turns numbers
too large for a float (`1e999`) into infinity. None of them can be serialized into a request
body (`serialize` refuses non-finite numbers), so a source value holding one is refused when it
is parsed, and its row is quarantined with a reason, instead of failing the run later.
"""

from __future__ import annotations

import json
import math


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{text} is too large for a JSON number")
    return number


def loads(text: str):
    """`json.loads`, refusing NaN, Infinity and numbers that overflow to infinity."""
    return json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
