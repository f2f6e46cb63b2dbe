"""HubSpot's CRM v3 objects API: batch upsert by a unique property, and read one record.

    POST /crm/v3/objects/{objectType}/batch/upsert   {"inputs": [{"id", "idProperty",
                                                      "properties", "objectWriteTraceId"}]}
    POST /crm/v3/objects/{objectType}/batch/archive  {"inputs": [{"id": "<record id>"}]} -> 204
    GET  /crm/v3/objects/{objectType}/{objectId}     (?idProperty=email&properties=a,b)

As ../shared/crm-docs and HubSpot's reference describe them; docs/sandbox/hubspot.md lists what
is emulated and every strict choice made where HubSpot's documentation is silent. In short:
at most 100 inputs; `idProperty` must be a property with `hasUniqueValue`; duplicate ids reject
the whole batch; with a unique `objectWriteTraceId` on every input one bad input is reported in
a 207 and the others are written, without them one bad input fails the whole batch (400) and
nothing is written; a rolling 100-per-10-s window (TEN_SECONDLY_ROLLING) and a daily allowance,
with HubSpot's rate-limit headers on every authenticated answer and no Retry-After on 429.
"""

from __future__ import annotations

import json
import random
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from crm_sync.sandbox.formats import EMAIL as _EMAIL
from crm_sync.sandbox.state import SandboxState, bearer_ok, now_ms

CRM = "hubspot"
PORTAL_ID = 48213570  # the sandbox's HubSpot account id, as it appears in messages
DAILY_LIMIT = 250_000  # private apps on Free/Starter; override with state.hubspot_daily_limit
# "max batch: 100 inputs" (REFERENCE.md, HubSpot, citing developers.hubspot.com contacts#limits).
HUBSPOT_MAX_INPUTS = 100
_AUTH_MESSAGE = ("Authentication credentials not found. This API supports OAuth 2.0 "
                 "authentication and you can find more details at "
                 "https://developers.hubspot.com/docs/methods/auth/oauth-overview")
_LIFECYCLE_STAGES = ("subscriber", "lead", "marketingqualifiedlead", "salesqualifiedlead",
                     "opportunity", "customer", "evangelist", "other")


@dataclass(frozen=True)
class ObjectType:
    """One HubSpot object type: its names, its properties and which of them are unique."""

    name: str  # the plural name; records are stored under it (/_sandbox/records/hubspot/<name>)
    type_id: str  # HubSpot's objectTypeId (0-1 contacts, 0-2 companies, 0-3 deals, 2-... custom)
    label: str  # singular, as HubSpot names the object in messages
    properties: dict[str, str]  # writable property -> type: string | email | enumeration
    unique: frozenset[str]  # properties with hasUniqueValue: the valid idProperty values
    modified_property: str = "hs_lastmodifieddate"
    options: dict[str, tuple[str, ...]] = field(default_factory=dict)
    aliases: frozenset[str] = frozenset()

    @property
    def read_only(self) -> frozenset[str]:
        return frozenset({"hs_object_id", "createdate", self.modified_property})

    def normalize(self, prop: str, value: str) -> str:
        # HubSpot stores email addresses lowercased, so matching on them ignores case.
        return value.lower() if self.properties.get(prop) == "email" else value


def _strings(*names: str) -> dict[str, str]:
    return {name: "string" for name in names}


