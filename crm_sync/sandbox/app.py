"""The CRM sandbox: one ASGI app that speaks the four CRMs' bulk APIs, each under its own path.

    crm-sync sandbox --port 8765          # serve it
    create_app(db_path=...)               # import it (tests run it under uvicorn)
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse

from crm_sync.sandbox import (admin, brevo, hubspot, hubspot_associations, hubspot_single, oauth,
                              salesforce, salesforce_bulk, superleap, superleap_objects)
from crm_sync.sandbox.db import SandboxDB
from crm_sync.sandbox.state import (
    DEFAULT_TOKENS, TOKEN_ENV, RollingWindow, SandboxState, tokens_from_env,
)

# TOKEN_ENV and DEFAULT_TOKENS live in state.py; the CLI, the demo and the tests import them
# from here.
__all__ = ["DEFAULT_TOKENS", "TOKEN_ENV", "create_app"]


def create_app(
    db_path: str = ":memory:",
    tokens: dict[str, str] | None = None,
    hubspot_rate_limit: int | None = 100,
    hubspot_window_seconds: float = 10.0,
    brevo_rate_limit: int | None = None,
    superleap_rate_limit: int | None = None,
    salesforce_daily_limit: int = 100_000,
    brevo_process_steps: int = 2,
    token_lifetime: float | None = None,
) -> Starlette:
    """Build the sandbox app. Rate limits of None switch a CRM's limit off (benchmarks).
    `token_lifetime`: seconds the OAuth access tokens it issues stay valid (sandbox/oauth.py;
    default: Salesforce 2 hours, HubSpot 30 minutes)."""
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
    if token_lifetime is not None:
        state.oauth.configure({"token_lifetime": token_lifetime})
    routes = [
        *admin.routes(state),
        *oauth.routes(state),
        *superleap.routes(state),
        *superleap_objects.routes(state),
        *brevo.routes(state),
        *hubspot.routes(state),
        *hubspot_single.routes(state),  # single-object create and update
        *hubspot_associations.routes(state),  # associations v4
        *salesforce.routes(state),
        *salesforce_bulk.routes(state),  # Bulk API 2.0 ingest jobs
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
        if len(parts) == 5:  # one record: GET, or a single update (PATCH)
            return "hubspot object"
        return "hubspot " + "/".join(parts[4:]) if len(parts) > 4 else "hubspot objects"
    if path.startswith("/crm/v4/associations/"):
        return "hubspot associations " + "/".join(parts[5:])
    if path.startswith("/crm/v4/objects/"):
        return "hubspot associations read"
    if path.startswith("/services/data/"):
        return "salesforce " + "/".join(parts[3:4])
    return path
