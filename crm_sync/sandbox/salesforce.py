"""Salesforce REST API: the sObject Collections upsert, as ../shared/crm-docs describe it, plus
the few REST resources the official SDK (simple-salesforce) reaches for.

    PATCH /services/data/vXX.X/composite/sobjects/{SObject}/{ExternalIdField}   (v46.0+)
          {"allOrNone": false, "records": [{"attributes": {"type": "Account"}, ...}]}
      ->  200 [{"id", "success", "errors": [{"statusCode", "message", "fields"}], "created"}]
    DELETE /services/data/vXX.X/composite/sobjects?ids=<id>,<id>[&allOrNone=false]  (v42.0+)
      ->  200 [{"id", "success", "errors"}]   (DeleteResults, in the order of the ids)

Every authenticated request spends one unit of the org's daily allowance (a rolling 24 hours,
kept in the sandbox database so a restart or a second process sees the same usage) and every
answer to it carries `Sforce-Limit-Info: api-usage=N/M`; once the allowance is spent the answer
is 403 REQUEST_LIMIT_EXCEEDED. docs/sandbox/salesforce.md lists what is emulated and every
strict choice made where Salesforce's documentation is silent.

This module holds the request handlers, one class per endpoint group. The org (records, index,
allowance, the collections operations) is in salesforce_org.py, the request rules and error
shapes in salesforce_rules.py, the sObject types and record ids in salesforce_schema.py.
"""


from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from crm_sync.sandbox.salesforce_org import CRM, SCHEMA_OBJECT, Plan, Salesforce
from crm_sync.sandbox.salesforce_relations import relationships_view
from crm_sync.sandbox.salesforce_rules import (
    LATEST_VERSION, MAX_RECORDS, MIN_COLLECTIONS_VERSION, MIN_UPSERT_VERSION, NOT_FOUND,
    OLDEST_VERSION, RequestError, check_version, collection_body, parse_body,
    record_error, required_errors, version_label,
)
from crm_sync.sandbox.salesforce_schema import (  # noqa: F401  # case_safe_suffix: tests use it
    BUILTIN_SOBJECTS, SObjectType, case_safe_suffix, describe, sobject_from_dict,
)
from crm_sync.sandbox.state import SandboxState, bearer_ok, now_ms

_BASE = "/services/data/v{version}"
_COLLECTION = f"{_BASE}/composite/sobjects/{{sobject}}/{{field}}"


class SalesforceAPI:
    """What every REST resource shares: auth, the daily allowance, the version, the content
    type and the error shape (`api` wraps a resource's `(request, body) -> (status, payload)`)."""

    def __init__(self, state: SandboxState, org: Salesforce):
        self.state, self.org = state, org

    def respond(self, body, status: int = 200, used: int | None = None) -> Response:
        response = JSONResponse(body, status)
        if used is not None:
            response.headers["Sforce-Limit-Info"] = \
                f"api-usage={used}/{self.state.salesforce_daily_limit}"
        return response

    def api(self, handler, minimum_version: int = OLDEST_VERSION, json_body: bool = False):
        """An endpoint that checks the session, spends one request of the allowance, checks the
        version (and reads a JSON body), then runs `handler`."""

        async def endpoint(request: Request) -> Response:
            if not bearer_ok(request, self.state.tokens[CRM]) and \
                    self.state.oauth.check(request, CRM)[0] != "valid":  # sandbox/oauth.py
                # No org is known without a valid session, so nothing is counted or reported.
                response = self.respond([{"message": "Session expired or invalid",
                                          "errorCode": "INVALID_SESSION_ID"}], 401)
                response.headers["WWW-Authenticate"] = 'Token'
                return response
            admitted, used = self.org.spend()
            if not admitted:
                self.state.count("salesforce limit_exceeded total")
                return self.respond([{"message": "TotalRequests Limit exceeded.",
                                      "errorCode": "REQUEST_LIMIT_EXCEEDED"}], 403, used)
            try:
                check_version(request.path_params["version"], minimum_version)
                body = await read_body(request) if json_body else None
                status, payload = handler(request, body)
            except RequestError as exc:
                return self.respond(exc.body(), exc.status, used)
            return self.respond(payload, status, used)

        return endpoint


