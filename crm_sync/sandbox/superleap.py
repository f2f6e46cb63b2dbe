"""Superleap's record APIs: bulk_upsert and bulk_create, as ../shared/crm-docs describe them.

Where the documentation is silent the sandbox is strict (docs/sandbox.md lists each choice):
a create needs a `name`; at most `superleap_max_records` (1000) records per request;
`record_index` is 1-based, as in both documented failures; unknown object slugs are 404.

`POST .../{slug}/filter` ("Filter Object Data") follows the documented request (`query.fields`,
`query.filters` with nested `and`/`or`, `sort`, `pagination`); its answer and its operator list
are not in the documentation we have, so both are loosely emulated
(docs/sandbox/superleap.md says how).
"""

from __future__ import annotations

import math
import re
import secrets
import string
from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from crm_sync.sandbox.formats import EMAIL as _EMAIL
from crm_sync.sandbox.state import SandboxState, bearer_ok, now_ms, read_json

CRM = "superleap"
OBJECTS = {"lead", "user", "opportunity", "communication", "account", "contact", "deal"}
_ALNUM = string.ascii_letters + string.digits
# Superleap "parses and validates" phone numbers (PARSE_INVALID_FORMAT, "invalid number"), but
# does not document which it accepts (REFERENCE.md, Superleap "validation documented"). GUESS:
# an optional +, then 7 to 20 digits with the usual separators (space . - ( )) between them.
_PHONE = re.compile(r"^\+?(?:[0-9][ .()-]?){6,19}[0-9]$")
# Record ids: every id in Superleap's documentation looks like `g1koYv_2lLKYVan`, a 6-character
# org prefix, `_` and 8 characters (REFERENCE.md, Superleap upsert body). GUESS: any other
# shape is an unknown id.
_ID = re.compile(r"^[A-Za-z0-9]{6}_[A-Za-z0-9]{8}$")
_SYSTEM_FIELDS = {"action", "created_at", "created_by", "object_id", "org_id",
                  "system_created_at", "updated_at", "updated_by", "search_field"}


def error(status: int, code: str, message: str, validation_errors=None, meta=None):
    data = {"message": message, "status_code": status, "error_code": code}
    if validation_errors is not None:
        data["validation_errors"] = validation_errors
        data["meta_data"] = meta or "validation failed :"
    return JSONResponse({"success": False, "data": data}, status)


def new_id(org: str) -> str:
    return f"{org}_" + "".join(secrets.choice(_ALNUM) for _ in range(8))


def field_errors(record: dict, creating: bool) -> list[tuple[str, str, str]]:
    """(field, error_code, message) for every documented rule the record breaks."""
    problems = []
    email = record.get("email")
    if email not in (None, "") and (not isinstance(email, str) or not _EMAIL.match(email)):
        problems.append(("email", "PARSE_INVALID_FORMAT", f"invalid email format: {email}"))
    phone = record.get("phone")
    if phone not in (None, "") and (not isinstance(phone, str) or not _PHONE.match(phone)):
        problems.append(("phone", "PARSE_INVALID_FORMAT", "invalid number"))
    if creating and not (isinstance(record.get("name"), str) and record["name"].strip()):
        problems.append(("name", "REQUIRED_FIELD_MISSING", "name is required"))
    for key, value in record.items():
        if isinstance(value, dict) or (isinstance(value, float) and not math.isfinite(value)):
            problems.append((key, "PARSE_INVALID_FORMAT", f"invalid value for field {key}"))
    return problems