OBJECT_TYPES = (
    ObjectType(
        "contacts", "0-1", "Contact",
        {**_strings("firstname", "lastname", "phone", "mobilephone", "jobtitle", "company",
                    "website", "address", "city", "state", "zip", "country", "crm_sync_id"),
         "email": "email", "lifecyclestage": "enumeration"},
        unique=frozenset({"email", "crm_sync_id"}),  # crm_sync_id: a custom unique property
        modified_property="lastmodifieddate",
        options={"lifecyclestage": _LIFECYCLE_STAGES},
        aliases=frozenset({"contact"}),
    ),
    ObjectType(
        "companies", "0-2", "Company",
        {**_strings("name", "domain", "website", "industry", "phone", "address", "city",
                    "state", "zip", "country", "numberofemployees", "annualrevenue",
                    "description", "crm_sync_id"),
         "lifecyclestage": "enumeration"},
        unique=frozenset({"crm_sync_id"}),  # `domain` is NOT unique in HubSpot
        options={"lifecyclestage": _LIFECYCLE_STAGES},
        aliases=frozenset({"company"}),
    ),
    ObjectType(
        "deals", "0-3", "Deal",
        {**_strings("dealname", "amount", "closedate", "description", "crm_sync_id"),
         "pipeline": "enumeration", "dealstage": "enumeration"},
        unique=frozenset({"crm_sync_id"}),
        options={"pipeline": ("default",),
                 "dealstage": ("appointmentscheduled", "qualifiedtobuy", "presentationscheduled",
                               "decisionmakerboughtin", "contractsent", "closedwon",
                               "closedlost")},
        aliases=frozenset({"deal"}),
    ),
    ObjectType(  # a custom object, reachable by its name, fullyQualifiedName or objectTypeId
        "projects", "2-1234567", "Project",
        _strings("name", "status", "budget", "start_date", "company_ext_id", "ext_id"),
        unique=frozenset({"ext_id"}),
        aliases=frozenset({"project", "p_projects", f"p{PORTAL_ID}_projects"}),
    ),
)
_BY_NAME = {alias: obj for obj in OBJECT_TYPES
            for alias in (obj.name, obj.type_id, *obj.aliases)}


def object_type(name: str) -> ObjectType | None:
    return _BY_NAME.get(name.lower())


# -- answers in HubSpot's shapes -----------------------------------------------------------------
def iso(ms: int) -> str:
    """Epoch milliseconds as HubSpot writes timestamps: 2019-10-30T03:30:17.883Z."""
    stamp = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def error(status: int, message: str, category: str | None = "VALIDATION_ERROR", *,
          headers: dict | None = None, **extra) -> JSONResponse:
    """HubSpot's standard error body: status, message, correlationId, category, errors?,
    context?. (HubSpot says every field is optional; the sandbox leaves out what it has not.)"""
    body = {"status": "error", "message": message, "correlationId": str(uuid.uuid4())}
    if category:
        body["category"] = category
    body.update({k: v for k, v in extra.items() if v is not None})
    return JSONResponse(body, status, headers=headers)


def validation_result(prop: str, code: str, message: str) -> dict:
    """One entry of HubSpot's `Property values were not valid: [...]` list."""
    return {"isValid": False, "message": message, "error": code, "name": prop,
            "localizedErrorMessage": message, "portalId": PORTAL_ID}


def input_error(problems: list[dict], trace_id: str | None) -> dict:
    """The `errors[]` element of a 207 for one input whose property values were refused."""
    return {
        "status": "error",
        "category": "VALIDATION_ERROR",
        "message": "Property values were not valid: "
                   + json.dumps(problems, separators=(",", ":"), ensure_ascii=False),
        "context": {"objectWriteTraceId": [trace_id]} if trace_id else {},
        "errors": [{"message": p["message"], "code": p["error"],
                    "context": {"propertyName": [p["name"]]}} for p in problems],
        "links": {},
    }


def conflict_error(obj: ObjectType, prop: str, owner: str, trace_id: str | None) -> dict:
    """A unique value the input would set already belongs to another record."""
    message = f"{obj.label} already exists. Existing ID: {owner}"
    context = {"existingId": [owner]}
    if trace_id:
        context["objectWriteTraceId"] = [trace_id]
    return {"status": "error", "category": "CONFLICT", "message": message, "context": context,
            "errors": [{"message": message, "code": "CONFLICT",
                        "context": {"propertyName": [prop]}}],
            "links": {}}


class _Rejected(Exception):
    """Abort the request's transaction: nothing of it is written; answer with `response`."""

    def __init__(self, response: JSONResponse):
        super().__init__("request rejected")
        self.response = response


