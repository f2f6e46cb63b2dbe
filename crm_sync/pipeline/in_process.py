"""Run partitions of the syncs in this process, one after the other (the CLI's backfill and
the demo). In the UI, a backfill launches one run per partition; the per-CRM pools keep their
upserts from running at once."""

from __future__ import annotations

import gc
import logging
import sys
import traceback
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, timedelta

import dagster as dg
from dagster._core.log_manager import LOG_RECORD_METADATA_ATTR

from crm_sync.state.lease import SKIPPED
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
                    resources: dict | None = None, verbose: bool = False,
                    tags: dict[str, str] | None = None) -> list[dict]:
    """Materialize the partitioned assets of `syncs` (default: all; each sync's steps are
    `sync_asset_names`) for each partition, one partition after the other, then the quarantine
    asset. Returns one summary row per sync, with its partitions ok / failed / skipped. Each
    sync partition is a run of its own: one that fails is logged once (`log`; with `verbose`,
    its traceback too) and the backfill goes on. `resources` replaces the default ones
    (`build_resources()`, e.g. `sandbox_resources(...)` or other rate limits).

    `instance`: where the runs are recorded; a persistent one (the project's DAGSTER_HOME,
    crm_sync/devtools/local.py) shows them in the UI, each named as the code location's job of
    its sync (`sync_<sync>`) and tagged with `tags` (e.g. `crm_sync/source: cli-backfill`).
    Default: a throwaway instance."""
    from crm_sync.project import build_resources

    spec = spec or load_spec()
    runs, quarantine = _runs(spec, syncs)
    instance = instance or dg.DagsterInstance.ephemeral()
    resources = {**_io_manager(instance), **(resources or build_resources())}
    totals: dict[str, dict] = defaultdict(lambda: defaultdict(int))
    jobs: dict = {}  # each sync's job, built once for all its partitions (`_materialize`)
    # Dagster's per-event debug log drowns the summary; warnings and errors still show.
    run_config = {"loggers": {"console": {"config": {"log_level": "WARNING"}}},
                  **(run_config or {})}
    # Syncs whose records others link to (spec `associations:`) run first, every partition of
    # them: a project of one day may link to a company of any day (crm_sync/load/links.py).
    held = 0  # rows the previous run held as frames
    for wave in _waves(runs):
        for partition in partitions:
            log(f"syncing partition {partition} ...")
            for sync, selection in wave:
                # The previous run's frames are often held in reference cycles (Dagster's run
                # objects): free them before this run allocates its own (bounded memory). A
                # full collection walks every object of the process (~0.3 s with Dagster
                # loaded, more as the instance's events grow): only worth it after a run that
                # held many rows; a small one's cycles go with Python's own collections.
                if held >= COLLECT_AFTER_ROWS:
                    gc.collect()
                outcome = _run_one(sync.name, selection, partition, resources, instance,
                                   _config_for(run_config, selection), tags, jobs)
                totals[sync.name][f"partitions_{outcome.status}"] += 1
                _report(outcome, sync.name, partition, log, verbose)
                held = 0
                if outcome.result is not None:
                    _add_counts(totals[sync.name], outcome.result, sync.name)
                    held = _rows_held(outcome.result, sync.name)
                del outcome  # (nothing of the run stays referenced into the next one)
    _materialize(quarantine, resources=resources, instance=instance,
                 run_config={"loggers": run_config["loggers"]}, raise_on_error=True,
                 job_name=QUARANTINE_JOB, tags=tags)
    return [{"crm": s.crm, "object": s.object, "sync": s.name,
             **{f"partitions_{k}": 0 for k in ("ok", "failed", "skipped")}, **totals[s.name]}
            for s in spec.syncs if s.name in totals]


def _io_manager(instance: dg.DagsterInstance) -> dict:
    """In a throwaway instance, outputs are handed over in memory (Dagster keeps every output
    of an in-process run until it ends anyway), not pickled to disk and read back as a second
    copy. In a persistent one, Dagster's default IO manager keeps each step's frame under the
    instance's storage (DAGSTER_HOME/storage/<asset>/<partition>), where the UI's own runs
    of the same assets find them (one of its runs may materialize an upsert asset alone)."""
    return {"io_manager": dg.mem_io_manager} if instance.is_ephemeral else {}


# The name of the runs that refresh the quarantine asset (the sync runs: `sync_<sync>`, the
# code location's job of the same assets, crm_sync/pipeline/automation.py)
QUARANTINE_JOB = "refresh_quarantine"


