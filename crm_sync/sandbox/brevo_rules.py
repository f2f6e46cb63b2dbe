"""Brevo's custom-object rules and error shape, in the sandbox's own copy: the account's object
schemas, what an upsert or delete request must look like (answered at once with a 400), and which
values an attribute takes (checked later, inside the process).

From developers.brevo.com and the brevo-python SDK as ../shared/crm-docs (REFERENCE.md, Brevo)
digest them; docs/sandbox/brevo.md lists each strict choice made where they are silent.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import date, datetime, timezone

from starlette.responses import JSONResponse

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

# Rate limits. Documented: a 429 when a limit is exceeded, and "all rate-limited endpoints
# include" x-sib-ratelimit-limit / -remaining / -reset (the reset is the "time remaining until
# the rate limit resets ... typically seconds"); no Retry-After is named
# (https://developers.brevo.com/docs/limit-headers). The limits are per plan and per endpoint
# group, and /v3/objects is not listed (https://developers.brevo.com/docs/api-limits: General
# tier `/v3/contacts/{...}` 10 RPS / 36,000 RPH, "all other endpoints" 100 RPH).
# GUESS: the objects API is limited like the contacts API, 36,000 requests per rolling hour;
# that is the sandbox's limit, reported on every answer, unless it is started with another
# (`--brevo-rate-limit N`: N per second). The 100 RPH of "all other endpoints" is not used: it
# would stop the demo after 100 requests.
DEFAULT_RATE_LIMIT = 36_000
DEFAULT_WINDOW_SECONDS = 3600.0
# The 429 body. Documented: Brevo's errorModel `{"code", "message"}` (the SDKs' ErrorModel,
# e.g. https://github.com/sendinblue/APIv3-java-library/blob/master/docs/ErrorModel.md).
# GUESS: the code and the text; `too_many_requests` is not in the errorModel's code enum, and no
# page shows a 429 body.
RATE_LIMIT_CODE = "too_many_requests"
RATE_LIMIT_MESSAGES = {
    "burst": "The expected rate limit is reached.",
    "daily": "The hourly rate limit is reached.",  # Brevo's long limits are per hour (RPH)
}


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
# `vendor` custom object exists to exercise links between records the sandbox can create, and
# the `client` custom object holds the bundled companies (crm_sync's `companies_to_brevo`), so
# projects can be linked to their company in the demo.
SCHEMAS: dict[str, ObjectSchema] = {
    "project": ObjectSchema(_project_attributes(), frozenset({"company", "vendor", "client"})),
    "vendor": ObjectSchema({"name": "text", "country": "text", "rating": "number"},
                           frozenset({"project"})),
    "client": ObjectSchema({"name": "text", "domain": "text", "industry": "text",
                            "country": "text", "employees": "number"}, frozenset({"project"})),
}


def error(status: int, code: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"code": code, "message": message}, status, headers=headers)


def rate_limit_headers(limit: int, remaining: int, reset_seconds: float) -> dict[str, str]:
    """The three documented headers; the reset in whole seconds, at least 1."""
    return {"x-sib-ratelimit-limit": str(limit), "x-sib-ratelimit-remaining": str(remaining),
            "x-sib-ratelimit-reset": str(max(1, math.ceil(reset_seconds)))}


def rate_limited(kind: str, limit: int, reset_seconds: float) -> JSONResponse:
    """A 429 in Brevo's shape: errorModel body, x-sib-ratelimit-* headers, no Retry-After.
    `kind` is "burst" (the per-second limit) or "daily" (Brevo's long limits are hourly)."""
    return error(429, RATE_LIMIT_CODE, RATE_LIMIT_MESSAGES[kind],
                 rate_limit_headers(limit, 0, reset_seconds))


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
