"""Fault injection: answer a share of CRM requests the way a bad network or CRM would.

Off by default. Set through the admin API (`POST /_sandbox/faults`) with a seed, so a failing
reliability run can be replayed exactly:

    {"seed": 7, "rate_429": 0.05, "rate_500": 0.02, "rate_503": 0.02, "rate_delay": 0.01,
     "delay_seconds": 40, "rate_drop": 0.01, "rate_truncated": 0.01, "rate_non_json": 0.01,
     "retry_after": true, "brevo_failed_processes": 0.0}
"""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import asdict, dataclass, field

KINDS = ("429", "500", "503", "delay", "drop", "truncated", "non_json")


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
    delay_seconds: float = 40.0
    retry_after: bool = True  # whether injected 429s carry a Retry-After header
    retry_after_seconds: int = 1
    brevo_failed_processes: float = 0.0  # share of Brevo processes that end `failed`


@dataclass
class FaultInjector:
    config: FaultConfig = field(default_factory=FaultConfig)
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    injected: dict = field(default_factory=dict)

    def configure(self, **settings) -> FaultConfig:
        unknown = set(settings) - set(FaultConfig.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown fault settings: {sorted(unknown)}")
        self.config = FaultConfig(**settings)
        self.rng = random.Random(self.config.seed)
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

    async def maybe_inject(self, scope, receive, send, state) -> bool:
        kind = self.draw()
        if kind is None:
            return False
        self.injected[kind] = self.injected.get(kind, 0) + 1
        state.count(f"faults {kind}")
        if kind == "429":
            state.count("rate_limited total")
            headers = [(b"content-type", b"application/json")]
            if self.config.retry_after:
                headers.append((b"retry-after", str(self.config.retry_after_seconds).encode()))
            await _respond(send, 429, headers, json.dumps(
                {"status": "error", "message": "Too many requests (injected fault)",
                 "errorType": "RATE_LIMIT"}).encode())
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
        elif kind == "non_json":
            await _respond(send, 502, [(b"content-type", b"text/html")],
                           b"<html><body>Bad Gateway</body></html>")
        return True


async def _respond(send, status: int, headers: list, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": headers + [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
