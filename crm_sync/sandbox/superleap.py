"""Superleap's record APIs: bulk_upsert and bulk_create, as ../shared/crm-docs describe them
(superleap-bulk-upsert.txt, superleap-bulk-create.txt, REFERENCE.md §1).

Documented, and replayed exactly: the request and answer shapes of both endpoints, an unknown
id in bulk_upsert as a per-record failure (`invalid id detected : <id>`, 200), an invalid email
in bulk_create failing the whole request (400 VALIDATION_FAILED, `record_index: 1`), the
phone error (`PARSE_INVALID_FORMAT`, "invalid number", from the PUT example).

GUESSES (Superleap's documentation is silent; the sandbox is strict, and each guess is marked
GUESS where it is made and listed in docs/sandbox/superleap.md):
- at most `superleap_max_records` (1000) records per request, and an empty batch is a 400;
- the object slugs are a fixed list (OBJECTS); any other slug is 404 OBJECT_NOT_FOUND;
- a create needs a non-empty `name`;
- a value bulk_upsert cannot take (a bad email, a bad phone, no name) fails that record inside
  a 200 (`failed_records`), as the documented unknown id does, not the whole request;
- `record_index` is 1-based;
- the email and phone patterns (formats.py, _PHONE) and the id shape (_ID);
- rate limits: none documented, so the sandbox's 429 (only when started with a limit, or
  injected) is a guess, and its message says so.

`POST .../{slug}/filter` ("Filter Object Data") follows the documented request (`query.fields`,
`query.filters` with nested `and`/`or`, `sort`, `pagination`); its answer and its operator list
are not in the documentation we have, so both are loosely emulated
(superleap_filter.py; docs/sandbox/superleap.md says how).
"""

from __future__ import annotations

import math
import re
import secrets
import string

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from crm_sync.sandbox.formats import EMAIL as _EMAIL
from crm_sync.sandbox.state import SandboxState, bearer_ok, now_ms, read_json
from crm_sync.sandbox.superleap_filter import run_filter
from crm_sync.sandbox.superleap_objects import object_slugs, value_problem

CRM = "superleap"
# GUESS: the object slugs of the emulated org: the objects its fixtures define
# (fixtures/superleap/<slug>.json, served by Get Object: superleap_objects.py). The docs name
# "lead", "user", "opportunity" as examples of `object_slug` (bulk_upsert's path parameter) and
# document no way to list an org's objects here; the rest are common CRM objects. Any other slug
# is 404 (strict).
OBJECTS = frozenset(object_slugs())
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
_BASE = "/api/v1/org/objects/{slug}"


def error(status: int, code: str, message: str, validation_errors=None, meta=None):
    data = {"message": message, "status_code": status, "error_code": code}
    if validation_errors is not None:
        data["validation_errors"] = validation_errors
        data["meta_data"] = meta or "validation failed :"
    return JSONResponse({"success": False, "data": data}, status)


# Rate limits: Superleap documents none, no 429, no headers (REFERENCE.md, Superleap: "max
# records / body size / rate limit / headers / idempotency: nothing public found"). GUESS: a 429
# in the documented error envelope, with a standard Retry-After header (RFC 9110 §10.2.3), and
# a message that says it is the sandbox's guess.
RATE_LIMIT_MESSAGES = {
    "burst": "too many requests (a guess: Superleap documents no rate limit)",
    "daily": "daily request limit reached (a guess: Superleap documents no rate limit)",
}


def rate_limit_answer(kind: str, retry_after: float) -> JSONResponse:
    """The 429 of a rate limit, as guessed (see RATE_LIMIT_MESSAGES); `kind` "burst" or
    "daily". Used by the sandbox's own limit and by the fault injector (faults.py)."""
    response = error(429, "RATE_LIMITED", RATE_LIMIT_MESSAGES[kind])
    response.headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return response


def new_id(org: str) -> str:
    return f"{org}_" + "".join(secrets.choice(_ALNUM) for _ in range(8))