def routes(state: SandboxState) -> list[Route]:
    org = state.org
    user = f"{org}_BkJ851eS"

    def object_id(slug: str) -> str:
        return f"{org}_" + (slug + "obj00000")[:8].replace("_", "0")

    async def guard(request: Request):
        """Auth, object and rate limit checks shared by both endpoints; a response or None."""
        if not bearer_ok(request, state.tokens[CRM]):
            return error(401, "UNAUTHORIZED", "invalid or missing bearer token")
        slug = request.path_params["slug"]
        if slug not in OBJECTS:
            return error(404, "OBJECT_NOT_FOUND", f"object not found: {slug}")
        window = state.rate_limits.get(CRM)
        if window is not None:
            admitted, _, wait = window.admit()
            if not admitted:
                state.count("rate_limited total")
                response = error(429, "RATE_LIMITED", "too many requests")
                response.headers["Retry-After"] = str(max(1, math.ceil(wait)))
                return response
        return None

    def create(slug: str, record: dict, ts: int) -> dict:
        rid = new_id(org)
        stored = {k: v for k, v in record.items() if k not in _SYSTEM_FIELDS and k != "id"}
        stored.update({
            "id": rid, "created_at": ts, "created_by": user, "object_id": object_id(slug),
            "org_id": org, "owner": record.get("owner", user),
            "search_field": record.get("name", ""), "system_created_at": ts + 4,
            "updated_at": ts, "updated_by": user,
        })
        state.db.put(CRM, slug, rid, stored, ts)
        return {"action": "CREATED", **stored}

    async def bulk_upsert(request: Request):
        denied = await guard(request)
        if denied:
            return denied
        slug = request.path_params["slug"]
        body = await read_json(request)
        if not isinstance(body, dict) or not isinstance(body.get("values"), list):
            return error(400, "INVALID_REQUEST", 'request body must be {"values": [...]}')
        values = body["values"]
        if not values:
            return error(400, "INVALID_REQUEST", "values cannot be empty")
        if len(values) > state.superleap_max_records:
            return error(400, "INVALID_REQUEST",
                         f"too many records: {len(values)} (max {state.superleap_max_records})")
        if not all(isinstance(v, dict) for v in values):
            return error(400, "INVALID_REQUEST", "every element of values must be an object")
        ts = now_ms()
        created, updated, failed, records = [], [], [], []
        with state.db.transaction():
            for record in values:
                rid = record.get("id")
                if rid is not None:
                    existing = state.db.get(CRM, slug, rid) if isinstance(rid, str) and \
                        _ID.match(rid) else None
                    if existing is None:
                        result = {"action": "FAILED",
                                  "error_message": f"invalid id detected : {rid}", **record}
                        failed.append(result)
                    elif problems := field_errors(record, creating=False):
                        result = {"action": "FAILED", "error_message": problems[0][2], **record}
                        failed.append(result)
                    else:
                        changes = {k: v for k, v in record.items() if k not in _SYSTEM_FIELDS}
                        if "name" in changes:
                            changes["search_field"] = changes["name"]
                        existing.update(changes, updated_at=ts, updated_by=user)
                        state.db.put(CRM, slug, rid, existing, ts)
                        result = {"action": "UPDATED", **changes, "object_id": object_id(slug),
                                  "org_id": org, "updated_at": ts, "updated_by": user}
                        result.setdefault("search_field", existing.get("search_field", ""))
                        updated.append(result)
                elif problems := field_errors(record, creating=True):
                    result = {"action": "FAILED", "error_message": problems[0][2], **record}
                    failed.append(result)
                else:
                    result = create(slug, record, ts)
                    created.append(result)
                records.append(result)
        return JSONResponse({"success": True, "data": {
            "records_created": len(created),
            "records_updated": len(updated),
            "failed_records": failed or None,
            "created_records": created or None,
            "updated_records": updated or None,
            "records": records,
        }})

    async def bulk_create(request: Request):
        denied = await guard(request)
        if denied:
            return denied
        slug = request.path_params["slug"]
        body = await read_json(request)
        if not isinstance(body, list) or not all(isinstance(r, dict) for r in body):
            return error(400, "INVALID_REQUEST", "request body must be a JSON list of records")
        if not body:
            return error(400, "INVALID_REQUEST", "records cannot be empty")
        if len(body) > state.superleap_max_records:
            return error(400, "INVALID_REQUEST",
                         f"too many records: {len(body)} (max {state.superleap_max_records})")
        validation_errors = [
            {"object_slug": slug, "field": fld, "message": msg, "error_code": code,
             "record_index": index, "meta_data": None}
            for index, record in enumerate(body, start=1)  # 1-based, as documented
            for fld, code, msg in field_errors(record, creating=True)
        ]
        if validation_errors:  # one bad record fails the whole request; nothing is written
            return error(400, "VALIDATION_FAILED", "Failed to create records", validation_errors)
        ts = now_ms()
        with state.db.transaction():
            for record in body:
                create(slug, record, ts)
        return JSONResponse({"success": True, "data": {"message": "records added successfully"}})

    async def filter_records(request: Request):
        denied = await guard(request)
        if denied:
            return denied
        body = await read_json(request)
        query = body.get("query") if isinstance(body, dict) else None
        if not isinstance(query, dict):
            return error(400, "INVALID_REQUEST", 'request body must be {"query": {...}}')
        try:
            found = run_filter(state.db.list(CRM, request.path_params["slug"]), query)
        except ValueError as exc:
            return error(400, "INVALID_REQUEST", str(exc))
        return JSONResponse({"success": True, "data": found})

    base = "/api/v1/org/objects/{slug}/record"
    return [
        Route(f"{base}/bulk_upsert", bulk_upsert, methods=["POST"]),
        Route(f"{base}/bulk_create", bulk_create, methods=["POST"]),
        Route("/api/v1/org/objects/{slug}/filter", filter_records, methods=["POST"]),
    ]


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
