"""Where a project's files are: its sync spec, its source data and its sync store.

They belong to the user's project, never to the installed package: a relative path (an
argument of `crm_sync.build_defs`, or CRM_SYNC_SPEC / CRM_SYNC_DATA_DIR / CRM_SYNC_STORE)
resolves against the working directory, where Dagster runs a code location (`dagster dev` in
the project folder, `working_directory` in workspace.yaml). Only a source checkout run from
another folder falls back to the checkout's own files (`syncs.yaml`, `data/`, `.crm_sync/`),
as it always did; an installed package has no such fallback (it would be site-packages).
"""

from __future__ import annotations

import os
from pathlib import Path

# The folder that holds the package: a clone's root, or site-packages once installed.
PACKAGE_PARENT = Path(__file__).resolve().parent.parent
SPEC_NAME = "syncs.yaml"


def source_checkout() -> Path | None:
    """The clone crm_sync runs from (its pyproject.toml next to the package), or None when it
    is an installed package."""
    if (PACKAGE_PARENT / "pyproject.toml").is_file() and (PACKAGE_PARENT / SPEC_NAME).is_file():
        return PACKAGE_PARENT
    return None


def project_dir() -> Path:
    """The user's project: the working directory; from a clone, run in a folder without a
    syncs.yaml, the clone."""
    cwd = Path.cwd()
    checkout = source_checkout()
    if checkout is not None and not (cwd / SPEC_NAME).exists():
        return checkout
    return cwd


def _resolve(value: str | os.PathLike | None, env: str, default: str) -> Path:
    chosen = value or os.environ.get(env)
    if chosen:
        return Path(chosen).expanduser().absolute()
    return project_dir() / default


def spec_path(value: str | os.PathLike | None = None) -> Path:
    """The sync spec: `value`, else $CRM_SYNC_SPEC, else the project's syncs.yaml."""
    return _resolve(value, "CRM_SYNC_SPEC", SPEC_NAME)


def data_dir(value: str | os.PathLike | None = None) -> Path:
    """The folder of <table>.csv / .parquet: `value`, else $CRM_SYNC_DATA_DIR, else data/."""
    return _resolve(value, "CRM_SYNC_DATA_DIR", "data")


def store_path(value: str | os.PathLike | None = None) -> Path:
    """The sync store: `value`, else $CRM_SYNC_STORE, else .crm_sync/crm_sync.sqlite."""
    return _resolve(value, "CRM_SYNC_STORE", ".crm_sync/crm_sync.sqlite")


def store_location(value: str | os.PathLike | None = None) -> str:
    """The sync store as SyncStore takes it: a URL (`sqlite:///...`, `postgresql+psycopg://...`,
    from `value` or $CRM_SYNC_STORE) as it is, else the resolved path (store_path)."""
    chosen = value or os.environ.get("CRM_SYNC_STORE")
    if chosen and "://" in os.fspath(chosen):
        return os.fspath(chosen)
    return str(store_path(value))


def schemas_dir(spec: str | os.PathLike | None = None) -> Path:
    """The pulled CRM field schemas, `crm_schemas/<crm>/<object>.json`: next to the sync spec
    (`spec`, else $CRM_SYNC_SPEC, else the project's syncs.yaml), in the project, committed
    with it like a lock file (crm_sync/schema_files.py)."""
    return spec_path(spec).parent / "crm_schemas"


def dagster_home() -> Path:
    """The Dagster instance the demo, `crm-sync backfill` and `crm-sync ui` share, so that
    one's runs are in the other's UI: $DAGSTER_HOME, else .crm_sync/dagster_home."""
    chosen = os.environ.get("DAGSTER_HOME")
    return Path(chosen).expanduser().absolute() if chosen else state_dir() / "dagster_home"


def state_dir() -> Path:
    """The project's own working folder (the demo's and the UI's files)."""
    return project_dir() / ".crm_sync"


def source_cache_dir(value: str | os.PathLike | None = None) -> Path:
    """The columnar copies of the source files (crm_sync/extract/columnar.py): `value`, else
    $CRM_SYNC_SOURCE_CACHE, else .crm_sync/source_cache in the project."""
    return _resolve(value, "CRM_SYNC_SOURCE_CACHE", ".crm_sync/source_cache")