def _runs(spec: Spec, syncs: list[str] | None):
    """([(sync, the assets of its run)], [the quarantine asset]) for `syncs` (default: all)."""
    from crm_sync.pipeline.assets import build_assets
    from crm_sync.pipeline.sync_steps import sync_asset_names

    if syncs:
        unknown = set(syncs) - {s.name for s in spec.syncs}
        if unknown:
            raise ValueError(f"no sync named {sorted(unknown)}; known: "
                             f"{[s.name for s in spec.syncs]}")
    assets = build_assets(spec)
    by_name = {a.key.path[-1]: a for a in assets if a.partitions_def is not None}
    # One run per sync and partition: a run holds every output of its assets until it ends,
    # so one sync's frames at a time (not all syncs' at once) bound the memory of a backfill.
    runs = [(sync, [by_name[n] for n in sync_asset_names(sync)]) for sync in spec.syncs
            if sync.name in by_name and (not syncs or sync.name in syncs)]
    return runs, [a for a in assets if a.partitions_def is None]


def _waves(runs: list) -> list[list]:
    """The runs in waves, each sync after the targets of its associations (of the runs)."""
    from crm_sync.spec_links import target_syncs

    syncs = {sync.name: sync for sync, _ in runs}
    depth: dict[str, int] = {}

    def of(sync) -> int:  # (the spec refuses cycles)
        if sync.name not in depth:
            depth[sync.name] = 1 + max((of(syncs[t]) for t in target_syncs(sync) if t in syncs),
                                       default=-1)
        return depth[sync.name]

    waves: dict[int, list] = defaultdict(list)
    for run in runs:
        waves[of(run[0])].append(run)
    return [waves[level] for level in sorted(waves)]


# A run that held at least this many rows in frames is followed by a full garbage collection.
COLLECT_AFTER_ROWS = 20_000


def _rows_held(result: dg.ExecuteInProcessResult, sync: str) -> int:
    """Rows of the run that became frames: those read, less those set aside unchanged before
    pandas (crm_sync/transform/unchanged.py)."""
    validated = _metadata(result, f"validated_{sync}")
    return validated.get("rows_in", 0) - validated.get("rows_unchanged_skipped", 0)


def _add_counts(row: dict, result: dg.ExecuteInProcessResult, sync: str) -> None:
    """Add one run's counts to its sync's summary row."""
    validated = _metadata(result, f"validated_{sync}")
    upsert = _metadata(result, sync)
    row["rows_read"] += validated.get("rows_in", 0)
    row["quarantined"] += validated.get("rows_quarantined", 0) + upsert.get("failed", 0)
    for name in ("created", "updated", "unchanged", "superseded", "requests"):
        row[name] += upsert.get(name, 0)
    # associations (crm_sync/load/links.py): made by the upsert, and by its replay step
    replay = _metadata(result, f"{sync}_replay")
    row["linked"] += upsert.get("links_created", 0) + replay.get("links_created", 0)


@dataclass
class RunOutcome:
    """How one run of one sync partition ended: ok, failed or skipped (another run holds the
    partition, crm_sync/state/lease.py), with a readable message and, for --verbose, the details."""
    status: str
    message: str | None = None
    details: str | None = None
    result: dg.ExecuteInProcessResult | None = None


def _config_for(run_config: dict, selection: list[dg.AssetsDefinition]) -> dict:
    """The run config of one run: only the `ops` entries of the assets it materializes (a
    config naming every sync of the backfill is refused by each run)."""
    if "ops" not in run_config:
        return run_config
    names = {a.key.path[-1] for a in selection}
    return {**run_config, "ops": {k: v for k, v in run_config["ops"].items() if k in names}}


def _run_one(sync: str, selection, partition: str, resources, instance,
             run_config: dict, tags: dict | None = None, jobs: dict | None = None
             ) -> RunOutcome:
    """Materialize one sync partition; its failure is this run's only (the backfill goes on).
    `jobs`: the jobs built so far, reused (`_materialize`)."""
    try:
        result = _materialize(selection, partition_key=partition, resources=resources,
                              instance=instance, run_config=run_config,
                              job_name=f"sync_{sync}", tags=tags, jobs=jobs)
    except Exception as exc:  # refused before it ran (config, definitions): this run only
        return RunOutcome("failed", f"{type(exc).__name__}: {exc}", traceback.format_exc())
    if result.success:
        return RunOutcome("ok", result=result)
    status, message, details = _failure(result)
    return RunOutcome(status, message.removeprefix(f"{sync}: "), details, result)


