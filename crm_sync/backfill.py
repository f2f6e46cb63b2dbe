"""Run partitions of the syncs in this process, one after the other (the CLI's backfill and
the demo). In the UI, a backfill launches one run per partition; the per-CRM pools keep their
upserts from running at once."""

from __future__ import annotations

import gc
from collections import defaultdict
from datetime import date, timedelta

import dagster as dg

from crm_sync.spec import Spec, load_spec


def day_range(start: str, end: str) -> list[str]:
    """Every day from start to end, inclusive (YYYY-MM-DD)."""
    first, last = date.fromisoformat(start), date.fromisoformat(end)
    if last < first:
        raise ValueError(f"the range ends ({end}) before it starts ({start})")
    return [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


def sync_partitions(partitions: list[str], spec: Spec | None = None,
                    instance: dg.DagsterInstance | None = None, run_config: dict | None = None,
                    log=print, syncs: list[str] | None = None,
                    resources: dict | None = None) -> list[dict]:
    """Materialize the partitioned assets of `syncs` (default: all) for each partition, one
    partition after the other, then the quarantine asset. Returns one summary row per sync.
    `resources` replaces the default ones (`build_resources()`), e.g. with other rate limits."""
    from crm_sync.assets import build_assets
    from crm_sync.definitions import build_resources

    spec = spec or load_spec()
    assets = build_assets(spec)
    # Every partition is one in-process run whose assets read only what the same run produced:
    # outputs are handed over in memory (Dagster keeps every output of an in-process run until
    # it ends anyway), not pickled to disk and read back as a second copy.
    resources = {"io_manager": dg.mem_io_manager, **(resources or build_resources())}
    if syncs:
        unknown = set(syncs) - {s.name for s in spec.syncs}
        if unknown:
            raise ValueError(f"no sync named {sorted(unknown)}; known: "
                             f"{[s.name for s in spec.syncs]}")
        chosen = {n for s in spec.syncs if s.name in syncs
                  for n in (f"source_{s.source}", f"validated_{s.name}", s.name)}
        assets = [a for a in assets if a.partitions_def is None or a.key.path[-1] in chosen]
    partitioned = [a for a in assets if a.partitions_def is not None]
    quarantine = [a for a in assets if a.partitions_def is None]
    totals: dict[str, dict] = defaultdict(lambda: defaultdict(int))
    # Dagster's per-event debug log drowns the summary; warnings and errors still show.
    run_config = {"loggers": {"console": {"config": {"log_level": "WARNING"}}},
                  **(run_config or {})}
    instance = instance or dg.DagsterInstance.ephemeral()
    # One run per sync and partition: a run holds every output of its assets until it ends,
    # so one sync's frames at a time (not all syncs' at once) bound the memory of a backfill.
    runs = [(sync, [a for a in partitioned if a.key.path[-1] in
                    (f"source_{sync.source}", f"validated_{sync.name}", sync.name)])
            for sync in spec.syncs if any(a.key == dg.AssetKey(sync.name) for a in partitioned)]
    for partition in partitions:
        log(f"syncing partition {partition} ...")
        for sync, selection in runs:
            result = None
            # The previous run's frames are often held in reference cycles (Dagster's run
            # objects): free them before this run allocates its own (bounded memory).
            gc.collect()
            result = dg.materialize(selection, partition_key=partition, resources=resources,
                                    instance=instance, run_config=run_config)
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


