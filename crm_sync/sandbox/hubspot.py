"""HubSpot's CRM v3 objects API: batch upsert by a unique property, and read one record.

    POST /crm/v3/objects/{objectType}/batch/upsert   {"inputs": [{"id", "idProperty",
                                                      "properties", "objectWriteTraceId"}]}
    POST /crm/v3/objects/{objectType}/batch/archive  {"inputs": [{"id": "<record id>"}]} -> 204
    GET  /crm/v3/objects/{objectType}/{objectId}     (?idProperty=email&properties=a,b)
    GET  /crm/v3/properties/{objectType}             {"results": [<property>, ...]}
    GET  /crm/v3/properties/{objectType}/{propertyName}

As ../shared/crm-docs and HubSpot's reference describe them; docs/sandbox/hubspot.md lists what
is emulated and every strict choice made where HubSpot's documentation is silent. In short:
at most 100 inputs; `idProperty` must be a property with `hasUniqueValue`; duplicate ids reject
the whole batch; with a unique `objectWriteTraceId` on every input one bad input is reported in
a 207 and the others are written, without them one bad input fails the whole batch (400) and
nothing is written; a rolling 100-per-10-s window (TEN_SECONDLY_ROLLING) and a daily allowance,
with HubSpot's rate-limit headers on every authenticated answer and no Retry-After on 429.

This module holds the handlers; HubSpot's rules and answer shapes are in hubspot_rules.py, the
account's object types in hubspot_objects.py.
"""


from __future__ import annotations

import random
import secrets
import uuid
from datetime import datetime, timezone

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from crm_sync.sandbox.hubspot_objects import PORTAL_ID, ObjectType, object_type
from crm_sync.sandbox.hubspot_rules import (
    as_text, conflict_error, error, input_error, iso, parse_archive_inputs, parse_inputs,
    property_problems,
)
from crm_sync.sandbox.state import SandboxState, bearer_ok, now_ms

CRM = "hubspot"
DAILY_LIMIT = 250_000  # private apps on Free/Starter; override with state.hubspot_daily_limit
_AUTH_MESSAGE = ("Authentication credentials not found. This API supports OAuth 2.0 "
                 "authentication and you can find more details at "
                 "https://developers.hubspot.com/docs/methods/auth/oauth-overview")
_BASE = "/crm/v3/objects/{objectType}"


class _Rejected(Exception):
    """Abort the request's transaction: nothing of it is written; answer with `response`."""

    def __init__(self, response: JSONResponse):
        super().__init__("request rejected")
        self.response = response


class HubSpotAPI:
    """What every HubSpot endpoint shares: auth, the rate limits, the object type, and the
    unique-value index."""

    def __init__(self, state: SandboxState):
        self.state = state

    def admit(self, request: Request) -> tuple[JSONResponse | None, dict[str, str]]:
        """Auth, then the ten-secondly window and the daily allowance. Every request that
        authenticates counts, whatever its answer; its answer carries the limit headers."""
        state = self.state
        if not bearer_ok(request, state.tokens[CRM]):
            issued, late = state.oauth.check(request, CRM)  # OAuth tokens: sandbox/oauth.py
            if issued == "expired":
                return error(401, f"The OAuth token used to make this call expired "
                                  f"{int(late)} second(s) ago.", "EXPIRED_AUTHENTICATION"), {}
            if issued != "valid":
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
            return self.rate_limited("TEN_SECONDLY_ROLLING", headers), headers
        if used_today >= daily_limit:
            return self.rate_limited("DAILY", headers), headers
        state.count(day_counter)
        headers["X-HubSpot-RateLimit-Daily-Remaining"] = str(daily_limit - used_today - 1)
        return None, headers

    def rate_limited(self, policy: str, headers: dict[str, str]) -> JSONResponse:
        # No Retry-After: HubSpot documents none for these two limits.
        self.state.count("rate_limited total")
        return JSONResponse(rate_limit_body(policy), 429, headers=headers)

    @staticmethod
    def object_type_of(request: Request, headers) -> tuple[ObjectType | None, JSONResponse | None]:
        """The object type the path names, or the answer to an unknown one."""
        type_name = request.path_params["objectType"]
        obj = object_type(type_name)
        if obj is None:
            # HubSpot answers an unknown type with a 400 that has no category.
            return None, error(400, f"Unable to infer object type from: {type_name}", None,
                               headers=headers)
        return obj, None

    def admit_object(self, request: Request
                     ) -> tuple[ObjectType | None, dict[str, str], JSONResponse | None]:
        """`admit`, then the path's object type: (type, limit headers, None) or the refusal."""
        denied, headers = self.admit(request)
        if denied:
            return None, headers, denied
        obj, unknown = self.object_type_of(request, headers)
        return obj, headers, unknown

    def owner(self, obj: ObjectType, prop: str, value: str) -> str | None:
        """The record holding `value` in unique property `prop` now (the index may be stale
        after a record changed that value, so the record itself is checked)."""
        value = obj.normalize(prop, value)
        record_id = self.state.db.find_unique(CRM, obj.name, prop, value)
        if record_id is None:
            return None
        record = self.state.db.get(CRM, obj.name, record_id)
        current = (record or {}).get("properties", {}).get(prop)
        return record_id if current is not None and \
            obj.normalize(prop, current) == value else None