# -- request parsing ------------------------------------------------------------------------------
def parse_inputs(raw: bytes) -> tuple[list[dict] | None, str | None]:
    """(inputs, None) or (None, the message of HubSpot's whole-request 400)."""
    try:
        body = json.loads(raw)
    except json.JSONDecodeError as exc:
        return None, f"Invalid input JSON on line {exc.lineno}, column {exc.colno}: {exc.msg}"
    except UnicodeDecodeError:
        return None, "Invalid input JSON: the body is not UTF-8"
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list):
        return None, 'Invalid input JSON: expected an object {"inputs": [...]}'
    inputs = body["inputs"]
    if not inputs:
        return None, "inputs must contain at least one input"
    if len(inputs) > HUBSPOT_MAX_INPUTS:
        return None, (f"The maximum number of inputs supported in a batch request is "
                      f"{HUBSPOT_MAX_INPUTS}. Please reduce the number of items and try again")
    for index, entry in enumerate(inputs):
        problem = _input_shape_problem(entry)
        if problem:
            return None, f"Invalid input JSON: inputs[{index}] {problem}"
    return inputs, None


def _input_shape_problem(entry) -> str | None:
    if not isinstance(entry, dict):
        return "must be an object"
    unknown = set(entry) - {"id", "idProperty", "properties", "objectWriteTraceId"}
    if unknown:
        return f"has unrecognized field(s) {sorted(unknown)}"
    if not isinstance(entry.get("id"), str) or not entry["id"].strip():
        return "needs an `id`: the value of its idProperty, as a non-empty string"
    if not isinstance(entry.get("idProperty"), str) or not entry["idProperty"]:
        return "needs an `idProperty`: the name of a property with unique values"
    properties = entry.get("properties")
    if not isinstance(properties, dict):
        return "needs `properties`: an object of property name -> value"
    for name, value in properties.items():
        if value is not None and not isinstance(value, (str, int, float, bool)):
            return f"property {name!r} must be a string, a number or a boolean"
    trace = entry.get("objectWriteTraceId")
    if trace is not None and not isinstance(trace, str):
        return "objectWriteTraceId must be a string"
    return None


def parse_archive_inputs(raw: bytes) -> tuple[list[str] | None, str | None]:
    """(record ids, None) of a batch/archive request, or (None, the message of its 400)."""
    try:
        body = json.loads(raw)
    except json.JSONDecodeError as exc:
        return None, f"Invalid input JSON on line {exc.lineno}, column {exc.colno}: {exc.msg}"
    except UnicodeDecodeError:
        return None, "Invalid input JSON: the body is not UTF-8"
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list):
        return None, 'Invalid input JSON: expected an object {"inputs": [...]}'
    inputs = body["inputs"]
    if not inputs:
        return None, "inputs must contain at least one input"
    if len(inputs) > HUBSPOT_MAX_INPUTS:
        return None, (f"The maximum number of inputs supported in a batch request is "
                      f"{HUBSPOT_MAX_INPUTS}. Please reduce the number of items and try again")
    ids = []
    for index, entry in enumerate(inputs):
        if not isinstance(entry, dict) or set(entry) != {"id"} or \
                not isinstance(entry["id"], str) or not entry["id"].strip():
            return None, (f'Invalid input JSON: inputs[{index}] must be {{"id": "<record id>"}} '
                          "with the record id as a non-empty string")
        ids.append(entry["id"])
    return ids, None


