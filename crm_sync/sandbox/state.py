"""What every sandbox handler shares: the database, the tokens, the limits and the faults.

The CRM modules and the admin API take their state from here, never from app.py: the app
imports them to build its routes, so they must not import it back.
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from dataclasses import dataclass, field

from starlette.requests import Request

from crm_sync.sandbox.db import SandboxDB
from crm_sync.sandbox.faults import FaultInjector
from crm_sync.sandbox.oauth import SandboxOAuth

# Env var -> the token each emulated CRM accepts. The connectors read variables of the same
# names (each side keeps its own list), so a shell that exports them configures both sides.
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
    superleap_max_records: int = 1000  # GUESS: Superleap documents no maximum (superleap.py)
    brevo_process_steps: int = 2  # polls a process spends queued / in_process before completing
    faults: FaultInjector = field(default_factory=FaultInjector)
    oauth: SandboxOAuth = field(default_factory=SandboxOAuth)  # issued tokens that expire

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