class HubSpotBatchHandlers(HubSpotAPI):
    """`POST .../batch/upsert` and `POST .../batch/archive`."""

    def __init__(self, state: SandboxState):
        super().__init__(state)
        self.shuffle = random.Random()  # nosec B311  # orders results, nothing secret

    def routes(self) -> list[Route]:
        return [
            Route(f"{_BASE}/batch/upsert", self.batch_upsert, methods=["POST"]),
            Route(f"{_BASE}/batch/archive", self.batch_archive, methods=["POST"]),
        ]

    @staticmethod
    def check_id_properties(obj: ObjectType, inputs: list[dict], headers) -> JSONResponse | None:
        for entry in inputs:
            prop = entry["idProperty"]
            if prop not in obj.unique:
                return error(400, f"Unable to perform update/upsert by non-unique {obj.type_id} "
                                  f"property {prop}", headers=headers)
        return None

    @staticmethod
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

    def upsert_one(self, obj: ObjectType, entry: dict, ts: int, touched: set[str],
                   headers) -> tuple[dict | None, dict | None]:
        """Write one input; (result, None) or (None, its error). Runs inside the transaction."""
        trace_id = entry.get("objectWriteTraceId")
        id_property, id_value = entry["idProperty"], entry["id"]
        properties = {k: as_text(v) for k, v in entry["properties"].items()}
        problems = property_problems(obj, id_property, id_value, properties)
        if problems:
            return None, input_error(problems, trace_id)
        record_id = self.owner(obj, id_property, id_value)
        if record_id is not None and record_id in touched:
            # Two inputs with different ids resolved to one record (e.g. by email and by
            # crm_sync_id): HubSpot refuses a batch whose inputs resolve to the same record.
            raise _Rejected(duplicate_ids([id_value], headers))
        for prop in sorted(obj.unique - {id_property}):
            value = properties.get(prop)
            holder = self.owner(obj, prop, value) if value else None
            if holder is not None and holder != record_id:
                return None, conflict_error(obj, prop, holder, trace_id)
        result = self.write(obj, record_id, id_property, id_value, properties, ts)
        touched.add(result["id"])
        if trace_id is not None:
            result["objectWriteTraceId"] = trace_id
        return result, None

    def new_record_id(self, obj: ObjectType) -> str:
        # HubSpot record ids are numeric strings (e.g. "12877907025").
        while True:
            candidate = str(10_000_000_000 + secrets.randbelow(90_000_000_000))
            if self.state.db.get(CRM, obj.name, candidate) is None:
                return candidate

    def write(self, obj: ObjectType, record_id: str | None, id_property: str | None,
              id_value: str | None, properties: dict[str, str | None], ts: int) -> dict:
        db, stamp = self.state.db, iso(ts)
        record = db.get(CRM, obj.name, record_id) if record_id else None
        created = record is None
        if created:
            record_id = self.new_record_id(obj)
            record = {"id": record_id, "properties": {"hs_object_id": record_id,
                                                      "createdate": stamp},
                      "createdAt": stamp, "updatedAt": stamp, "archived": False}
        props = record["properties"]
        if id_property is not None:  # None: a single create/update (hubspot_single.py)
            props[id_property] = obj.normalize(id_property, id_value)
        for prop, value in properties.items():
            if value in (None, ""):
                props.pop(prop, None)  # "" clears a value (documented for batch update)
            else:
                props[prop] = obj.normalize(prop, value)
        props[obj.modified_property] = stamp
        record["updatedAt"] = stamp
        db.put(CRM, obj.name, record_id, record, ts)
        for prop in obj.unique:
            if props.get(prop):
                db.set_unique(CRM, obj.name, prop, obj.normalize(prop, props[prop]), record_id)
        return {"id": record_id, "properties": dict(props), "createdAt": record["createdAt"],
                "updatedAt": stamp, "archived": False, "new": created}

    async def batch_upsert(self, request: Request):
        requested = now_ms()
        obj, headers, refused = self.admit_object(request)
        if refused:
            return refused
        inputs, problem = parse_inputs(await request.body())
        if problem:
            return error(400, problem, headers=headers)
        refused = self.check_id_properties(obj, inputs, headers) or \
            self.check_duplicates(obj, inputs, headers)
        if refused:
            return refused
        traces = [entry.get("objectWriteTraceId") for entry in inputs]
        # Multi-status (207) needs a unique objectWriteTraceId on every input, as documented.
        multi_status = all(traces) and len(set(traces)) == len(traces)
        started = ts = now_ms()
        results, errors, touched = [], [], set()
        try:
            with self.state.db.transaction():
                for entry in inputs:
                    result, failure = self.upsert_one(obj, entry, ts, touched, headers)
                    if failure is not None and not multi_status:
                        raise _Rejected(whole_batch_error(failure, headers))
                    (results if result is not None else errors).append(result or failure)
        except _Rejected as rejected:
            return rejected.response
        self.shuffle.shuffle(results)  # HubSpot does not answer in input order
        body = {"status": "COMPLETE", "results": results, "requestedAt": iso(requested),
                "startedAt": iso(started), "completedAt": iso(now_ms()), "links": {}}
        if errors:
            body["numErrors"] = len(errors)
            body["errors"] = errors
        return JSONResponse(body, 207 if errors else 200, headers=headers)

    async def batch_archive(self, request: Request):
        """Archive (delete) records by their HubSpot id. Like HubSpot, it answers 204 with no
        body, also for ids that hold no record (already archived, or never there): archiving
        is idempotent. The sandbox keeps no recycling bin: records and their unique values
        are dropped, so the values can be used by new records at once."""
        obj, headers, refused = self.admit_object(request)
        if refused:
            return refused
        ids, problem = parse_archive_inputs(await request.body())
        if problem:
            return error(400, problem, headers=headers)
        with self.state.db.transaction():
            archived = sum(self.state.db.delete(CRM, obj.name, record_id) for record_id in ids)
        self.state.count("hubspot records archived", archived)
        return Response(status_code=204, headers=headers)