def as_text(value) -> str | None:
    """HubSpot property values are strings; numbers and booleans are read as their text."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def property_problems(obj: ObjectType, id_property: str, id_value: str,
                      properties: dict[str, str | None]) -> list[dict]:
    """Every rule the input's properties (and its id) break, as HubSpot's validation results."""
    problems = []
    for prop, value in properties.items():
        kind = obj.properties.get(prop)
        if prop in obj.read_only:
            problems.append(validation_result(
                prop, "READ_ONLY_VALUE", f'"{prop}" is a read only property; its value cannot '
                                         f'be set.'))
        elif kind is None:
            problems.append(validation_result(
                prop, "PROPERTY_DOESNT_EXIST", f'Property "{prop}" does not exist'))
        elif value in (None, ""):
            continue  # clears the value
        elif kind == "email" and not _EMAIL.match(value):
            problems.append(validation_result(
                prop, "INVALID_EMAIL", f"Email address {value} is invalid"))
        elif kind == "enumeration" and value not in obj.options[prop]:
            problems.append(validation_result(
                prop, "INVALID_OPTION",
                f"{value} was not one of the allowed options: [{', '.join(obj.options[prop])}]"))
    if obj.properties.get(id_property) == "email" and not _EMAIL.match(id_value) and \
            properties.get(id_property) != id_value:
        problems.append(validation_result(
            id_property, "INVALID_EMAIL", f"Email address {id_value} is invalid"))
    if id_property in properties and \
            obj.normalize(id_property, properties[id_property] or "") != \
            obj.normalize(id_property, id_value):
        # The sandbox's own strict rule: the id and the idProperty's value must agree.
        problems.append(validation_result(
            id_property, "INVALID_VALUE",
            f"{id_property} is {properties[id_property]!r} in properties but the input's id is "
            f"{id_value!r}; they must be the same"))
    return problems


# -- the routes -----------------------------------------------------------------------------------
def routes(state: SandboxState) -> list[Route]:
    shuffle = random.Random()  # nosec B311  # orders results, nothing secret

    def owner(obj: ObjectType, prop: str, value: str) -> str | None:
        """The record holding `value` in unique property `prop` now (the index may be stale
        after a record changed that value, so the record itself is checked)."""
        value = obj.normalize(prop, value)
        record_id = state.db.find_unique(CRM, obj.name, prop, value)
        if record_id is None:
            return None
        record = state.db.get(CRM, obj.name, record_id)
        current = (record or {}).get("properties", {}).get(prop)
        return record_id if current is not None and \
            obj.normalize(prop, current) == value else None

    def new_record_id(obj: ObjectType) -> str:
        # HubSpot record ids are numeric strings (e.g. "12877907025").
        while True:
            candidate = str(10_000_000_000 + secrets.randbelow(90_000_000_000))
            if state.db.get(CRM, obj.name, candidate) is None:
                return candidate

    def admit(request: Request) -> tuple[JSONResponse | None, dict[str, str]]:
        """Auth, then the ten-secondly window and the daily allowance. Every request that
        authenticates counts, whatever its answer; its answer carries the limit headers."""
        if not bearer_ok(request, state.tokens[CRM]):
            return error(401, _AUTH_MESSAGE, "INVALID_AUTHENTICATION"), {}
        window = state.rate_limits.get(CRM)
        if window is None:  # limits switched off (benchmarks)
            return None, {}
        admitted, remaining, _ = window.admit()
        daily_limit = getattr(state, "hubspot_daily_limit", DAILY_LIMIT)
        day_counter = f"hubspot daily requests {datetime.now(timezone.utc):%Y-%m-%d}"
        used_today = state.db.counters().get(day_counter, 0)
        headers = {
            "X-HubSpot-RateLimit-Max": str(window.max_requests),
            "X-HubSpot-RateLimit-Remaining": str(remaining),
            "X-HubSpot-RateLimit-Interval-Milliseconds": str(int(window.window_seconds * 1000)),
            "X-HubSpot-RateLimit-Daily": str(daily_limit),
            "X-HubSpot-RateLimit-Daily-Remaining": str(max(daily_limit - used_today, 0)),
        }
        if not admitted:
            return rate_limited("TEN_SECONDLY_ROLLING", headers), headers
        if used_today >= daily_limit:
            return rate_limited("DAILY", headers), headers
        state.count(day_counter)
        headers["X-HubSpot-RateLimit-Daily-Remaining"] = str(daily_limit - used_today - 1)
        return None, headers

    def rate_limited(policy: str, headers: dict[str, str]) -> JSONResponse:
        # No Retry-After: HubSpot does not send one for these two limits.
        state.count("rate_limited total")
        group = "ten-secondly" if policy == "TEN_SECONDLY_ROLLING" else "daily"
        return JSONResponse({
            "status": "error",
            "message": f"You have reached your {policy.lower()} limit.",
            "errorType": "RATE_LIMIT",
            "correlationId": str(uuid.uuid4()),
            "policyName": policy,
            "groupName": f"publicapi:private-app-api-calls-{group}:{PORTAL_ID}",
        }, 429, headers=headers)

    def check_id_properties(obj: ObjectType, inputs: list[dict], headers) -> JSONResponse | None:
        for entry in inputs:
            prop = entry["idProperty"]
            if prop not in obj.unique:
                return error(400, f"Unable to perform update/upsert by non-unique {obj.type_id} "
                                  f"property {prop}", headers=headers)
        return None

    def check_duplicates(obj: ObjectType, inputs: list[dict], headers) -> JSONResponse | None:
        seen, dupes = set(), []
        for entry in inputs:
            key = (entry["idProperty"], obj.normalize(entry["idProperty"], entry["id"]))
            if key in seen and entry["id"] not in dupes:
                dupes.append(entry["id"])
            seen.add(key)
        if not dupes:
            return None
        return duplicate_ids(dupes, headers)

    def duplicate_ids(dupes: list[str], headers) -> JSONResponse:
        return error(400, f"Duplicate IDs found in batch input: [{', '.join(dupes)}]. IDs must "
                          f"be unique", context={"ids": dupes}, headers=headers)

    def upsert_one(obj: ObjectType, entry: dict, ts: int, touched: set[str],
                   headers) -> tuple[dict | None, dict | None]:
        """Write one input; (result, None) or (None, its error). Runs inside the transaction."""
        trace_id = entry.get("objectWriteTraceId")
        id_property, id_value = entry["idProperty"], entry["id"]
        properties = {k: as_text(v) for k, v in entry["properties"].items()}
        problems = property_problems(obj, id_property, id_value, properties)
        if problems:
            return None, input_error(problems, trace_id)
        record_id = owner(obj, id_property, id_value)
        if record_id is not None and record_id in touched:
            # Two inputs with different ids resolved to one record (e.g. by email and by
            # crm_sync_id): HubSpot refuses a batch whose inputs resolve to the same record.
            raise _Rejected(duplicate_ids([id_value], headers))
        for prop in sorted(obj.unique - {id_property}):
            value = properties.get(prop)
            holder = owner(obj, prop, value) if value else None
            if holder is not None and holder != record_id:
                return None, conflict_error(obj, prop, holder, trace_id)
        result = write(obj, record_id, id_property, id_value, properties, ts)
        touched.add(result["id"])
        if trace_id is not None:
            result["objectWriteTraceId"] = trace_id
        return result, None

    def write(obj: ObjectType, record_id: str | None, id_property: str, id_value: str,
              properties: dict[str, str | None], ts: int) -> dict:
        stamp = iso(ts)
        record = state.db.get(CRM, obj.name, record_id) if record_id else None
        created = record is None
        if created:
            record_id = new_record_id(obj)
            record = {"id": record_id, "properties": {"hs_object_id": record_id,
                                                      "createdate": stamp},
                      "createdAt": stamp, "updatedAt": stamp, "archived": False}
        props = record["properties"]
        props[id_property] = obj.normalize(id_property, id_value)
        for prop, value in properties.items():
            if value in (None, ""):
                props.pop(prop, None)  # "" clears a value (documented for batch update)
            else:
                props[prop] = obj.normalize(prop, value)
        props[obj.modified_property] = stamp
        record["updatedAt"] = stamp
        state.db.put(CRM, obj.name, record_id, record, ts)
        for prop in obj.unique:
            if props.get(prop):
                state.db.set_unique(CRM, obj.name, prop, obj.normalize(prop, props[prop]),
                                    record_id)
        return {"id": record_id, "properties": dict(props), "createdAt": record["createdAt"],
                "updatedAt": stamp, "archived": False, "new": created}

    async def batch_upsert(request: Request):
        requested = now_ms()
        denied, headers = admit(request)
        if denied:
            return denied
        type_name = request.path_params["objectType"]
        obj = object_type(type_name)
        if obj is None:
            # HubSpot answers an unknown type with a 400 that has no category.
            return error(400, f"Unable to infer object type from: {type_name}", None,
                         headers=headers)
        inputs, problem = parse_inputs(await request.body())
        if problem:
            return error(400, problem, headers=headers)
        refused = check_id_properties(obj, inputs, headers) or \
            check_duplicates(obj, inputs, headers)
        if refused:
            return refused
        traces = [entry.get("objectWriteTraceId") for entry in inputs]
        # Multi-status (207) needs a unique objectWriteTraceId on every input, as documented.
        multi_status = all(traces) and len(set(traces)) == len(traces)
        started = ts = now_ms()
        results, errors, touched = [], [], set()
        try:
            with state.db.transaction():
                for entry in inputs:
                    result, failure = upsert_one(obj, entry, ts, touched, headers)
                    if failure is not None and not multi_status:
                        raise _Rejected(whole_batch_error(failure, headers))
                    (results if result is not None else errors).append(result or failure)
        except _Rejected as rejected:
            return rejected.response
        shuffle.shuffle(results)  # HubSpot does not answer in input order
        body = {"status": "COMPLETE", "results": results, "requestedAt": iso(requested),
                "startedAt": iso(started), "completedAt": iso(now_ms()), "links": {}}
        if errors:
            body["numErrors"] = len(errors)
            body["errors"] = errors
        return JSONResponse(body, 207 if errors else 200, headers=headers)

    def whole_batch_error(failure: dict, headers) -> JSONResponse:
        # Without trace ids one bad input fails the batch; like HubSpot, only the first bad
        # input is described, and the answer does not say which input it was.
        context = {k: v for k, v in failure["context"].items() if k != "objectWriteTraceId"}
        status = 409 if failure["category"] == "CONFLICT" else 400
        return error(status, failure["message"], failure["category"], errors=failure["errors"],
                     context=context or None, headers=headers)

    async def batch_archive(request: Request):
        """Archive (delete) records by their HubSpot id. Like HubSpot, it answers 204 with no
        body, also for ids that hold no record (already archived, or never there): archiving
        is idempotent. The sandbox keeps no recycling bin: records and their unique values
        are dropped, so the values can be used by new records at once."""
        denied, headers = admit(request)
        if denied:
            return denied
        type_name = request.path_params["objectType"]
        obj = object_type(type_name)
        if obj is None:
            return error(400, f"Unable to infer object type from: {type_name}", None,
                         headers=headers)
        ids, problem = parse_archive_inputs(await request.body())
        if problem:
            return error(400, problem, headers=headers)
        with state.db.transaction():
            archived = sum(state.db.delete(CRM, obj.name, record_id) for record_id in ids)
        state.count("hubspot records archived", archived)
        return Response(status_code=204, headers=headers)

    async def read_one(request: Request):
        denied, headers = admit(request)
        if denied:
            return denied
        type_name, object_id = request.path_params["objectType"], request.path_params["objectId"]
        obj = object_type(type_name)
        if obj is None:
            return error(400, f"Unable to infer object type from: {type_name}", None,
                         headers=headers)
        id_property = request.query_params.get("idProperty")
        if id_property and id_property not in obj.unique | {"hs_object_id"}:
            return error(400, f"Unable to perform read by non-unique {obj.type_id} property "
                              f"{id_property}", headers=headers)
        record_id = owner(obj, id_property, object_id) \
            if id_property and id_property != "hs_object_id" else object_id
        record = state.db.get(CRM, obj.name, record_id) if record_id else None
        if record is None:
            return error(404, "Object not found.  objectId are usually numeric.",
                         "OBJECT_NOT_FOUND", context={"id": [object_id]}, headers=headers)
        wanted = [p for p in request.query_params.get("properties", "").split(",") if p]
        props = record["properties"]
        if wanted:  # the requested ones (null when unset) plus the system ones
            system = ("hs_object_id", "createdate", obj.modified_property)
            props = {p: props.get(p) for p in (*system, *wanted)}
        return JSONResponse({"id": record["id"], "properties": props,
                             "createdAt": record["createdAt"], "updatedAt": record["updatedAt"],
                             "archived": False}, headers=headers)

    base = "/crm/v3/objects/{objectType}"
    return [
        Route(f"{base}/batch/upsert", batch_upsert, methods=["POST"]),
        Route(f"{base}/batch/archive", batch_archive, methods=["POST"]),
        Route(f"{base}/{{objectId}}", read_one, methods=["GET"]),
    ]