def _failure(result: dg.ExecuteInProcessResult) -> tuple[str, str, str]:
    """(status, message, details) of a failed run: a partition another run holds, the failed
    blocking check's description, a dagster.Failure's description, or the exception."""
    failures = [e.step_failure_data for e in result.get_step_failure_events()]
    details = "\n".join(_traceback(f.error) for f in failures if f.error is not None)
    for failure in failures:
        user = failure.user_failure_data
        meta = {k: getattr(v, "value", v) for k, v in ((user and user.metadata) or {}).items()}
        if meta.get("skipped") == SKIPPED:
            return "skipped", user.description, details
    checks = [c.description for c in result.get_asset_check_evaluations()
              if not c.passed and c.severity == dg.AssetCheckSeverity.ERROR and c.description]
    if checks:
        return "failed", "; ".join(checks), details
    for failure in failures:
        if failure.user_failure_data is not None and failure.user_failure_data.description:
            return "failed", failure.user_failure_data.description, details
        if failure.error is not None:
            return "failed", failure.error.message.strip(), details
    # No step failed: the run itself did (a resource that could not start, ...)
    errors = [getattr(e.event_specific_data, "error", None) for e in result.all_events
              if e.is_resource_init_failure or e.event_type_value in _REPORTED_EVENTS]
    errors = [error for error in errors if error is not None]
    if errors:
        return "failed", errors[0].message.strip(), "\n".join(map(_traceback, errors))
    return "failed", "the run failed", details


def _traceback(error) -> str:
    """A Dagster error (SerializableErrorInfo) as Python prints an exception."""
    text = f"Traceback (most recent call last):\n{''.join(error.stack)}{error.message}"
    if error.cause is not None:
        text = f"{_traceback(error.cause)}\nThe above exception was the direct cause of the " \
               f"following exception:\n\n{text}"
    return text


def _report(outcome: RunOutcome, sync: str, partition: str, log, verbose: bool) -> None:
    """One line per run that did not succeed; the details only when asked for."""
    if outcome.status == "skipped":
        log(outcome.message)
    elif outcome.status == "failed":
        log(f"error: {sync} [{partition}]: {outcome.message}")
        if verbose and outcome.details:
            log(outcome.details)


def _materialize(assets, resources, instance, run_config, partition_key=None,
                 raise_on_error=False, job_name: str = "__ephemeral_asset_job__",
                 tags: dict | None = None, jobs: dict | None = None
                 ) -> dg.ExecuteInProcessResult:
    """`dg.materialize` as a job named `job_name`, with the terminal logger below as the run's
    console logger. `jobs`: a cache of the jobs built (by name): building the definitions and
    resolving the job costs ~0.3 s, the same for every partition of a sync."""
    job = (jobs or {}).get(job_name)
    if job is None:
        defs = dg.Definitions(assets=assets, resources=resources,
                              jobs=[dg.define_asset_job(job_name)],
                              loggers={"console": terminal_logger})
        job = defs.resolve_job_def(job_name)
        if jobs is not None:
            jobs[job_name] = job
    return job.execute_in_process(
        run_config=run_config, instance=instance, partition_key=partition_key,
        raise_on_error=raise_on_error, tags=tags)


class _TerminalFormatter(logging.Formatter):
    """`warning: <step> [<partition>]: <message>`: what the asset said, without run ids."""

    def format(self, record: logging.LogRecord) -> str:
        meta = getattr(record, LOG_RECORD_METADATA_ATTR, None) or {}
        partition = (meta.get("job_tags") or {}).get("dagster/partition")
        where = " ".join(filter(None, [meta.get("step_key"), partition and f"[{partition}]"]))
        message = meta.get("orig_message") or record.getMessage()
        return f"{record.levelname.lower()}: {where + ': ' if where else ''}{message}"


def _not_a_failure_event(record: logging.LogRecord) -> bool:
    """A failed step or run is reported once, by the backfill (`_report`): Dagster's own
    lines about it (the error with its stack, twice; the steps skipped after it) are left out."""
    meta = getattr(record, LOG_RECORD_METADATA_ATTR, None) or {}
    if str(meta.get("orig_message", "")).endswith(". Not executing."):
        return False  # "Dependencies for step X failed: [...]" (a plain log line, no event)
    return getattr(meta.get("dagster_event"), "event_type_value", None) not in _REPORTED_EVENTS


# (PIPELINE_FAILURE: a run's failure, by its old name)
_REPORTED_EVENTS = ("STEP_FAILURE", "STEP_SKIPPED", "RESOURCE_INIT_FAILURE", "PIPELINE_FAILURE",
                    "RUN_FAILURE")


@dg.logger(config_schema={"log_level": dg.Field(str, is_required=False,
                                                default_value="WARNING")},
           description="The backfill's console: the assets' warnings, one line each.")
def terminal_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    logger = logging.Logger("crm_sync.pipeline.in_process", level=init_context.logger_config["log_level"])
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_TerminalFormatter())
    handler.addFilter(_not_a_failure_event)
    logger.addHandler(handler)
    return logger


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