def duplicate_ids(dupes: list[str], headers) -> JSONResponse:
    return error(400, f"Duplicate IDs found in batch input: [{', '.join(dupes)}]. IDs must "
                      f"be unique", context={"ids": dupes}, headers=headers)


def whole_batch_error(failure: dict, headers) -> JSONResponse:
    # Without trace ids one bad input fails the batch; like HubSpot, only the first bad
    # input is described, and the answer does not say which input it was.
    context = {k: v for k, v in failure["context"].items() if k != "objectWriteTraceId"}
    status = 409 if failure["category"] == "CONFLICT" else 400
    return error(status, failure["message"], failure["category"], errors=failure["errors"],
                 context=context or None, headers=headers)


class HubSpotRecordHandlers(HubSpotAPI):
    """`GET .../{objectId}`: read one record, by its id or by a unique property."""

    def routes(self) -> list[Route]:
        return [Route(f"{_BASE}/{{objectId}}", self.read_one, methods=["GET"])]

    async def read_one(self, request: Request):
        obj, headers, refused = self.admit_object(request)
        if refused:
            return refused
        object_id = request.path_params["objectId"]
        id_property = request.query_params.get("idProperty")
        if id_property and id_property not in obj.unique | {"hs_object_id"}:
            return error(400, f"Unable to perform read by non-unique {obj.type_id} property "
                              f"{id_property}", headers=headers)
        record_id = self.owner(obj, id_property, object_id) \
            if id_property and id_property != "hs_object_id" else object_id
        record = self.state.db.get(CRM, obj.name, record_id) if record_id else None
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