def field_errors(record: dict, creating: bool, slug: str | None = None
                 ) -> list[tuple[str, str, str]]:
    """(field, error_code, message) for every rule the record breaks. The codes and texts of
    email and phone are documented (bulk_create's failure example, the PUT example); the
    patterns behind them, the `name` rule, the rule on nested values and the checks by the
    object's field types (`slug`'s fixture, superleap_objects.value_problem) are GUESSES."""
    problems = []
    for key, value in record.items():
        if key not in ("email", "phone") and slug is not None and \
                (why := value_problem(slug, key, value)) is not None:
            problems.append((key, "PARSE_INVALID_FORMAT", why))
    email = record.get("email")
    if email not in (None, "") and (not isinstance(email, str) or not _EMAIL.match(email)):
        problems.append(("email", "PARSE_INVALID_FORMAT", f"invalid email format: {email}"))
    phone = record.get("phone")
    if phone not in (None, "") and (not isinstance(phone, str) or not _PHONE.match(phone)):
        problems.append(("phone", "PARSE_INVALID_FORMAT", "invalid number"))
    # GUESS: a create needs a non-empty name. The docs only describe `name` as "Name or title of
    # the record" and every example sends one; code and text are the sandbox's own.
    if creating and not (isinstance(record.get("name"), str) and record["name"].strip()):
        problems.append(("name", "REQUIRED_FIELD_MISSING", "name is required"))
    # GUESS: a flat map of field slug -> value is documented; a nested object (or NaN/inf,
    # which JSON cannot carry) is refused.
    for key, value in record.items():
        if isinstance(value, dict) or (isinstance(value, float) and not math.isfinite(value)):
            problems.append((key, "PARSE_INVALID_FORMAT", f"invalid value for field {key}"))
    return problems


class SuperleapAPI:
    """What every Superleap endpoint shares: the org, its user, and the request checks."""

    def __init__(self, state: SandboxState):
        self.state = state
        self.org = state.org
        self.user = f"{state.org}_BkJ851eS"

    def object_id(self, slug: str) -> str:
        return f"{self.org}_" + (slug + "obj00000")[:8].replace("_", "0")

    def guard(self, request: Request) -> JSONResponse | None:
        """Auth, object and rate limit checks shared by every endpoint; a response or None."""
        if not bearer_ok(request, self.state.tokens[CRM]):
            return error(401, "UNAUTHORIZED", "invalid or missing bearer token")
        slug = request.path_params["slug"]
        if slug not in OBJECTS:
            return error(404, "OBJECT_NOT_FOUND", f"object not found: {slug}")
        window = self.state.rate_limits.get(CRM)
        if window is not None:
            admitted, _, wait = window.admit()
            if not admitted:
                self.state.count("rate_limited total")
                return rate_limit_answer("burst", wait)
        return None

    def size_problem(self, records: list, noun: str) -> JSONResponse | None:
        """An empty batch, or more records than the sandbox's per-request maximum. GUESS, both:
        Superleap documents no maximum (REFERENCE.md: "max records ... nothing public found";
        1000 is the other CRMs' order of size) and no answer to an empty batch."""
        if not records:
            return error(400, "INVALID_REQUEST", f"{noun} cannot be empty")
        limit = self.state.superleap_max_records
        if len(records) > limit:
            return error(400, "INVALID_REQUEST", f"too many records: {len(records)} (max {limit}, "
                         "a sandbox guess: Superleap documents no maximum)")
        return None


