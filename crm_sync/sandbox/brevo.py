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

This module holds the handlers, one class per endpoint group; Brevo's rules and schemas are in
brevo_rules.py, the work a process does when it completes in brevo_process.py.
"""


from __future__ import annotations

import json
import re
import time

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from crm_sync.sandbox.brevo_process import CRM, Processor, public_record
from crm_sync.sandbox.brevo_rules import (
    BREVO_MAX_BODY_BYTES, DEFAULT_RATE_LIMIT, DEFAULT_WINDOW_SECONDS, MAX_PAGE_SIZE,
    PROCESS_NAMES, SCHEMAS, STANDARD_OBJECTS, delete_request_problem, error, object_type_error,
    rate_limit_headers, rate_limited, request_problem,
)
from crm_sync.sandbox.state import RollingWindow, SandboxState, read_json

_OBJECTS = "/v3/objects/{object_type}"


def default_window() -> RollingWindow:
    """Brevo's limit when the sandbox is given none (a guess, brevo_rules.DEFAULT_RATE_LIMIT)."""
    return RollingWindow(DEFAULT_RATE_LIMIT, DEFAULT_WINDOW_SECONDS)


def rate_limit_answer(kind: str, retry_after: float) -> JSONResponse:
    """The fault injector's 429 in Brevo's shape (faults.py calls it): the errorModel body and
    the x-sib-ratelimit-* headers, limit = the default window's (a guess), remaining 0, reset
    = retry_after; no Retry-After (Brevo documents none)."""
    return rate_limited(kind, DEFAULT_RATE_LIMIT, retry_after)


class BrevoAPI:
    """What every Brevo endpoint shares: the `api-key` check and the account's rate limit."""

    def __init__(self, state: SandboxState):
        self.state = state

    def window(self) -> RollingWindow:
        """The account's limit: the one the sandbox was started with, else the default."""
        window = self.state.rate_limits.get(CRM)
        if window is None:
            window = self.state.rate_limits[CRM] = default_window()
        return window

    @staticmethod
    def limit_headers(window: RollingWindow, remaining: int, wait: float) -> dict[str, str]:
        now = time.monotonic()
        if wait <= 0 and window.stamps:
            wait = window.window_seconds - (now - window.stamps[0])
        return rate_limit_headers(window.max_requests, remaining, wait)

    def endpoint(self, handler):
        """Auth, then the account's rate limit; the documented rate-limit headers on every
        answer to an authenticated request ("all rate-limited endpoints include" them)."""
        state = self.state

        async def guarded(request: Request):
            if request.headers.get("api-key") != state.tokens[CRM]:
                return error(401, "unauthorized", "Key not found")
            window = self.window()
            admitted, remaining, wait = window.admit()
            headers = self.limit_headers(window, remaining, wait)
            if not admitted:
                state.count("rate_limited total")
                kind = "burst" if window.window_seconds < 3600 else "daily"
                return rate_limited(kind, window.max_requests, wait)
            response = await handler(request)
            response.headers.update(headers)
            return response
        return guarded


class BrevoBatchHandlers(BrevoAPI):
    """`POST .../batch/upsert` and `.../batch/delete`: accepted at once (202), done later by
    the process they start."""

    def routes(self) -> list[Route]:
        return [
            Route(f"{_OBJECTS}/batch/upsert", self.endpoint(self.upsert), methods=["POST"]),
            Route(f"{_OBJECTS}/batch/delete", self.endpoint(self.batch_delete),
                  methods=["POST"]),
        ]

    async def upsert(self, request: Request):
        state = self.state
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

    async def batch_delete(self, request: Request):
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
        process_id = self.state.db.new_process(CRM, {
            "crm": CRM, "kind": "delete", "object_type": object_type,
            "identifiers": body["identifiers"], "status": "queued", "polls": 0,
            "rejected": [], "written": 0, "fails": self.state.faults.brevo_process_fails(),
        })
        return JSONResponse({"message": "Batch request accepted for deletion of object records",
                             "processId": process_id}, 202)


