"""Brevo custom objects, as developers.brevo.com and the brevo-python SDK describe them:

    POST /v3/objects/{object_type}/batch/upsert   -> 202 {"message", "processId"}, work done later
    POST /v3/objects/{object_type}/batch/delete   -> 202 {"message", "processId"}, work done later
    GET  /v3/processes/{processId}                -> {"id", "name", "status"}
    GET  /v3/objects/{object_type}/records        -> {"count", "records": [...]} (paged)

Authentication is the `api-key` header. Errors use Brevo's errorModel `{"code", "message"}`.
The upsert is asynchronous: the HTTP answer only says the request was accepted. A process moves
queued -> in_process -> completed over `state.brevo_process_steps` polls, and only when it
completes are its records written (one transaction), so a client that does not poll cannot know
what happened. Per-record problems (an unknown `id`, a value of the wrong type, a link to a
record that does not exist) reject that record inside the process; Brevo has no documented way
to report them, so the only way a client can tell is by reading the records back.

Where the documentation is silent the sandbox is strict; docs/sandbox/brevo.md lists each choice.
Two sandbox-only helpers live under /_sandbox/brevo/ (process details, runtime settings).
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass
from datetime import date, datetime, timezone

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from crm_sync.sandbox.state import RollingWindow, SandboxState, now_ms, read_json

CRM = "brevo"
# The documented limits of a custom-object batch upsert (REFERENCE.md, Brevo "limits"): "max 1000
# records/request; max 1 MB body; max 500 attributes per record; max 10 associations per
# associated object type per record". 1 MB is read as 1,000,000 bytes (GUESS: the stricter
# of 10^6 and 2^20).
BREVO_MAX_RECORDS = 1000
BREVO_MAX_BODY_BYTES = 1_000_000
BREVO_MAX_ATTRIBUTES = 500
BREVO_MAX_ASSOCIATIONS = 10
# "Only lowercase alphanumeric characters and underscores are allowed (max 32 characters)".
OBJECT_TYPE = re.compile(r"^[a-z0-9_]{1,32}$")
# Brevo's own objects: this endpoint "does not upsert system objects" (403).
STANDARD_OBJECTS = frozenset({"contact", "company", "deal", "task", "note", "store", "order",
                              "ticket"})
MAX_PAGE_SIZE = 1000  # getrecords: `limit` 0-1000
MAX_ASSOCIATION_ENTRIES = 20  # SDK: "Maximum 20 total entries ... 10 link and 10 unlink"
ASSOCIATIONS_SHOWN = 5  # getrecords: "5 associated records per association"
PROCESS_NAME = "OBJECT_RECORDS_UPSERT"  # invented: Brevo's name enum has no custom-object type
PROCESS_NAMES = {"upsert": PROCESS_NAME, "delete": "OBJECT_RECORDS_DELETE"}  # invented too
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class ObjectSchema:
    """A custom object type defined in the (emulated) account: attribute key -> type, and the
    object types it has an association with."""

    attributes: dict[str, str]
    associations: frozenset[str]


def _project_attributes() -> dict[str, str]:
    named = {"name": "text", "status": "text", "budget": "number", "start_date": "date",
             "company_ext_id": "text"}
    # The bundled data carries extra attributes cf_0, cf_1, ... in a JSON column. The schema
    # is filled up to Brevo's limit of 500 attributes per object.
    custom = {f"cf_{i}": "number" for i in range(BREVO_MAX_ATTRIBUTES - len(named))}
    return {**named, **custom}


# The account's custom objects. `company` is Brevo's standard company object: records can be
# linked to it, but this endpoint cannot create companies (and the sandbox holds none), so the
# `vendor` custom object exists to exercise links between records the sandbox can create.
SCHEMAS: dict[str, ObjectSchema] = {
    "project": ObjectSchema(_project_attributes(), frozenset({"company", "vendor"})),
    "vendor": ObjectSchema({"name": "text", "country": "text", "rating": "number"},
                           frozenset({"project"})),
}


def error(status: int, code: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"code": code, "message": message}, status, headers=headers)


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")


# -- request validation (answered synchronously, 400) ------------------------------------------
def object_type_error(object_type: str, writing: bool) -> JSONResponse | None:
    if writing and object_type in STANDARD_OBJECTS:
        return error(403, "permission_denied", "upsert of Brevo standard object records is not "
                     "supported via this endpoint")
    if not OBJECT_TYPE.match(object_type) or object_type not in SCHEMAS:
        return error(400, "invalid_parameter", "invalid object type")
    return None


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def identifiers_problem(where: str, identifiers) -> str | None:
    if not isinstance(identifiers, dict):
        return f"{where}.identifiers must be an object"
    if "ids" in identifiers:
        return f"{where}.identifiers: use id (singular), not ids"
    unknown = set(identifiers) - {"id", "ext_id"}
    if unknown:
        return f"{where}.identifiers: unknown key(s) {sorted(unknown)}"
    if not identifiers:
        return f"{where}.identifiers must hold id or ext_id"
    if "id" in identifiers and not (_is_int(identifiers["id"]) and identifiers["id"] > 0):
        return f"{where}.identifiers.id must be a positive integer"
    ext_id = identifiers.get("ext_id", "x")
    if not (isinstance(ext_id, str) and ext_id.strip()):
        return f"{where}.identifiers.ext_id must be a non-empty string"
    return None


def associations_problem(where: str, associations, schema: ObjectSchema) -> str | None:
    if not isinstance(associations, list):
        return f"{where}.associations must be an array"
    if len(associations) > MAX_ASSOCIATION_ENTRIES:
        return f"{where}.associations: at most {MAX_ASSOCIATION_ENTRIES} entries"
    per_type: dict[tuple[str, str], int] = {}
    for j, entry in enumerate(associations):
        here = f"{where}.associations[{j}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("object_type"), str):
            return f"{here} must be an object with an object_type"
        if entry["object_type"] not in schema.associations:
            return f"{here}: no association between these object types: {entry['object_type']}"
        action = entry.get("action") or "link"
        if action not in ("link", "unlink"):
            return f"{here}.action must be link or unlink"
        targets = entry.get("records")
        if not isinstance(targets, list) or not targets:
            return f"{here}.records must be a non-empty array"
        for k, target in enumerate(targets):
            problem = identifiers_problem(f"{here}.records[{k}]", (target or {}).get(
                "identifiers") if isinstance(target, dict) else None)
            if problem:
                return problem
        key = (entry["object_type"], action)
        per_type[key] = per_type.get(key, 0) + len(targets)
        if per_type[key] > BREVO_MAX_ASSOCIATIONS:
            return (f"{where}: at most {BREVO_MAX_ASSOCIATIONS} associated records per object "
                    f"type ({action} {entry['object_type']}); send multiple requests for more")
    return None


def record_problem(i: int, record, schema: ObjectSchema) -> str | None:
    where = f"records[{i}]"
    if not isinstance(record, dict):
        return f"{where} must be an object"
    # Optional members sent as null (some SDKs do) count as absent.
    record = {k: v for k, v in record.items() if v is not None}
    unknown = set(record) - {"identifiers", "attributes", "associations"}
    if unknown:
        return f"{where}: unknown member(s) {sorted(unknown)}"
    if "identifiers" in record and (problem := identifiers_problem(where, record["identifiers"])):
        return problem
    attributes = record.get("attributes")
    if not isinstance(attributes, dict) or not attributes:
        return f"{where}.attributes: at least 1 attribute is required"
    if len(attributes) > BREVO_MAX_ATTRIBUTES:
        return (f"{where}.attributes: {len(attributes)} attributes; at most "
                f"{BREVO_MAX_ATTRIBUTES} per record")
    if "associations" in record:
        return associations_problem(where, record["associations"], schema)
    return None


def request_problem(body, schema: ObjectSchema) -> tuple[str, str] | None:
    """(code, message) of the first rule the request breaks, or None."""
    if not isinstance(body, dict) or "records" not in body:
        return "missing_parameter", "records is required"
    records = body["records"]
    if not isinstance(records, list):
        return "invalid_parameter", "records must be an array"
    if not 1 <= len(records) <= BREVO_MAX_RECORDS:
        return "out_of_range", f"records cannot be empty or more than {BREVO_MAX_RECORDS}"
    for i, record in enumerate(records):
        if problem := record_problem(i, record, schema):
            return "invalid_parameter", problem
    return None


def delete_request_problem(body) -> tuple[str, str] | None:
    """(code, message) of the first rule a batch delete request breaks, or None."""
    identifiers = body.get("identifiers") if isinstance(body, dict) else None
    if identifiers is None:
        return "missing_parameter", "identifiers is required: either ids or ext_ids"
    if not isinstance(identifiers, dict):
        return "invalid_parameter", "identifiers must be an object"
    unknown = set(identifiers) - {"ids", "ext_ids"}
    if unknown:
        return "invalid_parameter", f"identifiers: unknown key(s) {sorted(unknown)}"
    if len(identifiers) != 1:
        return ("invalid_parameter" if identifiers else "missing_parameter",
                "identifiers: provide either ids or ext_ids, but not both")
    (kind, values), = identifiers.items()
    if not isinstance(values, list):
        return "invalid_parameter", f"identifiers.{kind} must be an array"
    if not 1 <= len(values) <= BREVO_MAX_RECORDS:
        return "out_of_range", (f"identifiers.{kind} cannot be empty or more than "
                                f"{BREVO_MAX_RECORDS}")
    for i, value in enumerate(values):
        if kind == "ids" and not (_is_int(value) and value > 0):
            return "invalid_parameter", f"identifiers.ids[{i}] must be a positive integer"
        if kind == "ext_ids" and not (isinstance(value, str) and value.strip()):
            return "invalid_parameter", f"identifiers.ext_ids[{i}] must be a non-empty string"
    return None


# -- processing (inside the async process) -----------------------------------------------------
def value_fits(kind: str, value) -> bool:
    if kind == "text":
        return isinstance(value, str)
    if kind == "number":
        return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "date":
        if not (isinstance(value, str) and _DATE.match(value)):
            return False
        try:
            date.fromisoformat(value)
        except ValueError:
            return False
        return True
    return False


class Rejected(Exception):
    """One record of a process is rejected; the others go on."""


class Processor:
    """Applies one completed process's records, in order, inside one transaction."""

    def __init__(self, state: SandboxState, object_type: str):
        self.state, self.object_type = state, object_type
        self.schema = SCHEMAS[object_type]
        self.ts = now_ms()

    def new_id(self) -> int:
        # Brevo ids are integers issued by Brevo; a per-object counter never reuses one.
        name = f"brevo record ids {self.object_type}"
        self.state.db.bump(name)
        return self.state.db.counters()[name]

    def find(self, object_type: str, identifiers: dict) -> tuple[str | None, dict | None]:
        db = self.state.db
        if "id" in identifiers:  # id takes precedence when both are given (SDK docs)
            rid = str(identifiers["id"])
            return rid, db.get(CRM, object_type, rid)
        rid = db.find_unique(CRM, object_type, "ext_id", identifiers["ext_id"])
        return rid, db.get(CRM, object_type, rid) if rid else None

    def apply_all(self, records: list[dict]) -> list[dict]:
        """Write every acceptable record; return the rejections (index, reason)."""
        rejected = []
        duplicated = self.duplicated_identifiers(records)
        for index, record in enumerate(records):
            try:
                if index in duplicated:
                    raise Rejected("the same identifier appears more than once in the request")
                self.apply(record)
            except Rejected as exc:
                rejected.append({"index": index, "identifiers": record.get("identifiers"),
                                 "reason": str(exc)})
        return rejected

    @staticmethod
    def duplicated_identifiers(records: list[dict]) -> set[int]:
        # Undocumented; strict: every record sharing an identifier with another is rejected.
        seen: dict[tuple, list[int]] = {}
        for index, record in enumerate(records):
            identifiers = record.get("identifiers") or {}
            key = ("id", identifiers["id"]) if "id" in identifiers else \
                ("ext_id", identifiers["ext_id"]) if "ext_id" in identifiers else None
            if key:
                seen.setdefault(key, []).append(index)
        return {i for indexes in seen.values() if len(indexes) > 1 for i in indexes}

    def apply(self, record: dict) -> None:
        identifiers = record.get("identifiers") or {}
        rid, existing = self.find(self.object_type, identifiers) if identifiers else (None, None)
        if "id" in identifiers and existing is None:
            raise Rejected(f"no {self.object_type} record with id {identifiers['id']} "
                           "(id is for updates only)")
        attributes = self.known_attributes(record["attributes"])
        current = existing or {"identifiers": {}, "attributes": {}, "associations": {},
                               "createdAt": iso(self.ts)}
        links = self.resolve_links(current.get("associations", {}),
                                   record.get("associations") or [])
        if existing is None:
            rid = str(self.new_id())
            current["identifiers"] = {"id": int(rid)}
            if "ext_id" in identifiers:
                current["identifiers"]["ext_id"] = identifiers["ext_id"]
        current["attributes"] = {**current.get("attributes", {}), **attributes}
        old_links = current.get("associations", {})
        current["associations"] = links
        current["updatedAt"] = iso(self.ts)
        self.state.db.put(CRM, self.object_type, rid, current, self.ts)
        if "ext_id" in current["identifiers"]:
            self.state.db.set_unique(CRM, self.object_type, "ext_id",
                                     current["identifiers"]["ext_id"], rid)
        self.mirror_links(int(rid), old_links, links)

    def delete_all(self, identifiers: dict) -> tuple[int, list[dict]]:
        """Delete the records named by `ids` or `ext_ids`; (deleted, not found). An identifier
        without a record is skipped (deleting is idempotent), and links to the deleted
        records are removed from the records on the other side."""
        (kind, values), = identifiers.items()
        deleted, missing = 0, []
        for value in values:
            wanted = {"id": value} if kind == "ids" else {"ext_id": value}
            rid, record = self.find(self.object_type, wanted)
            if record is None:
                missing.append({"identifiers": wanted, "reason": "no such record"})
                continue
            self.mirror_links(int(rid), record.get("associations", {}), {})
            self.state.db.delete(CRM, self.object_type, rid)  # and its ext_id index entry
            deleted += 1
        return deleted, missing

    def known_attributes(self, attributes: dict) -> dict:
        """Keep the schema's attributes (unknown keys are silently ignored, as documented);
        a value of the wrong type rejects the record (undocumented; strict)."""
        kept = {}
        for key, value in attributes.items():
            kind = self.schema.attributes.get(key)
            if kind is None:
                continue
            if not value_fits(kind, value):
                raise Rejected(f"invalid value for attribute {key} ({kind}): {value!r}"[:300])
            kept[key] = value
        return kept

    def resolve_links(self, current: dict, associations: list[dict]) -> dict:
        links = {t: list(ids) for t, ids in current.items()}
        for entry in associations:
            target_type, action = entry["object_type"], entry.get("action") or "link"
            ids = links.setdefault(target_type, [])
            for target in entry["records"]:
                target_id, found = self.find(target_type, target["identifiers"])
                if action == "unlink":  # idempotent: unlinking a missing link is a no-op
                    if found is not None and int(target_id) in ids:
                        ids.remove(int(target_id))
                    continue
                if found is None:
                    raise Rejected(f"associated {target_type} record not found: "
                                   f"{target['identifiers']}")
                if int(target_id) not in ids:
                    ids.append(int(target_id))
            if len(ids) > BREVO_MAX_ASSOCIATIONS:
                raise Rejected(f"a record can be linked to at most {BREVO_MAX_ASSOCIATIONS} "
                               f"{target_type} records")
        return {t: ids for t, ids in links.items() if ids}

    def mirror_links(self, rid: int, old: dict, new: dict) -> None:
        """Associations are two-sided: keep the other record's list in step."""
        for target_type in set(old) | set(new):
            before, after = set(old.get(target_type, [])), set(new.get(target_type, []))
            for target_id, linked in [(t, True) for t in after - before] + \
                                     [(t, False) for t in before - after]:
                other = self.state.db.get(CRM, target_type, str(target_id))
                if other is None:
                    continue
                ids = other.setdefault("associations", {}).setdefault(self.object_type, [])
                if linked and rid not in ids:
                    ids.append(rid)
                elif not linked and rid in ids:
                    ids.remove(rid)
                if not ids:
                    other["associations"].pop(self.object_type)
                self.state.db.put(CRM, target_type, str(target_id), other, self.ts)