async def read_body(request: Request):
    """A JSON request body, or the 415 / JSON_PARSER_ERROR Salesforce answers."""
    kind = request.headers.get("content-type", "application/json")
    if "json" not in kind.lower():
        raise RequestError(415, "UNSUPPORTED_MEDIA_TYPE",
                           f"Content-Type header specified in HTTP request is not supported: "
                           f"{kind}")
    return parse_body(await request.body())


class SalesforceCollectionHandlers(SalesforceAPI):
    """sObject Collections: upsert by external id (PATCH) and delete by record ids (DELETE)."""

    def routes(self) -> list[Route]:
        return [
            Route(_COLLECTION, self.api(self.collections_upsert, MIN_UPSERT_VERSION,
                                        json_body=True), methods=["PATCH"]),
            Route(_COLLECTION, self.method_not_allowed, methods=["GET", "POST", "PUT", "DELETE"]),
            Route(f"{_BASE}/composite/sobjects",
                  self.api(self.collections_delete, MIN_COLLECTIONS_VERSION), methods=["DELETE"]),
        ]

    def collections_upsert(self, request: Request, body):
        sobj = self.org.sobject(request.path_params["sobject"])
        ext = self.org.external_id_field(sobj, request.path_params["field"])
        records, all_or_none = collection_body(body, sobj)
        return 200, self.org.upsert_collection(sobj, ext, records, all_or_none)

    def collections_delete(self, request: Request, body):
        raw = request.query_params.get("ids")
        ids = [i.strip() for i in (raw or "").split(",") if i.strip()]
        if not ids:
            raise RequestError(400, "MISSING_ARGUMENT", "ids: a list of record ids is required")
        if len(ids) > MAX_RECORDS:
            raise RequestError(400, "EXCEEDED_ID_LIMIT", "record limit reached. cannot submit "
                                                         f"more than {MAX_RECORDS} records into "
                                                         "this call")
        flag = request.query_params.get("allOrNone", "false").lower()
        if flag not in ("true", "false"):
            raise RequestError(400, "INVALID_QUERY_PARAMETER_VALUE",
                               f"allOrNone must be true or false, not {flag!r}")
        return 200, self.org.delete_collection(ids, flag == "true")

    @staticmethod
    async def method_not_allowed(request: Request):
        return JSONResponse([{"errorCode": "METHOD_NOT_ALLOWED",
                              "message": f"HTTP Method '{request.method}' not allowed. "
                                         "Allowed are PATCH"}], 405)


