"""Superleap's record APIs: bulk_upsert and bulk_create, as ../shared/crm-docs describe them.

Where the documentation is silent the sandbox is strict (docs/sandbox.md lists each choice):
a create needs a `name`; at most `superleap_max_records` (1000) records per request;
`record_index` is 1-based, as in both documented failures; unknown object slugs are 404.
"""

from __future__ import annotations

import math
import re
import secrets
import string

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from crm_sync.rules import EMAIL_PATTERN, PHONE_PATTERN, SUPERLEAP_ID_PATTERN
from crm_sync.sandbox.app import SandboxState, bearer_ok, now_ms, read_json

CRM = "superleap"
OBJECTS = {"lead", "user", "opportunity", "communication", "account", "contact", "deal"}
_ALNUM = string.ascii_letters + string.digits
_EMAIL = re.compile(EMAIL_PATTERN)
_PHONE = re.compile(PHONE_PATTERN)
_ID = re.compile(SUPERLEAP_ID_PATTERN)
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

    base = "/api/v1/org/objects/{slug}/record"
    return [
        Route(f"{base}/bulk_upsert", bulk_upsert, methods=["POST"]),
        Route(f"{base}/bulk_create", bulk_create, methods=["POST"]),
    ]