def public_record(data: dict, with_associations: bool) -> dict:
    view = {"identifiers": data["identifiers"], "attributes": data.get("attributes", {}),
            "createdAt": data.get("createdAt"), "updatedAt": data.get("updatedAt")}
    if with_associations:
        view["associations"] = [
            {"object_type": t, "records": [{"identifiers": {"id": i}}
                                           for i in ids[:ASSOCIATIONS_SHOWN]]}
            for t, ids in sorted(data.get("associations", {}).items())
        ]
    return view


def routes(state: SandboxState) -> list[Route]:
    def limit_headers(window: RollingWindow, remaining: int, wait: float) -> dict[str, str]:
        now = time.monotonic()
        if wait <= 0 and window.stamps:
            wait = window.window_seconds - (now - window.stamps[0])
        return {"x-sib-ratelimit-limit": str(window.max_requests),
                "x-sib-ratelimit-remaining": str(remaining),
                "x-sib-ratelimit-reset": str(max(1, math.ceil(wait)))}

    def endpoint(handler):
        """Auth, then the account's rate limit; rate-limit headers on every answer to an
        authenticated request (no headers when the sandbox runs without a Brevo limit)."""
        async def guarded(request: Request):
            if request.headers.get("api-key") != state.tokens[CRM]:
                return error(401, "unauthorized", "Key not found")
            window = state.rate_limits.get(CRM)
            headers: dict[str, str] = {}
            if window is not None:
                admitted, remaining, wait = window.admit()
                headers = limit_headers(window, remaining, wait)
                if not admitted:
                    state.count("rate_limited total")
                    return error(429, "too_many_requests", "The expected rate limit is reached.",
                                 headers)
            response = await handler(request)
            response.headers.update(headers)
            return response
        return guarded

    async def upsert(request: Request):
        object_type = request.path_params["object_type"]
        if denied := object_type_error(object_type, writing=True):
            return denied
        raw = await request.body()
        if len(raw) > BREVO_MAX_BODY_BYTES:
            return error(400, "out_of_range", f"request body is {len(raw)} bytes; the maximum "
                         f"is 1 MB ({BREVO_MAX_BODY_BYTES} bytes)")
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return error(400, "bad_request", "the request body is not valid JSON")
        if problem := request_problem(body, SCHEMAS[object_type]):
            return error(400, *problem)
        records = [{k: v for k, v in r.items() if v is not None} for r in body["records"]]
        process_id = state.db.new_process(CRM, {
            "crm": CRM, "kind": "upsert", "object_type": object_type, "records": records,
            "status": "queued", "polls": 0, "rejected": [], "written": 0,
            # Decided now, so a seeded fault configuration replays the same way.
            "fails": state.faults.brevo_process_fails(),
        })
        state.count("brevo records accepted", len(records))
        return JSONResponse({"message": "Batch request accepted for processing of upsert "
                                        "object records", "processId": process_id}, 202)

    async def batch_delete(request: Request):
        object_type = request.path_params["object_type"]
        if object_type in STANDARD_OBJECTS:
            return error(403, "permission_denied", "deletion of Brevo standard object records "
                         "is not supported via this endpoint")
        if denied := object_type_error(object_type, writing=False):
            return denied
        try:
            body = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError):
            return error(400, "bad_request", "the request body is not valid JSON")
        if problem := delete_request_problem(body):
            return error(400, *problem)
        process_id = state.db.new_process(CRM, {
            "crm": CRM, "kind": "delete", "object_type": object_type,
            "identifiers": body["identifiers"], "status": "queued", "polls": 0,
            "rejected": [], "written": 0, "fails": state.faults.brevo_process_fails(),
        })
        return JSONResponse({"message": "Batch request accepted for deletion of object records",
                             "processId": process_id}, 202)

    def advance(process_id: int, data: dict) -> dict:
        """One poll: queued on the first, in_process until `brevo_process_steps` polls have
        been seen, then completed (writes applied) or failed (nothing written)."""
        if data["status"] in ("completed", "failed"):
            return data
        data["polls"] += 1
        if data["polls"] <= state.brevo_process_steps:
            data["status"] = "queued" if data["polls"] == 1 else "in_process"
            state.db.update_process(process_id, data)
            return data
        with state.db.transaction():
            if data["fails"]:
                data["status"] = "failed"
                state.count("brevo processes failed")
            elif data.get("kind") == "delete":
                data["written"], data["rejected"] = Processor(
                    state, data["object_type"]).delete_all(data["identifiers"])
                data["status"] = "completed"
                state.count("brevo records deleted", data["written"])
            else:
                data["rejected"] = Processor(state, data["object_type"]).apply_all(
                    data["records"])
                data["written"] = len(data["records"]) - len(data["rejected"])
                data["status"] = "completed"
                state.count("brevo records rejected", len(data["rejected"]))
            state.db.update_process(process_id, data)
        return data

    async def process(request: Request):
        raw_id = request.path_params["process_id"]
        if not raw_id.isdigit():
            return error(400, "invalid_parameter", "processId must be an integer")
        process_id = int(raw_id)
        data = state.db.get_process(process_id)
        if data is None or data.get("crm") != CRM:
            return error(404, "document_not_found", "Process ID not found")
        data = advance(process_id, data)
        return JSONResponse({"id": process_id, "name": PROCESS_NAMES[data.get("kind", "upsert")],
                             "status": data["status"]})

    def int_param(request: Request, name: str, low: int, high: int | None):
        raw = request.query_params.get(name)
        if raw is None:
            return error(400, "missing_parameter", f"{name} is required")
        if not re.fullmatch(r"\d+", raw) or int(raw) < low or (high is not None and
                                                             int(raw) > high):
            bounds = f"between {low} and {high}" if high is not None else f">= {low}"
            return error(400, "out_of_range", f"{name} must be an integer {bounds}")
        return int(raw)

    async def records(request: Request):
        object_type = request.path_params["object_type"]
        if denied := object_type_error(object_type, writing=False):
            return denied
        limit = int_param(request, "limit", 0, MAX_PAGE_SIZE)
        page = int_param(request, "page_num", 1, None)
        for value in (limit, page):
            if isinstance(value, JSONResponse):
                return value
        sort = request.query_params.get("sort", "desc")
        association = request.query_params.get("association", "false")
        if sort not in ("asc", "desc") or association not in ("true", "false"):
            return error(400, "invalid_parameter", "sort must be asc or desc; association "
                         "must be true or false")
        # Creation order = id order; only the page asked for is read.
        window = state.db.page(CRM, object_type, limit, (page - 1) * limit,
                               descending=sort == "desc")
        return JSONResponse({"count": state.db.count(CRM, object_type), "records": [
            public_record(r, association == "true") for r in window]})

    # -- sandbox-only helpers ------------------------------------------------------------------
    async def process_details(request: Request):
        data = state.db.get_process(int(request.path_params["process_id"]))
        if data is None or data.get("crm") != CRM:
            return JSONResponse({"message": "no such Brevo process"}, 404)
        return JSONResponse({k: v for k, v in data.items() if k not in ("records",
                                                                         "identifiers")})

    async def settings(request: Request):
        if request.method == "POST":
            body = await read_json(request)
            if not isinstance(body, dict):
                return JSONResponse({"message": "expected a JSON object"}, 400)
            if "process_steps" in body:
                state.brevo_process_steps = max(0, int(body["process_steps"]))
            if "rate_limit" in body:
                limit = body["rate_limit"]
                state.rate_limits[CRM] = RollingWindow(
                    int(limit), float(body.get("window_seconds", 1.0))) if limit else None
        window = state.rate_limits.get(CRM)
        return JSONResponse({
            "process_steps": state.brevo_process_steps,
            "rate_limit": window.max_requests if window else None,
            "window_seconds": window.window_seconds if window else None,
        })

    return [
        Route("/v3/objects/{object_type}/batch/upsert", endpoint(upsert), methods=["POST"]),
        Route("/v3/objects/{object_type}/batch/delete", endpoint(batch_delete), methods=["POST"]),
        Route("/v3/objects/{object_type}/records", endpoint(records), methods=["GET"]),
        Route("/v3/processes/{process_id}", endpoint(process), methods=["GET"]),
        Route("/_sandbox/brevo/processes/{process_id:int}", process_details),
        Route("/_sandbox/brevo/settings", settings, methods=["GET", "POST"]),
    ]
