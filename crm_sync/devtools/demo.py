"""The demo: start the sandbox, sync every partition of the bundled data, print a summary.

Running it twice gives the same end state: the second run finds every row unchanged (or
updates the same CRM records), so nothing is duplicated in the sandbox. Its runs go to the
project's Dagster instance, with the sandbox database and sync store `crm-sync ui` uses
(crm_sync/devtools/local.py), so the UI shows the demo's materializations.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import duckdb

from crm_sync import paths
from crm_sync.devtools.local import local_files, local_instance
from crm_sync.pipeline.in_process import sync_partitions
from crm_sync.project import sandbox_resources
from crm_sync.pipeline.reporting import text_table
from crm_sync.sandbox.server import sandbox_process
from crm_sync.sandbox.state import tokens_from_env
from crm_sync.spec import Spec, load_spec
from crm_sync.state.store import SyncStore

# `linked`: associations made (spec `associations:`; any CRM, from the runs' reports)
SUMMARY_COLUMNS = ["crm", "object", "sync", "rows_read", "created", "updated", "unchanged",
                   "quarantined", "linked"]
DEMO_TAGS = {"crm_sync/source": "demo"}  # on each of its runs, as the UI shows them


def partitions_with_data(spec: Spec, data_dir: Path) -> list[str]:
    """The daily partitions that hold at least one source row."""
    days: set[str] = set()
    with duckdb.connect() as conn:
        for table in {s.source for s in spec.syncs}:
            path = data_dir / f"{table}.csv"
            if not path.exists():
                continue
            rows = conn.execute(
                "SELECT DISTINCT strftime(TRY_CAST(updated_at AS TIMESTAMPTZ) AT TIME ZONE 'UTC',"
                " '%Y-%m-%d') FROM read_csv(?, all_varchar=true, header=true)", [str(path)]
            ).fetchall()
            days.update(r[0] for r in rows if r[0])
    return sorted(d for d in days if d >= spec.start_date)


def demo_files() -> tuple[Path, Path]:
    """The demo's spec and data folder: the clone's syncs.yaml and data/, or, once installed,
    the copies the wheel ships in crm_sync/demo_data/ (setup.py puts them there)."""
    checkout = paths.source_checkout()
    if checkout is not None:
        return checkout / paths.SPEC_NAME, checkout / "data"
    bundled = Path(str(resources.files("crm_sync") / "demo_data"))
    return bundled / paths.SPEC_NAME, bundled / "data"


def run_demo(workdir: Path | None = None, port: int | None = None) -> list[dict]:
    """The demo's resources are passed to the backfill (`sandbox_resources`); the process's
    environment is only read, never written. `workdir`: where its instance, sandbox database
    and store are (local_files; default: the project's, those of `crm-sync ui`)."""
    files = local_files(workdir)
    files.sandbox_db.parent.mkdir(parents=True, exist_ok=True)
    spec_path, data_dir = demo_files()
    spec = load_spec(os.environ.get("CRM_SYNC_SPEC") or spec_path)
    data_dir = Path(os.environ.get("CRM_SYNC_DATA_DIR") or data_dir)
    partitions = partitions_with_data(spec, data_dir)
    with sandbox_process(files.sandbox_db, port=port) as url, \
            local_instance(files.home) as instance:
        print(f"CRM sandbox running at {url} (data in {files.sandbox_db}); "
              f"Dagster instance {files.home}")
        # The demo talks to the local sandbox only, with the tokens the sandbox accepts (its
        # defaults, or the ones set in the environment).
        resources = sandbox_resources(url, files.store, data_dir, tokens=tokens_from_env())
        summary = sync_partitions(partitions, spec, resources=resources, instance=instance,
                                  tags=DEMO_TAGS)
    print()
    print(text_table(summary, SUMMARY_COLUMNS))
    print(f"\nquarantine: table `quarantine` in "
          f"{SyncStore(paths.store_location(files.store)).display}")
    print("the runs and materializations: crm-sync ui"
          + (f" --workdir {workdir}" if workdir is not None else ""))
    return summary