class BrevoProcessHandlers(BrevoAPI):
    """`GET /v3/processes/{processId}`: each poll moves the process on; the last applies it."""

    def routes(self) -> list[Route]:
        return [Route("/v3/processes/{process_id}", self.endpoint(self.process),
                      methods=["GET"])]

    def advance(self, process_id: int, data: dict) -> dict:
        """One poll: queued on the first, in_process until `brevo_process_steps` polls have
        been seen, then completed (writes applied) or failed (nothing written)."""
        state = self.state
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
            else:
                self.complete(data)
            state.db.update_process(process_id, data)
        return data

    def complete(self, data: dict) -> None:
        """Apply a process's delete or upsert; its outcome goes into `data`."""
        processor = Processor(self.state, data["object_type"])
        if data.get("kind") == "delete":
            data["written"], data["rejected"] = processor.delete_all(data["identifiers"])
            data["status"] = "completed"
            self.state.count("brevo records deleted", data["written"])
            return
        data["rejected"] = processor.apply_all(data["records"])
        data["written"] = len(data["records"]) - len(data["rejected"])
        data["status"] = "completed"
        self.state.count("brevo records rejected", len(data["rejected"]))

    async def process(self, request: Request):
        raw_id = request.path_params["process_id"]
        if not raw_id.isdigit():
            return error(400, "invalid_parameter", "processId must be an integer")
        process_id = int(raw_id)
        data = self.state.db.get_process(process_id)
        if data is None or data.get("crm") != CRM:
            return error(404, "document_not_found", "Process ID not found")
        data = self.advance(process_id, data)
        return JSONResponse({"id": process_id, "name": PROCESS_NAMES[data.get("kind", "upsert")],
                             "status": data["status"]})


def int_param(request: Request, name: str, low: int, high: int | None):
    """A query parameter as an integer in [low, high], or the 400 that refuses it."""
    raw = request.query_params.get(name)
    if raw is None:
        return error(400, "missing_parameter", f"{name} is required")
    if not re.fullmatch(r"\d+", raw) or int(raw) < low or (high is not None and int(raw) > high):
        bounds = f"between {low} and {high}" if high is not None else f">= {low}"
        return error(400, "out_of_range", f"{name} must be an integer {bounds}")
    return int(raw)


class BrevoRecordHandlers(BrevoAPI):
    """`GET .../records`: one page of an object's records, in creation order."""

    def routes(self) -> list[Route]:
        return [Route(f"{_OBJECTS}/records", self.endpoint(self.records), methods=["GET"])]

    async def records(self, request: Request):
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
        db = self.state.db
        window = db.page(CRM, object_type, limit, (page - 1) * limit, descending=sort == "desc")
        return JSONResponse({"count": db.count(CRM, object_type), "records": [
            public_record(r, association == "true") for r in window]})


class BrevoSandboxHandlers(BrevoAPI):
    """Sandbox-only helpers under /_sandbox/brevo/: a process's details, runtime settings."""

    def routes(self) -> list[Route]:
        return [
            Route("/_sandbox/brevo/processes/{process_id:int}", self.process_details),
            Route("/_sandbox/brevo/settings", self.settings, methods=["GET", "POST"]),
        ]

    async def process_details(self, request: Request):
        data = self.state.db.get_process(int(request.path_params["process_id"]))
        if data is None or data.get("crm") != CRM:
            return JSONResponse({"message": "no such Brevo process"}, 404)
        return JSONResponse({k: v for k, v in data.items() if k not in ("records",
                                                                         "identifiers")})

    async def settings(self, request: Request):
        state = self.state
        if request.method == "POST":
            body = await read_json(request)
            if not isinstance(body, dict):
                return JSONResponse({"message": "expected a JSON object"}, 400)
            if "process_steps" in body:
                state.brevo_process_steps = max(0, int(body["process_steps"]))
            if "rate_limit" in body:  # null: back to the default (guessed) limit
                limit = body["rate_limit"]
                state.rate_limits[CRM] = RollingWindow(
                    int(limit), float(body.get("window_seconds", 1.0))) if limit else \
                    default_window()
        window = self.window()
        return JSONResponse({
            "process_steps": state.brevo_process_steps,
            "rate_limit": window.max_requests,
            "window_seconds": window.window_seconds,
        })


def routes(state: SandboxState) -> list[Route]:
    return [
        *BrevoBatchHandlers(state).routes(),
        *BrevoRecordHandlers(state).routes(),
        *BrevoProcessHandlers(state).routes(),
        *BrevoSandboxHandlers(state).routes(),
    ]
