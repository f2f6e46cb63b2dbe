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

__all__ = ["SANDBOX_URL", "Connector", "CrmResource", "RESOURCE_CLASSES", "CRMS"]
