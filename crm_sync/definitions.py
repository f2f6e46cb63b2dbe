"""The one Definitions object of crm_sync (`dagster dev -w workspace.yaml` loads it)."""

from __future__ import annotations

import os

import dagster as dg

from crm_sync.assets import build_assets, partitions_for
from crm_sync.jobs import build_automation
from crm_sync.connectors import RESOURCE_CLASSES, SANDBOX_URL, TOKEN_ENV
from crm_sync.resources import StoreResource
from crm_sync.sources import SourceResource
from crm_sync.spec import load_spec


def crm_resources() -> dict[str, dg.ConfigurableResource]:
    """One resource per CRM. Tokens come from the environment (never from code or config
    files); base URLs default to the local sandbox and are changed with <CRM>_BASE_URL.
    A token variable that is not set leaves the token empty: only the runs that need that CRM
    fail, with a message naming the sync and the variable (not Dagster's config error)."""
    return {
        crm: cls(
            base_url=os.environ.get(f"{crm.upper()}_BASE_URL", SANDBOX_URL),
            token=dg.EnvVar(TOKEN_ENV[crm]) if os.environ.get(TOKEN_ENV[crm]) else "",
            token_env=TOKEN_ENV[crm],
        )
        for crm, cls in RESOURCE_CLASSES.items()
    }


def build_resources() -> dict[str, dg.ConfigurableResource]:
    return {"source": SourceResource(), "store": StoreResource(), **crm_resources()}


def build_definitions(spec_path: str | None = None) -> dg.Definitions:
    spec = load_spec(spec_path)
    assets = build_assets(spec)
    synced = {a.key.path[-1] for a in assets}
    jobs, schedules, sensors = build_automation(spec, partitions_for(spec), synced)
    return dg.Definitions(assets=assets, jobs=jobs, schedules=schedules, sensors=sensors,
                          resources=build_resources())


defs = build_definitions()