class SalesforceRecordHandlers(SalesforceAPI):
    """One record: create (POST), read by id (GET), read or upsert by external id."""

    def routes(self) -> list[Route]:
        create = self.api(self.create, json_body=True)
        by_value = f"{_BASE}/sobjects/{{sobject}}/{{field}}/{{value}}"
        return [
            # Before the record routes: `describe` is not a record id.
            Route(f"{_BASE}/sobjects/{{sobject}}/describe", self.api(self.describe),
                  methods=["GET"]),
            Route(f"{_BASE}/sobjects/{{sobject}}/describe/", self.api(self.describe),
                  methods=["GET"]),
            Route(f"{_BASE}/sobjects/{{sobject}}", create, methods=["POST"]),
            Route(f"{_BASE}/sobjects/{{sobject}}/", create, methods=["POST"]),
            Route(f"{_BASE}/sobjects/{{sobject}}/{{record_id}}", self.api(self.get_record),
                  methods=["GET"]),
            Route(by_value, self.api(self.by_external_id), methods=["GET"]),
            Route(by_value, self.api(self.by_external_id, json_body=True), methods=["PATCH"]),
        ]

    def create(self, request: Request, body):
        org = self.org
        sobj = org.sobject(request.path_params["sobject"])
        changes = org.parse_record(sobj, body, in_collection=False)
        with self.state.db.transaction():
            plan = Plan(changes=changes, errors=org.record_errors(sobj, changes))
            if not plan.errors:
                plan.errors = required_errors(sobj, changes, creating=True) + \
                    org.unique_conflicts(sobj, changes, None)
            if plan.errors:
                raise record_error(plan.errors)
            rid, _ = org.write(sobj, plan, now_ms())
        return 201, {"id": rid, "success": True, "errors": []}

    def describe(self, request: Request, body):
        """sObject Describe: the type's fields and their properties (from its fixture)."""
        sobj = self.org.sobject(request.path_params["sobject"])
        return 200, describe(sobj, request.path_params["version"])

    def get_record(self, request: Request, body):
        sobj = self.org.sobject(request.path_params["sobject"])
        record = self.state.db.get(CRM, sobj.name, request.path_params["record_id"])
        if record is None:
            raise RequestError(404, "NOT_FOUND", NOT_FOUND)
        return 200, self.org.as_resource(sobj, record, request.path_params["version"])

    def by_external_id(self, request: Request, body):
        org = self.org
        sobj = org.sobject(request.path_params["sobject"])
        ext = org.external_id_field(sobj, request.path_params["field"])
        value = request.path_params["value"]
        version = request.path_params["version"]
        if request.method == "GET":
            ids = org.matches(sobj, ext, value)
            if not ids:
                raise RequestError(404, "NOT_FOUND", "Provided external ID field does not exist"
                                                     f" or is not accessible: {value}")
            if len(ids) > 1:
                return 300, [f"/services/data/v{version}/sobjects/{sobj.name}/{i}" for i in ids]
            record = self.state.db.get(CRM, sobj.name, ids[0])
            return 200, org.as_resource(sobj, record, version)
        return self.upsert_one(sobj, ext, value, body, version)

    def upsert_one(self, sobj: SObjectType, ext: str, value: str, body, version: str):
        org = self.org
        changes = org.parse_record(sobj, body, in_collection=False)
        # "Do not specify Id or an external ID field in the request body or an error is
        # generated."
        if "Id" in changes or ext in changes:
            named = "Id" if "Id" in changes else ext
            raise RequestError(400, "INVALID_FIELD", f"{named} must not be set in the request "
                                                     "body of an upsert by external ID",
                               [named])
        plan = Plan(changes={**changes, ext: value}, ext_value=value)
        with self.state.db.transaction():
            plan.errors = org.record_errors(sobj, plan.changes)
            if not plan.errors:
                ids = org.matches(sobj, ext, value)
                if len(ids) > 1:  # "matched multiple times, then a 300 error is reported"
                    return 300, [f"/services/data/v{version}/sobjects/{sobj.name}/{i}"
                                 for i in ids]
                org.plan_match(sobj, ext, plan)
            if plan.errors:
                raise record_error(plan.errors)
            rid, created = org.write(sobj, plan, now_ms())
        return (201 if created else 200), {"id": rid, "success": True, "errors": [],
                                            "created": created}


class SalesforceOrgHandlers(SalesforceAPI):
    """The org's own resources: the API versions and the limits."""

    def routes(self) -> list[Route]:
        return [
            Route("/services/data", self.versions, methods=["GET"]),
            Route("/services/data/", self.versions, methods=["GET"]),
            Route(f"{_BASE}/limits", self.api(self.limits), methods=["GET"]),
            Route(f"{_BASE}/limits/", self.api(self.limits), methods=["GET"]),
        ]

    @staticmethod
    async def versions(request: Request):
        # The versions resource needs no session and costs no API request.
        return JSONResponse([
            {"label": version_label(v), "url": f"/services/data/v{v}.0", "version": f"{v}.0"}
            for v in range(OLDEST_VERSION, LATEST_VERSION + 1)])

    def limits(self, request: Request, body):
        used, limit = self.org.usage(), self.state.salesforce_daily_limit
        return 200, {"DailyApiRequests": {"Max": limit, "Remaining": max(limit - used, 0)}}


