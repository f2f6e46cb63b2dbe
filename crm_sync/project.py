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
from crm_sync.pipeline.assets import build_assets, partitions_for
from crm_sync.connectors import RESOURCE_CLASSES, SANDBOX_URL, TOKEN_ENV
from crm_sync.pipeline.automation import build_automation, quarantine_sensor
from crm_sync.pipeline.prefix import as_prefix, prefix_assets
from crm_sync.pipeline.resources import StoreResource
from crm_sync.extract.sources import SourceResource
from crm_sync.spec import Spec, load_spec

PathArg = str | os.PathLike | None


# The one place that reads which deployment a code location runs against (`crm-sync ui`
# starts `dagster dev` with CRM_SYNC_DEPLOYMENT=sandbox and the sandbox's address).
DEPLOYMENT_ENV, SANDBOX_URL_ENV = "CRM_SYNC_DEPLOYMENT", "CRM_SYNC_SANDBOX_URL"
# Where the steps' frames (source -> validated -> upsert) go between steps: a path every run
# worker reaches (a shared volume; s3://, gs://, az:// with fsspec's s3fs/gcsfs/adlfs).
# Unset: Dagster's default, pickles under DAGSTER_HOME/storage on the machine's own disk.
IO_PATH_ENV = "CRM_SYNC_IO_PATH"


def crm_resources(base_url: str | None = None,
                  tokens: dict[str, str] | None = None) -> dict[str, dg.ConfigurableResource]:
    """One resource per CRM. Live: tokens come from the environment (dg.EnvVar, never from
    code or config files); base URLs default to the local sandbox and are changed with
    <CRM>_BASE_URL. A token variable that is not set leaves the token empty: only the runs
    that need that CRM fail, with a message naming the sync and the variable (not Dagster's
    config error). `base_url`: every CRM at that address; `tokens`: token values by CRM
    (the sandbox's demo tokens) instead of the environment's."""
    return {
        crm: cls(
            base_url=base_url or os.environ.get(f"{crm.upper()}_BASE_URL", SANDBOX_URL),
            token=tokens[crm] if tokens else _token_from_env(crm),
            token_env=TOKEN_ENV[crm],
            **({} if tokens else cls.oauth_from_env()),  # OAuth instead of a fixed token
        )
        for crm, cls in RESOURCE_CLASSES.items()
    }


def _token_from_env(crm: str) -> dg.EnvVar | str:
    return dg.EnvVar(TOKEN_ENV[crm]) if os.environ.get(TOKEN_ENV[crm]) else ""


def io_manager_from_env() -> dict[str, dg.ConfigurableIOManagerFactory]:
    """`io_manager` on $CRM_SYNC_IO_PATH when it is set, else nothing (Dagster's default).
    Dagster's own FilesystemIOManager: pickles through universal_pathlib, so the same class
    writes to a local or shared path and to object storage (README "Deploying"); read with
    dg.EnvVar, so each run worker resolves it in its own environment."""
    if not os.environ.get(IO_PATH_ENV):
        return {}
    return {"io_manager": dg.FilesystemIOManager(base_dir=dg.EnvVar(IO_PATH_ENV))}


def _local_resources(store: PathArg, data_dir: PathArg) -> dict[str, dg.ConfigurableResource]:
    return {"source": SourceResource(data_dir=str(paths.data_dir(data_dir))),
            "store": _store_resource(store),
            **io_manager_from_env()}


def _store_resource(store: PathArg) -> StoreResource:
    """A store URL from $CRM_SYNC_STORE stays an `EnvVar`: a password in it is never part of
    the run config Dagster shows and stores."""
    if store is None and "://" in os.environ.get("CRM_SYNC_STORE", ""):
        return StoreResource(path=dg.EnvVar("CRM_SYNC_STORE"))
    return StoreResource(path=paths.store_location(store))


def build_resources(store: PathArg = None,
                    data_dir: PathArg = None) -> dict[str, dg.ConfigurableResource]:
    """The live resources: the source, the sync store and the CRMs (and the IO manager of
    $CRM_SYNC_IO_PATH, when set); `store` and `data_dir` default to $CRM_SYNC_STORE /
    $CRM_SYNC_DATA_DIR, else the project's own (crm_sync/paths.py)."""
    return {**_local_resources(store, data_dir), **crm_resources()}


def sandbox_resources(url: str, store: PathArg = None, data_dir: PathArg = None,
                      tokens: dict[str, str] | None = None) -> dict[str, dg.ConfigurableResource]:
    """The same resources with every CRM at the local sandbox `url` (the demo, `crm-sync ui`).
    `tokens`: the sandbox's tokens, passed in by the caller (this module never imports
    crm_sync.sandbox); without them, the token variables as for live."""
    return {**_local_resources(store, data_dir), **crm_resources(base_url=url, tokens=tokens)}


def deployment_resources(store: PathArg = None,
                         data_dir: PathArg = None) -> dict[str, dg.ConfigurableResource]:
    """The resources of the deployment the environment names: $CRM_SYNC_DEPLOYMENT=sandbox
    with $CRM_SYNC_SANDBOX_URL, or live (the default)."""
    deployment = os.environ.get(DEPLOYMENT_ENV) or "live"
    if deployment == "sandbox":
        return sandbox_resources(os.environ[SANDBOX_URL_ENV], store, data_dir)
    if deployment != "live":
        raise ValueError(f"{DEPLOYMENT_ENV}={deployment!r}: expected 'live' or 'sandbox'")
    return build_resources(store, data_dir)


def build_defs(spec: Spec | PathArg = None, store: PathArg = None, data_dir: PathArg = None,
               resources: dict | None = None,
               key_prefix: str | list[str] | None = None) -> dg.Definitions:
    """Assets, jobs, schedules, sensors and resources for the syncs of `spec` (a path, or a
    loaded Spec; default $CRM_SYNC_SPEC, else the project's syncs.yaml). `resources`: e.g.
    `sandbox_resources(url, ...)`; default: the deployment's (`deployment_resources`).
    `key_prefix`: every asset key and job, schedule and sensor name under it
    (crm_sync/pipeline/prefix.py; the CrmSync Component's `key_prefix`)."""
    spec = spec if isinstance(spec, Spec) else load_spec(spec)
    prefix = as_prefix(key_prefix)
    assets = build_assets(spec)
    synced = {a.key.path[-1] for a in assets}
    assets = prefix_assets(assets, prefix)
    jobs, schedules, sensors = build_automation(spec, partitions_for(spec), synced, prefix)
    sensors += quarantine_sensor(assets)  # running by default (automation.py)
    return dg.Definitions(assets=assets, jobs=jobs, schedules=schedules, sensors=sensors,
                          resources=resources or deployment_resources(store, data_dir))