def rate_limit_body(policy: str) -> dict:
    """HubSpot's 429 body. Documented example (https://developers.hubspot.com/docs/api/usage-
    details, quoted in https://community.hubspot.com/t5/APIs-Integrations/Hubspot-User-experience/
    m-p/511716): {"status":"error","message":"You have reached your daily limit.",
    "errorType":"RATE_LIMIT","correlationId":"c033cdaa-...","policyName":"DAILY",
    "requestId":"3d3e35b7-..."}; the ten-secondly one (hubspot-api-python#117) says "You have
    reached your ten_secondly_rolling limit." with policyName TEN_SECONDLY_ROLLING and a
    groupName."""
    group = "ten-secondly" if policy == "TEN_SECONDLY_ROLLING" else "daily"
    return {
        "status": "error",
        "message": f"You have reached your {policy.lower()} limit.",
        "errorType": "RATE_LIMIT",
        "correlationId": str(uuid.uuid4()),
        "policyName": policy,
        "groupName": f"publicapi:private-app-api-calls-{group}:{PORTAL_ID}",
    }


def rate_limit_answer(kind: str, retry_after: float) -> Response:
    """The fault injector's 429 in HubSpot's shape (faults.py): "burst" is the ten-secondly
    window, "daily" the daily allowance, with the X-HubSpot-RateLimit-* headers HubSpot sends
    (https://developers.hubspot.com/docs/api/usage-details) at zero remaining. HubSpot documents
    no Retry-After; the injected answer carries `retry_after` anyway (guess, kept so the
    reliability tests can ask for short and for hour-long waits; faults.py drops it when the
    settings say `retry_after: false`)."""
    policy = "TEN_SECONDLY_ROLLING" if kind == "burst" else "DAILY"
    headers = {
        "X-HubSpot-RateLimit-Max": "100",
        "X-HubSpot-RateLimit-Remaining": "0" if kind == "burst" else "99",
        "X-HubSpot-RateLimit-Interval-Milliseconds": "10000",
        "X-HubSpot-RateLimit-Daily": str(DAILY_LIMIT),
        "X-HubSpot-RateLimit-Daily-Remaining": "0" if kind == "daily" else str(DAILY_LIMIT - 1),
        "Retry-After": f"{retry_after:g}",
    }
    return JSONResponse(rate_limit_body(policy), 429, headers=headers)


class HubSpotPropertyHandlers(HubSpotAPI):
    """The properties API (https://developers.hubspot.com/docs/api/crm/properties): the
    object's property definitions, read from its fixture (hubspot_objects.py) as they are."""

    def routes(self) -> list[Route]:
        return [Route("/crm/v3/properties/{objectType}", self.list_properties, methods=["GET"]),
                Route("/crm/v3/properties/{objectType}/{propertyName}", self.read_property,
                      methods=["GET"])]

    async def list_properties(self, request: Request):
        obj, headers, refused = self.admit_object(request)
        if refused:
            return refused
        return JSONResponse({"results": list(obj.definitions)}, headers=headers)

    async def read_property(self, request: Request):
        obj, headers, refused = self.admit_object(request)
        if refused:
            return refused
        name = request.path_params["propertyName"]
        found = next((p for p in obj.definitions if p["name"] == name), None)
        if found is None:
            # GUESS: the message; HubSpot answers an unknown property name with 404.
            return error(404, f"Unable to find property {name} for object type "
                              f"{obj.type_id}", "OBJECT_NOT_FOUND", headers=headers)
        return JSONResponse(found, headers=headers)


def routes(state: SandboxState) -> list[Route]:
    return [*HubSpotBatchHandlers(state).routes(), *HubSpotRecordHandlers(state).routes(),
            *HubSpotPropertyHandlers(state).routes()]
