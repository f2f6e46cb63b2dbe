"""Fault injection: answer a share of CRM requests the way a bad network or CRM would.

Off by default. Set through the admin API (`POST /_sandbox/faults`) with a seed, so a failing
reliability run can be replayed exactly:

    {"seed": 7, "rate_429": 0.05, "rate_500": 0.02, "rate_503": 0.02, "rate_delay": 0.01,
     "delay_seconds": 40, "rate_drop": 0.01, "rate_truncated": 0.01, "rate_non_json": 0.01,
     "retry_after": true, "brevo_failed_processes": 0.0}

The faults above answer before the CRM logic runs: nothing is written. The `*_after_commit`
faults are the dangerous kind: the CRM endpoint processes the request completely (its
transaction commits), then the answer is lost (`rate_drop_after_commit`: the connection drops),
spoiled (`rate_truncated_after_commit`: half of the real body) or late
(`rate_delay_after_commit`: the real answer after `delay_seconds`, past a short client timeout).

`rate_echo_credentials` answers like a gateway that repeats the request's credentials in its
error body (the `Authorization` and `api-key` headers), with status `echo_credentials_status`
(default 400; 200 gives a success status with a body no CRM client can read), on the requests
whose path contains `echo_credentials_path` (default: every request). A 429 with a long
`retry_after_seconds` (3600) is a CRM asking the client to come back in an hour.

Rate-limit faults answer in the shape of the CRM the request is for: `rate_429` is the CRM's
short-window ("burst") limit, `rate_429_daily` its daily allowance. The answer comes from the
CRM's sandbox module (chosen by the request path), which provides

    def rate_limit_answer(kind: str, retry_after: float) -> starlette.responses.Response

with `kind` "burst" or "daily" and `retry_after` the configured `retry_after_seconds`. A module
without it gets the generic answer below. When `retry_after` is false in the settings, a
Retry-After header the CRM's answer carries is removed (some CRMs send none anyway).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import random
from dataclasses import asdict, dataclass, field

# New kinds go at the end: a seed keeps giving the same faults for settings that predate them.
KINDS = ("429", "500", "503", "delay", "drop", "truncated", "non_json",
         "drop_after_commit", "truncated_after_commit", "delay_after_commit", "echo_credentials",
         "429_daily")

# Which sandbox module plays the CRM a request path belongs to (first matching prefix).
CRM_PATHS = (("/crm/", "hubspot"), ("/services/", "salesforce"), ("/v3/", "brevo"),
             ("/api/", "superleap"))
RATE_LIMIT_KINDS = {"429": "burst", "429_daily": "daily"}


@dataclass
class FaultConfig:
    seed: int = 0
    rate_429: float = 0.0
    rate_500: float = 0.0
    rate_503: float = 0.0
    rate_delay: float = 0.0
    rate_drop: float = 0.0
    rate_truncated: float = 0.0
    rate_non_json: float = 0.0
    rate_drop_after_commit: float = 0.0  # processed and committed, then the connection drops
    rate_truncated_after_commit: float = 0.0  # processed and committed, half of the body sent
    rate_delay_after_commit: float = 0.0  # processed and committed, answered delay_seconds later
    delay_seconds: float = 40.0
    retry_after: bool = True  # whether injected 429s carry a Retry-After header
    retry_after_seconds: int = 1
    brevo_failed_processes: float = 0.0  # share of Brevo processes that end `failed`
    rate_echo_credentials: float = 0.0  # an error body that repeats the request's credentials
    echo_credentials_status: int = 400
    echo_credentials_path: str = ""  # only requests whose path contains this are echoed
    rate_429_daily: float = 0.0  # the CRM's daily allowance is spent (its own 429 / 403 shape)


@dataclass
class FaultInjector:
    config: FaultConfig = field(default_factory=FaultConfig)
    # Seeded on purpose: a fault scenario replays identically (no security use).
    rng: random.Random = field(default_factory=lambda: random.Random(0))  # nosec B311
    injected: dict = field(default_factory=dict)

    def configure(self, **settings) -> FaultConfig:
        unknown = set(settings) - set(FaultConfig.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown fault settings: {sorted(unknown)}")
        self.config = FaultConfig(**settings)
        self.rng = random.Random(self.config.seed)  # nosec B311  # seeded: reproducible faults
        self.injected = {}
        return self.config

    def describe(self) -> dict:
        return {"config": asdict(self.config), "injected": dict(self.injected)}

    def draw(self) -> str | None:
        roll = self.rng.random()
        for kind in KINDS:
            rate = getattr(self.config, f"rate_{kind}")
            if roll < rate:
                return kind
            roll -= rate
        return None

    def brevo_process_fails(self) -> bool:
        return self.rng.random() < self.config.brevo_failed_processes

    async def maybe_inject(self, scope, receive, send, state, app=None) -> bool:
        """Answer the request with a fault (True) or leave it to the CRM (False). `app` is the
        CRM endpoint, run first by the `*_after_commit` faults."""
        kind = self.draw()
        if kind is None or (app is None and kind.endswith("_after_commit")):
            return False
        if kind == "echo_credentials" and self.config.echo_credentials_path not in scope["path"]:
            return False
        self.injected[kind] = self.injected.get(kind, 0) + 1
        state.count(f"faults {kind}")
        if kind.endswith("_after_commit"):
            await self._after_commit(kind, app, scope, receive, send)
        elif kind in RATE_LIMIT_KINDS:
            state.count("rate_limited total")
            await self._rate_limited(RATE_LIMIT_KINDS[kind], scope, receive, send)
        elif kind in ("500", "503"):
            await _respond(send, int(kind), [(b"content-type", b"application/json")],
                           json.dumps({"message": f"injected {kind}"}).encode())
        elif kind == "delay":
            # Longer than any sane client timeout; the client gives up, the request did nothing.
            await asyncio.sleep(self.config.delay_seconds)
            await _respond(send, 504, [(b"content-type", b"application/json")], b"{}")
        elif kind == "drop":
            # Promise a body, send none, and close: the client sees the connection drop.
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-length", b"1000")]})
            raise ConnectionResetError("injected dropped connection")
        elif kind == "truncated":
            body = b'{"results": [{"id": "1", "succ'
            await _respond(send, 200, [(b"content-type", b"application/json")], body)
        elif kind == "echo_credentials":
            await _respond(send, self.config.echo_credentials_status,
                           [(b"content-type", b"application/json")], _echoed_credentials(scope))
        elif kind == "non_json":
            await _respond(send, 502, [(b"content-type", b"text/html")],
                           b"<html><body>Bad Gateway</body></html>")
        return True

    async def _rate_limited(self, kind: str, scope, receive, send) -> None:
        """The rate-limit answer of the CRM the request is for, or the generic one."""
        seconds = float(self.config.retry_after_seconds)
        hook = rate_limit_hook(scope["path"])
        if hook is None:
            headers = [(b"content-type", b"application/json")]
            if self.config.retry_after:
                headers.append((b"retry-after", str(self.config.retry_after_seconds).encode()))
            await _respond(send, 429, headers, json.dumps(
                {"status": "error", "message": "Too many requests (injected fault)",
                 "errorType": "RATE_LIMIT"}).encode())
            return
        response = hook(kind, seconds)
        if not self.config.retry_after and "retry-after" in response.headers:
            del response.headers["retry-after"]
        await response(scope, receive, send)

    async def _after_commit(self, kind: str, app, scope, receive, send) -> None:
        """Run the CRM endpoint to the end (its writes are committed before it answers), keep
        its answer, then lose it, cut it, or deliver it late."""
        messages: list[dict] = []

        async def keep(message) -> None:
            messages.append(message)

        await app(scope, receive, keep)
        start = next((m for m in messages if m["type"] == "http.response.start"),
                     {"status": 500, "headers": []})
        body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        if kind == "delay_after_commit":
            await asyncio.sleep(self.config.delay_seconds)
            await _respond(send, start["status"], headers, body)
        elif kind == "truncated_after_commit":
            await _respond(send, start["status"], headers, body[:len(body) // 2])
        else:  # drop_after_commit: promise the real body, send none of it, and close
            promised = str(max(len(body), 1)).encode()
            await send({"type": "http.response.start", "status": start["status"],
                        "headers": headers + [(b"content-length", promised)]})
            raise ConnectionResetError("injected dropped connection after commit")


def rate_limit_hook(path: str):
    """The `rate_limit_answer` of the sandbox module that plays the CRM `path` belongs to, or
    None (no CRM module matches, or the module has none: the generic answer is used)."""
    crm = next((name for prefix, name in CRM_PATHS if path.startswith(prefix)), None)
    if crm is None:
        return None
    module = importlib.import_module(f"crm_sync.sandbox.{crm}")
    return getattr(module, "rate_limit_answer", None)


def _echoed_credentials(scope) -> bytes:
    """What a careless gateway answers: the credentials it was sent, in its error message."""
    sent = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    echoed = "; ".join(f"{name}: {sent[name]}" for name in ("authorization", "api-key")
                       if name in sent) or "no credentials"
    message = f"gateway refused the request ({echoed})"
    return json.dumps({"status": "error", "message": message, "errorType": "GATEWAY",
                       "category": "VALIDATION_ERROR", "code": "gateway_error"}).encode()


async def _respond(send, status: int, headers: list, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": headers + [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