class SuperleapRecordHandlers(SuperleapAPI):
    """`POST .../record/bulk_upsert` and `.../record/bulk_create`."""

    def routes(self) -> list[Route]:
        return [
            Route(f"{_BASE}/record/bulk_upsert", self.bulk_upsert, methods=["POST"]),
            Route(f"{_BASE}/record/bulk_create", self.bulk_create, methods=["POST"]),
        ]

    def create(self, slug: str, record: dict, ts: int) -> dict:
        rid = new_id(self.org)
        stored = {k: v for k, v in record.items() if k not in _SYSTEM_FIELDS and k != "id"}
        stored.update({
            "id": rid, "created_at": ts, "created_by": self.user,
            "object_id": self.object_id(slug), "org_id": self.org,
            "owner": record.get("owner", self.user), "search_field": record.get("name", ""),
            "system_created_at": ts + 4, "updated_at": ts, "updated_by": self.user,
        })
        self.state.db.put(CRM, slug, rid, stored, ts)
        return {"action": "CREATED", **stored}

    def update(self, slug: str, existing: dict, record: dict, ts: int) -> dict:
        changes = {k: v for k, v in record.items() if k not in _SYSTEM_FIELDS}
        if "name" in changes:
            changes["search_field"] = changes["name"]
        existing.update(changes, updated_at=ts, updated_by=self.user)
        self.state.db.put(CRM, slug, record["id"], existing, ts)
        result = {"action": "UPDATED", **changes, "object_id": self.object_id(slug),
                  "org_id": self.org, "updated_at": ts, "updated_by": self.user}
        result.setdefault("search_field", existing.get("search_field", ""))
        return result

    def upsert_one(self, slug: str, record: dict, ts: int) -> tuple[str, dict]:
        """("created" | "updated" | "failed", the record's result). A record with an id
        updates that record; one without creates a record (documented). An unknown id fails
        the record inside the 200 (documented: `invalid id detected : <id>`); GUESS: so does a
        value the record cannot take (email, phone, name), with the message bulk_create
        would give for it, rather than a 400 for the whole request as bulk_create answers."""
        rid = record.get("id")
        if rid is None:
            if problems := field_errors(record, creating=True, slug=slug):
                return "failed", {"action": "FAILED", "error_message": problems[0][2], **record}
            return "created", self.create(slug, record, ts)
        existing = self.state.db.get(CRM, slug, rid) \
            if isinstance(rid, str) and _ID.match(rid) else None
        if existing is None:
            return "failed", {"action": "FAILED", "error_message": f"invalid id detected : {rid}",
                              **record}
        if problems := field_errors(record, creating=False, slug=slug):
            return "failed", {"action": "FAILED", "error_message": problems[0][2], **record}
        return "updated", self.update(slug, existing, record, ts)

    async def bulk_upsert(self, request: Request):
        if denied := self.guard(request):
            return denied
        slug = request.path_params["slug"]
        body = await read_json(request)
        if not isinstance(body, dict) or not isinstance(body.get("values"), list):
            return error(400, "INVALID_REQUEST", 'request body must be {"values": [...]}')
        values = body["values"]
        if refused := self.size_problem(values, "values"):
            return refused
        if not all(isinstance(v, dict) for v in values):
            return error(400, "INVALID_REQUEST", "every element of values must be an object")
        ts = now_ms()
        outcomes: dict[str, list[dict]] = {"created": [], "updated": [], "failed": []}
        records = []
        with self.state.db.transaction():
            for record in values:
                kind, result = self.upsert_one(slug, record, ts)
                outcomes[kind].append(result)
                records.append(result)
        return JSONResponse({"success": True, "data": {
            "records_created": len(outcomes["created"]),
            "records_updated": len(outcomes["updated"]),
            "failed_records": outcomes["failed"] or None,
            "created_records": outcomes["created"] or None,
            "updated_records": outcomes["updated"] or None,
            "records": records,
        }})

    async def bulk_create(self, request: Request):
        if denied := self.guard(request):
            return denied
        slug = request.path_params["slug"]
        body = await read_json(request)
        if not isinstance(body, list) or not all(isinstance(r, dict) for r in body):
            return error(400, "INVALID_REQUEST", "request body must be a JSON list of records")
        if refused := self.size_problem(body, "records"):
            return refused
        validation_errors = [
            {"object_slug": slug, "field": fld, "message": msg, "error_code": code,
             "record_index": index, "meta_data": None}
            # GUESS: 1-based. Both documented failures show record_index 1 for the first record
            # (so it is 1-based, or the examples' record is the second of a 0-based count: the
            # bulk_create example's bad email is the first record, hence 1-based).
            for index, record in enumerate(body, start=1)
            for fld, code, msg in field_errors(record, creating=True, slug=slug)
        ]
        if validation_errors:  # one bad record fails the whole request; nothing is written
            return error(400, "VALIDATION_FAILED", "Failed to create records", validation_errors)
        ts = now_ms()
        with self.state.db.transaction():
            for record in body:
                self.create(slug, record, ts)
        return JSONResponse({"success": True, "data": {"message": "records added successfully"}})


class SuperleapFilterHandlers(SuperleapAPI):
    """`POST .../{slug}/filter`: Filter Object Data (loosely emulated, superleap_filter.py)."""

    def routes(self) -> list[Route]:
        return [Route(f"{_BASE}/filter", self.filter_records, methods=["POST"])]

    async def filter_records(self, request: Request):
        if denied := self.guard(request):
            return denied
        body = await read_json(request)
        query = body.get("query") if isinstance(body, dict) else None
        if not isinstance(query, dict):
            return error(400, "INVALID_REQUEST", 'request body must be {"query": {...}}')
        try:
            found = run_filter(self.state.db.list(CRM, request.path_params["slug"]), query)
        except ValueError as exc:
            return error(400, "INVALID_REQUEST", str(exc))
        return JSONResponse({"success": True, "data": found})


def routes(state: SandboxState) -> list[Route]:
    return [*SuperleapRecordHandlers(state).routes(), *SuperleapFilterHandlers(state).routes()]
