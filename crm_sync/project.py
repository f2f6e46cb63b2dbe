"""The Definitions of a user's project: `crm_sync.build_defs(spec=..., store=..., data_dir=...)`.

A Dagster project that installed crm_sync (`pip install crm_sync`) writes, in its own
definitions module:

    import crm_sync
    defs = crm_sync.build_defs(spec="syncs.yaml")

Paths resolve in the project (crm_sync/paths.py), never in site-packages. The clone's own code
location (crm_sync/definitions.py) is the same call with every argument left to its default.
"""

from __future__ import annotations

import os

import dagster as dg

from crm_sync import paths
from crm_sync.assets import build_assets, partitions_for
from crm_sync.connectors import RESOURCE_CLASSES, SANDBOX_URL, TOKEN_ENV
from crm_sync.jobs import build_automation
from crm_sync.resources import StoreResource
from crm_sync.sources import SourceResource
from crm_sync.spec import Spec, load_spec

PathArg = str | os.PathLike | None


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


def build_resources(store: PathArg = None,
                    data_dir: PathArg = None) -> dict[str, dg.ConfigurableResource]:
    """The source, the sync store and the CRMs; `store` and `data_dir` default to
    $CRM_SYNC_STORE / $CRM_SYNC_DATA_DIR, else the project's own (crm_sync/paths.py)."""
    return {"source": SourceResource(data_dir=str(paths.data_dir(data_dir))),
            "store": StoreResource(path=str(paths.store_path(store))),
            **crm_resources()}


def build_defs(spec: Spec | PathArg = None, store: PathArg = None,
               data_dir: PathArg = None) -> dg.Definitions:
    """Assets, jobs, schedules, sensors and resources for the syncs of `spec` (a path, or a
    loaded Spec; default $CRM_SYNC_SPEC, else the project's syncs.yaml)."""
    spec = spec if isinstance(spec, Spec) else load_spec(spec)
    assets = build_assets(spec)
    synced = {a.key.path[-1] for a in assets}
    jobs, schedules, sensors = build_automation(spec, partitions_for(spec), synced)
    return dg.Definitions(assets=assets, jobs=jobs, schedules=schedules, sensors=sensors,
                          resources=build_resources(store, data_dir))
