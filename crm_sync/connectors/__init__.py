"""One module per CRM (payload building, limits, result parsing) on one shared core.

Each CRM module names its Dagster resource class in a module-level `RESOURCE`.
"""

from __future__ import annotations

import importlib

from crm_sync.connectors.base import SANDBOX_URL, Connector, CrmResource

CRMS = ("superleap", "brevo", "hubspot", "salesforce")


def _discover() -> dict[str, type[CrmResource]]:
    found = {}
    for crm in CRMS:
        module = importlib.import_module(f"crm_sync.connectors.{crm}")
        resource = getattr(module, "RESOURCE", None)
        if resource is not None:
            found[crm] = resource
    return found


# CRM name (as in the sync spec) -> its Dagster resource class.
RESOURCE_CLASSES: dict[str, type[CrmResource]] = _discover()
# CRM name -> the environment variable its token is read from (each resource's
# `token_variable`). The sandbox keeps its own copy: it shares no code with the client.
TOKEN_ENV: dict[str, str] = {crm: cls.token_variable for crm, cls in RESOURCE_CLASSES.items()}

__all__ = ["SANDBOX_URL", "Connector", "CrmResource", "RESOURCE_CLASSES", "CRMS", "TOKEN_ENV"]
