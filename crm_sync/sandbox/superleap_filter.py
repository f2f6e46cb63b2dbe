"""Superleap's "Filter Object Data" (`POST .../{slug}/filter`), loosely emulated.

The documentation shows the request (`query.fields`, `query.filters` with nested `and`/`or`,
`sort`, `pagination`) and one operator in its example; it shows no answer and no operator
list, so both are guesses (docs/sandbox/superleap.md says how). Pure functions over the stored
records: the handler lives in superleap.py.
"""

from __future__ import annotations

from collections.abc import Callable

# -- Filter Object Data (loosely emulated: the answer's shape and the operators are guesses) ----
FILTER_MAX_PAGE_SIZE = 1000
FILTER_DEFAULT_PAGE_SIZE = 50
_OPERATORS = {
    "eq": lambda have, want: have == want,
    "neq": lambda have, want: have != want,
    "in": lambda have, want: have in want,
    "not_in": lambda have, want: have not in want,
    "contains": lambda have, want: isinstance(have, str) and str(want).lower() in have.lower(),
    "gt": lambda have, want: have is not None and _ordered(have) > _ordered(want),
    "gte": lambda have, want: have is not None and _ordered(have) >= _ordered(want),
    "lt": lambda have, want: have is not None and _ordered(have) < _ordered(want),
    "lte": lambda have, want: have is not None and _ordered(have) <= _ordered(want),
}


def _ordered(value):
    """A sort/compare key that never mixes types: numbers, then text, then nothing."""
    if isinstance(value, bool) or value is None:
        return (2, "") if value is None else (0, int(value))
    if isinstance(value, (int, float)):
        return (0, value)
    return (1, str(value))


def _condition(node) -> Callable[[dict], bool]:
    """A predicate for one filter node: a leaf (field, operator, value) and/or nested groups."""
    if not isinstance(node, dict):
        raise ValueError(f"a filter must be an object, not {node!r}")
    tests = []
    if "field" in node or "operator" in node:
        fld, op, want = node.get("field"), node.get("operator"), node.get("value")
        if not isinstance(fld, str) or not fld:
            raise ValueError("a filter condition needs a field")
        if op not in _OPERATORS:
            raise ValueError(f"unsupported operator {op!r}; supported: {sorted(_OPERATORS)}")
        if op in ("in", "not_in") and not isinstance(want, list):
            raise ValueError(f"operator {op!r} needs a list value")
        tests.append(lambda record, f=fld, o=_OPERATORS[op], w=want: o(record.get(f), w))
    for name, combine in (("and", all), ("or", any)):
        if name in node:
            children = node[name]
            if not isinstance(children, list):
                raise ValueError(f"{name!r} must be a list of filters")
            parts = [_condition(child) for child in children]
            if parts:
                tests.append(lambda record, p=parts, c=combine: c(t(record) for t in p))
    return lambda record: all(t(record) for t in tests)


def run_filter(records: list[dict], query: dict) -> dict:
    """Filter, sort and page records as `POST .../filter` does; the answer's `data`."""
    match = _condition(query.get("filters") or {})
    rows = [r for r in records if match(r)]
    sort = query.get("sort") or []
    if not isinstance(sort, list):
        raise ValueError("sort must be a list of {field, direction}")
    for rule in reversed(sort):  # stable sorts, last key first
        if not isinstance(rule, dict) or not isinstance(rule.get("field"), str):
            raise ValueError("each sort rule needs a field")
        direction = str(rule.get("direction", "asc")).lower()
        if direction not in ("asc", "desc"):
            raise ValueError(f"sort direction must be asc or desc, not {direction!r}")
        rows.sort(key=lambda r, f=rule["field"]: _ordered(r.get(f)), reverse=direction == "desc")
    pagination = query.get("pagination") or {}
    page = pagination.get("page", 1)
    size = pagination.get("page_size", FILTER_DEFAULT_PAGE_SIZE)
    if not isinstance(page, int) or page < 1:
        raise ValueError("pagination.page must be an integer from 1")
    if not isinstance(size, int) or not 1 <= size <= FILTER_MAX_PAGE_SIZE:
        raise ValueError(f"pagination.page_size must be an integer from 1 to "
                         f"{FILTER_MAX_PAGE_SIZE}")
    chosen = rows[(page - 1) * size: page * size]
    fields = query.get("fields")
    if fields:
        if not isinstance(fields, list) or not all(isinstance(f, str) for f in fields):
            raise ValueError("fields must be a list of field slugs")
        chosen = [{"id": r.get("id"), **{f: r.get(f) for f in fields}} for r in chosen]
    return {"records": chosen, "total_count": len(rows), "page": page, "page_size": size}
