"""One module per CRM (payload building, limits, result parsing) on one shared core.

Each CRM module declares its Dagster resource class in a module-level `RESOURCE` and what
crm_sync knows of the CRM in `PROFILE` (crm_sync/connectors/profile.py). `CRMS` is the one list
of those modules: adding a CRM is its module plus an entry here (and its sandbox module).
"""

from __future__ import annotations

import importlib

from crm_sync.connectors.base import SANDBOX_URL, Connector, CrmResource
from crm_sync.connectors.profile import CrmProfile

# The registry: module names under crm_sync.connectors, or a dotted module path elsewhere.
CRMS = ("superleap", "brevo", "hubspot", "salesforce")

# CRM name (as in the sync spec) -> its profile / its Dagster resource class / the environment
# variable its token is read from. The sandbox keeps its own copy: it shares no code with the
# client. Filled from CRMS by refresh(); updated in place, so imported names stay current.
PROFILES: dict[str, CrmProfile] = {}
RESOURCE_CLASSES: dict[str, type[CrmResource]] = {}
TOKEN_ENV: dict[str, str] = {}


def _module(entry: str):
    return importlib.import_module(entry if "." in entry else f"crm_sync.connectors.{entry}")


def refresh() -> None:
    """(Re)read every module of CRMS into PROFILES, RESOURCE_CLASSES and TOKEN_ENV."""
    found = {}
    for entry in CRMS:
        profile = getattr(_module(entry), "PROFILE", None)
        if profile is not None:
            found[profile.name] = profile
    for table, value in ((PROFILES, lambda p: p), (RESOURCE_CLASSES, lambda p: p.resource),
                         (TOKEN_ENV, lambda p: p.token_variable)):
        table.clear()
        table.update({name: value(p) for name, p in found.items()})


refresh()


def crm_label(crm: str) -> str:
    """The CRM's name for people ("HubSpot"), or the spec's name of a CRM not registered."""
    profile = PROFILES.get(crm)
    return profile.label if profile else crm

__all__ = ["SANDBOX_URL", "Connector", "CrmProfile", "CrmResource", "CRMS", "PROFILES",
           "RESOURCE_CLASSES", "TOKEN_ENV", "crm_label", "refresh"]
