"""The sandbox's admin API under /_sandbox/: inspect records, reset, counters, fault injection.

No auth: the sandbox binds to 127.0.0.1 and this API is for the machine's own tests and users.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from crm_sync.sandbox.state import SandboxState, read_json


class AdminHandlers:
    """`/_sandbox/health`, `records`, `associations`, `reset`, `stats`, `faults` and `limits`."""

    def __init__(self, state: SandboxState):
        self.state = state

    def routes(self) -> list[Route]:
        return [
            Route("/_sandbox/health", self.health),
            Route("/_sandbox/records/{crm}/{object}", self.records),
            Route("/_sandbox/associations/{crm}/{object}", self.associations),
            Route("/_sandbox/reset", self.reset, methods=["POST"]),
            Route("/_sandbox/stats", self.stats),
            Route("/_sandbox/faults", self.faults, methods=["GET", "POST"]),
            Route("/_sandbox/limits", self.limits, methods=["POST"]),
        ]

    @staticmethod
    async def health(request: Request):
        return JSONResponse({"ok": True})

    async def records(self, request: Request):
        crm, obj = request.path_params["crm"], request.path_params["object"]
        rows = self.state.db.list(crm, obj)
        return JSONResponse({"crm": crm, "object": obj, "count": len(rows), "records": rows})

    async def associations(self, request: Request):
        """The links stored from an object's records (HubSpot associations), in both
        directions as stored: ?id=<record id> and ?to=<object> narrow them."""
        crm, obj = request.path_params["crm"], request.path_params["object"]
        rows = self.state.db.links(crm, obj, request.query_params.get("id"),
                                   request.query_params.get("to"))
        links = [{"from_id": f, "to_object": o, "to_id": t, "category": c, "type_id": i}
                 for f, o, t, c, i in rows]
        return JSONResponse({"crm": crm, "object": obj, "count": len(links), "links": links})

    async def reset(self, request: Request):
        self.state.db.reset()
        self.state.faults.configure()
        self.state.oauth.reset()
        for window in self.state.rate_limits.values():
            if window is not None:
                window.stamps.clear()
        return JSONResponse({"reset": True})

    async def stats(self, request: Request):
        return JSONResponse({"counters": self.state.db.counters(),
                             "faults": self.state.faults.describe()})

    async def faults(self, request: Request):
        if request.method == "GET":
            return JSONResponse(self.state.faults.describe())
        body = await read_json(request)
        if not isinstance(body, dict):
            return JSONResponse({"message": "expected a JSON object of fault settings"}, 400)
        try:
            self.state.faults.configure(**body)
        except (TypeError, ValueError) as exc:
            return JSONResponse({"message": str(exc)}, 400)
        return JSONResponse(self.state.faults.describe())

    async def limits(self, request: Request):
        # Adjust limits at run time, e.g. {"salesforce_daily_limit": 50}.
        state = self.state
        body = await read_json(request) or {}
        if "salesforce_daily_limit" in body:
            state.salesforce_daily_limit = int(body["salesforce_daily_limit"])
        if "superleap_max_records" in body:
            state.superleap_max_records = int(body["superleap_max_records"])
        return JSONResponse({"salesforce_daily_limit": state.salesforce_daily_limit,
                             "superleap_max_records": state.superleap_max_records})


def routes(state: SandboxState) -> list[Route]:
    return AdminHandlers(state).routes()