class SalesforceSchemaHandlers(SalesforceAPI):
    """Sandbox admin: list the sObject types, register one (a custom object, say)."""

    def routes(self) -> list[Route]:
        return [Route("/_sandbox/salesforce/sobjects", self.register, methods=["GET", "POST"]),
                Route("/_sandbox/salesforce/relationships/{sobject}", self.relationships,
                      methods=["GET"])]

    async def relationships(self, request: Request):
        """Each record of an sObject type with its parents: per relationship name, the
        reference field, the parent's Id, type and external id values (None: no parent)."""
        try:
            sobj = self.org.sobject(request.path_params["sobject"])
        except RequestError as exc:
            return JSONResponse(exc.body(), exc.status)
        rows = [{"Id": r["Id"], **{n: r.get(n) for n, f in sobj.fields.items() if f.external_id},
                 "relationships": relationships_view(self.org, sobj, r)}
                for r in self.state.db.list(CRM, sobj.name)]
        return JSONResponse({"sobject": sobj.name, "count": len(rows), "records": rows})

    async def register(self, request: Request):
        db = self.state.db
        if request.method == "GET":
            names = sorted(BUILTIN_SOBJECTS[k].name for k in BUILTIN_SOBJECTS)
            names += [d["name"] for d in db.list(CRM, SCHEMA_OBJECT)]
            return JSONResponse({"sobjects": names})
        try:
            data = json.loads(await request.body())
            sobj = sobject_from_dict(data)
        except (ValueError, KeyError, TypeError) as exc:
            return JSONResponse({"message": f"invalid sObject type: {exc}"}, 400)
        if sobj.name.lower() in BUILTIN_SOBJECTS:
            return JSONResponse({"message": f"{sobj.name} is built in"}, 400)
        db.put(CRM, SCHEMA_OBJECT, sobj.name, data, now_ms())
        return JSONResponse({"registered": sobj.name})


# -- fault injection in Salesforce's shape (crm_sync/sandbox/faults.py calls this) --------------
# Salesforce's core REST API has no 429: "REQUEST_LIMIT_EXCEEDED ... 403 ... the API request
# limit is exceeded" (REST API Developer Guide, Status Codes and Error Responses,
# https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/errorcodes.htm,
# REFERENCE.md §4). The daily allowance answers "TotalRequests Limit exceeded." (this module's
# own allowance, above); the concurrent long-running request limit (25 requests of 20 s or
# more per org) answers with the same code and "ConcurrentRequests (Concurrent API Requests)
# Limit exceeded" (Salesforce Help, knowledge article 000389067,
# https://help.salesforce.com/s/articleView?id=000389067&type=1). Neither carries a
# Retry-After header: Salesforce sends none (REFERENCE.md §4), so `retry_after` is unused.
# Guess: the injected answers carry no Sforce-Limit-Info (no request was counted).
RATE_LIMIT_MESSAGES = {"daily": "TotalRequests Limit exceeded.",
                       "burst": "ConcurrentRequests (Concurrent API Requests) Limit exceeded."}


def rate_limit_answer(kind: str, retry_after: float) -> Response:
    """Salesforce's answer to a request over a limit: 403 REQUEST_LIMIT_EXCEEDED, `kind`
    "daily" (the API request allowance) or "burst" (the concurrent long-running requests)."""
    return JSONResponse([{"message": RATE_LIMIT_MESSAGES[kind],
                          "errorCode": "REQUEST_LIMIT_EXCEEDED"}], 403)


def routes(state: SandboxState) -> list[Route]:
    org = Salesforce(state)
    return [
        *SalesforceOrgHandlers(state, org).routes(),
        *SalesforceCollectionHandlers(state, org).routes(),
        *SalesforceRecordHandlers(state, org).routes(),
        *SalesforceSchemaHandlers(state, org).routes(),
    ]
