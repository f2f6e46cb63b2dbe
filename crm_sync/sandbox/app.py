"""The CRM sandbox: one ASGI app that speaks the four CRMs' bulk APIs, each under its own path.

    crm-sync sandbox --port 8765          # serve it
    create_app(db_path=...)               # import it (tests run it under uvicorn)
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse

from crm_sync.sandbox.db import SandboxDB
from crm_sync.sandbox.faults import FaultInjector

# Env var -> the token each emulated CRM accepts. The connectors read the same variables,
# so a shell that exports them configures both sides.
TOKEN_ENV = {
    "superleap": "SUPERLEAP_TOKEN",
    "brevo": "BREVO_API_KEY",
    "hubspot": "HUBSPOT_TOKEN",
    "salesforce": "SALESFORCE_TOKEN",
}
DEFAULT_TOKENS = {crm: f"sandbox-{crm}-token" for crm in TOKEN_ENV}


def tokens_from_env() -> dict[str, str]:
    return {crm: os.environ.get(env) or DEFAULT_TOKENS[crm] for crm, env in TOKEN_ENV.items()}


@dataclass
class RollingWindow:
    """A rolling-window request limit (HubSpot's TEN_SECONDLY_ROLLING, for instance)."""

    max_requests: int
    window_seconds: float
    stamps: deque = field(default_factory=deque)

    def admit(self, now: float | None = None) -> tuple[bool, int, float]:
        """(admitted, remaining after this request, seconds until a slot frees)."""
        now = time.monotonic() if now is None else now
        while self.stamps and now - self.stamps[0] >= self.window_seconds:
            self.stamps.popleft()
        if len(self.stamps) >= self.max_requests:
            wait = self.window_seconds - (now - self.stamps[0])
            return False, 0, max(wait, 0.0)
        self.stamps.append(now)
        return True, self.max_requests - len(self.stamps), 0.0


@dataclass
class SandboxState:
    db: SandboxDB
    tokens: dict[str, str]
    org: str = "g1koYv"
    # Per-CRM limits; None = not enforced. HubSpot defaults to its documented 100 per 10 s.
    rate_limits: dict[str, RollingWindow | None] = field(default_factory=dict)
    salesforce_daily_limit: int = 100_000
    superleap_max_records: int = 1000
    brevo_process_steps: int = 2  # polls a process spends queued / in_process before completing
    faults: FaultInjector = field(default_factory=FaultInjector)

    def count(self, name: str, by: int = 1) -> None:
        self.db.bump(name, by)


def now_ms() -> int:
    return int(time.time() * 1000)


async def read_json(request: Request):
    """The body as JSON, or None when it is not JSON (each CRM answers that in its own shape)."""
    raw = await request.body()
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None


def bearer_ok(request: Request, token: str) -> bool:
    return request.headers.get("authorization", "") == f"Bearer {token}"


def create_app(
    db_path: str = ":memory:",
    tokens: dict[str, str] | None = None,
    hubspot_rate_limit: int | None = 100,
    hubspot_window_seconds: float = 10.0,
    brevo_rate_limit: int | None = None,
    superleap_rate_limit: int | None = None,
    salesforce_daily_limit: int = 100_000,
    brevo_process_steps: int = 2,
) -> Starlette:
    """Build the sandbox app. Rate limits of None switch a CRM's limit off (benchmarks)."""
    from crm_sync.sandbox import admin, brevo, hubspot, salesforce, superleap

    state = SandboxState(
        db=SandboxDB(db_path),
        tokens={**tokens_from_env(), **(tokens or {})},
        rate_limits={
            "hubspot": RollingWindow(hubspot_rate_limit, hubspot_window_seconds)
            if hubspot_rate_limit else None,
            "brevo": RollingWindow(brevo_rate_limit, 1.0) if brevo_rate_limit else None,
            "superleap": RollingWindow(superleap_rate_limit, 1.0) if superleap_rate_limit else None,
        },
        salesforce_daily_limit=salesforce_daily_limit,
        brevo_process_steps=brevo_process_steps,
    )
    routes = [
        *admin.routes(state),
        *superleap.routes(state),
        *brevo.routes(state),
        *hubspot.routes(state),
        *salesforce.routes(state),
    ]
    app = Starlette(routes=routes, exception_handlers={404: _not_found, 405: _not_allowed})
    app.state.sandbox = state
    app.add_middleware(FaultMiddlewareShim, state=state)
    return app


async def _not_found(request: Request, exc) -> JSONResponse:
    return JSONResponse({"message": f"no such sandbox endpoint: {request.url.path}"}, 404)


async def _not_allowed(request: Request, exc) -> JSONResponse:
    return JSONResponse({"message": f"method {request.method} not allowed here"}, 405)


class FaultMiddlewareShim:
    """Counts every CRM request and lets the fault injector answer some of them."""

    def __init__(self, app, state: SandboxState):
        self.app, self.state = app, state

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"].startswith("/_sandbox"):
            return await self.app(scope, receive, send)
        self.state.count(f"requests {scope['method']} {_route_name(scope['path'])}")
        self.state.count("requests total")
        if await self.state.faults.maybe_inject(scope, receive, send, self.state, app=self.app):
            return
        return await self.app(scope, receive, send)


def _route_name(path: str) -> str:
    # Group counters by CRM and endpoint kind, not by object/process id.
    parts = path.strip("/").split("/")
    if path.startswith("/api/v1/org/objects/"):
        return f"superleap {parts[-1]}"
    if path.startswith("/v3/objects/"):
        return "brevo " + ("/".join(parts[-2:]) if len(parts) > 4 and parts[-2] == "batch"
                           else "objects")
    if path.startswith("/v3/processes/"):
        return "brevo processes"
    if path.startswith("/crm/v3/objects/"):
        return "hubspot " + "/".join(parts[4:]) if len(parts) > 4 else "hubspot objects"
    if path.startswith("/services/data/"):
        return "salesforce " + "/".join(parts[3:4])
    return path
