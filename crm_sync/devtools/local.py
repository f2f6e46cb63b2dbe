"""The files the demo, `crm-sync backfill --sandbox` and `crm-sync ui` share on one machine: the
Dagster instance, the sandbox's database and the sync store. One set of them, so that the runs
of one are in the other's UI, with the same materializations, frames and sync state.

Without a work folder they are the project's: the instance of `paths.dagster_home()`
($DAGSTER_HOME, else .crm_sync/dagster_home), .crm_sync/sandbox.sqlite and the project's
store ($CRM_SYNC_STORE, else .crm_sync/crm_sync.sqlite). `--workdir DIR` (of `crm-sync demo`
and `crm-sync ui` alike) puts them in DIR instead: DIR/sandbox.sqlite, DIR/crm_sync.sqlite
(a $CRM_SYNC_STORE URL, a PostgreSQL store, still wins) and, unless $DAGSTER_HOME is set,
DIR/dagster_home.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import yaml

from crm_sync import paths

# One slot per pool: each CRM destination has its own pool (`crm_<crm>`), so the runs of a
# parallel backfill extract and validate side by side but upsert into one CRM one at a time,
# and together never exceed the CRM's rate limit.
INSTANCE_CONFIG = """\
concurrency:
  pools:
    default_limit: 1
  runs:
    max_concurrent_runs: 4
telemetry:
  enabled: false
"""


def prepare_home(home: Path) -> None:
    """The instance's folder, with INSTANCE_CONFIG as its dagster.yaml unless it has one."""
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(INSTANCE_CONFIG)


@dataclass(frozen=True)
class LocalFiles:
    home: Path  # DAGSTER_HOME: the instance's runs, event log and step frames (storage/)
    sandbox_db: Path
    # the sync store file; None: $CRM_SYNC_STORE is a URL, read by the resource itself (an
    # EnvVar: a password in it never enters the run config)
    store: Path | None

    def store_env(self) -> dict[str, str]:
        """The store as the code location of `dagster dev` reads it (CRM_SYNC_STORE)."""
        return {} if self.store is None else {"CRM_SYNC_STORE": str(self.store)}


def local_files(workdir: str | os.PathLike | None = None) -> LocalFiles:
    """The instance, sandbox database and store of the project, or of `workdir`."""
    url_store = "://" in os.environ.get("CRM_SYNC_STORE", "")
    if workdir is None:
        folder = paths.state_dir()
        store = None if url_store else paths.store_path()
        home = paths.dagster_home()
    else:
        folder = Path(workdir).expanduser().absolute()
        store = None if url_store else folder / "crm_sync.sqlite"
        home = paths.dagster_home() if os.environ.get("DAGSTER_HOME") else folder / "dagster_home"
    return LocalFiles(home=home, sandbox_db=folder / "sandbox.sqlite", store=store)


@contextmanager
def local_instance(home: Path | None = None, *,
                   pool_slots: bool = False) -> Iterator[dg.DagsterInstance]:
    """The persistent Dagster instance of `home` (default: the project's), created with
    INSTANCE_CONFIG if it has no dagster.yaml yet: what `dagster dev` opens for the same
    DAGSTER_HOME (DagsterInstance.get() reads the same file).

    `pool_slots`: whether this process's in-process runs claim the CRM pools' slots as the
    UI's runs do. Off by default: the demo and the CLI run one step after the other anyway,
    a claim costs each run seconds of polling (Dagster's claim loop), and a process killed
    while holding a slot would leave it claimed for every later run of the instance. Off, the
    file's `concurrency` is read with pool granularity `run`, which a run executed in process
    (not launched through the run queue) does not wait on."""
    from dagster._core.instance.ref import InstanceRef

    home = home or paths.dagster_home()
    prepare_home(home)
    overrides = None
    if not pool_slots:
        file = yaml.safe_load((home / "dagster.yaml").read_text()) or {}
        concurrency = dict(file.get("concurrency") or {})
        concurrency["pools"] = {**(concurrency.get("pools") or {}), "granularity": "run"}
        overrides = {"concurrency": concurrency}
    ref = InstanceRef.from_dir(str(home), overrides=overrides)
    with dg.DagsterInstance.from_ref(ref) as instance:
        yield instance
