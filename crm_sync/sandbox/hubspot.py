"""Hubspot emulation (filled in by the "CRM sandbox" issue)."""

from __future__ import annotations

from starlette.routing import Route

from crm_sync.sandbox.app import SandboxState


def routes(state: SandboxState) -> list[Route]:
    return []
