"""The demo: start the sandbox, sync every partition of the bundled data, print a summary.

Running it twice gives the same end state: the second run finds every row unchanged (or
updates the same CRM records), so nothing is duplicated in the sandbox.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

import dagster as dg
import duckdb

from crm_sync.reporting import text_table
from crm_sync.sandbox.app import DEFAULT_TOKENS, TOKEN_ENV
from crm_sync.sandbox.server import sandbox_process
from crm_sync.spec import PROJECT_ROOT, Spec, load_spec

SUMMARY_COLUMNS = ["crm", "object", "sync", "rows_read", "created", "updated", "unchanged",
                   "quarantined"]


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


def sync_partitions(partitions: list[str], spec: Spec | None = None,
                    instance: dg.DagsterInstance | None = None, run_config: dict | None = None,
                    log=print) -> list[dict]:
    """Materialize every partitioned asset for each partition, then the quarantine asset.
    Returns one summary row per sync."""
    from crm_sync.assets import build_assets
    from crm_sync.definitions import build_resources

    spec = spec or load_spec()
    assets = build_assets(spec)
    resources = build_resources()
    partitioned = [a for a in assets if a.partitions_def is not None]
    quarantine = [a for a in assets if a.partitions_def is None]
    totals: dict[str, dict] = defaultdict(lambda: defaultdict(int))
    # Dagster's per-event debug log drowns the summary; warnings and errors still show.
    run_config = {"loggers": {"console": {"config": {"log_level": "WARNING"}}},
                  **(run_config or {})}
    instance = instance or dg.DagsterInstance.ephemeral()
    for partition in partitions:
        log(f"syncing partition {partition} ...")
        result = dg.materialize(partitioned, partition_key=partition, resources=resources,
                                instance=instance, run_config=run_config)
        for sync in spec.syncs:
            if not any(a.key == dg.AssetKey(sync.name) for a in partitioned):
                continue
            validated = _metadata(result, f"validated_{sync.name}")
            upsert = _metadata(result, sync.name)
            row = totals[sync.name]
            row["rows_read"] += validated.get("rows_in", 0)
            row["quarantined"] += validated.get("rows_quarantined", 0) + upsert.get("failed", 0)
            for name in ("created", "updated", "unchanged", "requests"):
                row[name] += upsert.get(name, 0)
    dg.materialize(quarantine, resources=resources, instance=instance,
                   run_config={"loggers": run_config["loggers"]})
    return [{"crm": s.crm, "object": s.object, "sync": s.name, **totals[s.name]}
            for s in spec.syncs if s.name in totals]


def _metadata(result: dg.ExecuteInProcessResult, node: str) -> dict:
    values = {}
    for mat in result.asset_materializations_for_node(node):
        for key, entry in mat.metadata.items():
            values[key] = getattr(entry, "value", entry)
    for event in result.all_node_events:
        if event.node_name == node and event.event_type_value == "STEP_OUTPUT":
            for key, entry in (event.event_specific_data.metadata or {}).items():
                values[key] = getattr(entry, "value", entry)
    return values


def run_demo(workdir: Path | None = None, port: int | None = None) -> list[dict]:
    workdir = Path(workdir or PROJECT_ROOT / ".crm_sync" / "demo")
    workdir.mkdir(parents=True, exist_ok=True)
    for crm, env in TOKEN_ENV.items():
        # The demo talks to the local sandbox only; its tokens are the sandbox's defaults.
        os.environ.setdefault(env, DEFAULT_TOKENS[crm])
    os.environ["CRM_SYNC_STORE"] = str(workdir / "crm_sync.sqlite")
    spec = load_spec()
    partitions = partitions_with_data(spec, PROJECT_ROOT / "data")
    with sandbox_process(workdir / "sandbox.sqlite", port=port) as url:
        print(f"CRM sandbox running at {url} (data in {workdir / 'sandbox.sqlite'})")
        for crm in TOKEN_ENV:
            os.environ[f"{crm.upper()}_BASE_URL"] = url
        summary = sync_partitions(partitions, spec)
    print()
    print(text_table(summary, SUMMARY_COLUMNS))
    print(f"\nquarantine: table `quarantine` in {workdir / 'crm_sync.sqlite'}")
    return summary
