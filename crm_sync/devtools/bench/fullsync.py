"""Full syncs through the real pipeline in child processes (child.py: seconds, peak RSS, where
the time went per step), and section 6: incremental syncs after 1% of the rows changed and
after nothing changed, at two table sizes. (Section 5, how cost grows: growth.py.)"""

from __future__ import annotations

import json
# B404: our own module in a child process, with a fixed argument list and no shell.
import subprocess  # nosec B404
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from crm_sync.devtools.bench.util import cpu_seconds, reset
from crm_sync.devtools.demo import partitions_with_data
from crm_sync.spec import Spec
from crm_sync.state.store import SyncStore

# The column changed in 1% of the rows of each table, and how (a value the rules accept).
CHANGES = {
    "leads": ("status", "CASE status WHEN 'lost' THEN 'new' ELSE 'lost' END"),
    "contacts": ("job_title", "job_title || ' (changed)'"),
    "companies": ("industry", "CASE industry WHEN 'Retail' THEN 'Finance' ELSE 'Retail' END"),
    "projects": ("status", "CASE status WHEN 'done' THEN 'active' ELSE 'done' END"),
}
EVERY = 100  # one row in EVERY is changed


@dataclass
class FullSync:
    label: str
    seconds: float = 0.0  # sync_partitions, in the child
    peak_rss_mb: float = 0.0
    summary: list[dict] = field(default_factory=list)
    wall: float = 0.0  # the child process, from its start to its exit
    rss_before_mb: float = 0.0  # the child's RSS once imported, before the sync
    crm_cpu: float = 0.0  # the sandbox's CPU seconds meanwhile (0: unknown)
    steps: dict = field(default_factory=dict)  # child.EventClock.totals

    @property
    def rows(self) -> int:
        return sum(row["rows_read"] for row in self.summary)

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0

    @property
    def sync_rss_mb(self) -> float:
        """What the sync added to the process's peak: peak RSS - RSS before the sync."""
        return self.peak_rss_mb - self.rss_before_mb

    def unaccounted(self) -> dict[str, int]:
        """Per sync: rows read - (created + updated + unchanged + quarantined); 0 when every
        row ended in exactly one bucket."""
        return {row["sync"]: row["rows_read"] - sum(row.get(k, 0) for k in (
            "created", "updated", "unchanged", "quarantined")) for row in self.summary}

    def breakdown(self) -> dict[str, float]:
        """The child's wall time in parts that add up to it: each kind of step (Dagster's
        STEP_START to STEP_SUCCESS), the upsert's split into this process's CPU and the rest
        (waiting for the CRM's answers, I/O), Dagster's per-run overhead (each run's span
        minus its steps), the time between runs (job definitions) apart from its garbage
        collections, and the process's own start, imports and exit."""
        steps = self.steps.get("steps", {})

        def wall(kind):
            return steps.get(kind, {}).get("seconds", 0.0)

        upsert = wall("upsert")
        upsert_cpu = min(steps.get("upsert", {}).get("cpu", 0.0), upsert)
        in_steps = sum(step["seconds"] for step in steps.values())
        runs = self.steps.get("run_seconds", 0.0)
        gc_between = self.steps.get("gc_between_runs", 0.0)  # the backfill's gc.collect()
        return {"source read": wall("source read"), "validation": wall("validation"),
                "upsert: crm_sync CPU": upsert_cpu, "upsert: waiting": upsert - upsert_cpu,
                "replay": wall("replay"), "mirror": wall("mirror"),
                "quarantine refresh": wall("quarantine refresh"),
                "Dagster per run": runs - in_steps,
                "between runs": self.seconds - runs - gc_between,
                "gc between runs": gc_between,
                "process start, imports, exit": self.wall - self.seconds}


def full_sync(label: str, spec: Spec, data: Path, store: Path, url: str,
              partitions: list[str] | None = None, crm_pid: int | None = None) -> FullSync:
    """Every partition with data, synced by a child process; its seconds and peak RSS."""
    config = {"data_dir": str(data), "store": str(store), "url": url,
              "partitions": partitions or partitions_with_data(spec, data)}
    crm_cpu, started = cpu_seconds(crm_pid), time.perf_counter()
    # B603: a fixed argument list (this interpreter, our own module, a JSON config), no shell.
    done = subprocess.run([sys.executable, "-m", "crm_sync.devtools.bench.child",  # nosec B603
                           json.dumps(config)], capture_output=True, text=True, check=False)
    wall, crm_cpu = time.perf_counter() - started, cpu_seconds(crm_pid) - crm_cpu
    if done.returncode != 0:
        raise RuntimeError(f"the {label} sync failed:\n{done.stderr[-4000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return FullSync(label, result["seconds"], result["peak_rss_mb"], result["summary"], wall,
                    result["rss_before_mb"], crm_cpu, result["steps"])


def fresh_store(path: Path) -> Path:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    SyncStore(path)
    return path


def change_one_percent(spec: Spec, data: Path, store: Path) -> dict[str, int]:
    """Change one row in EVERY of each table in place (same updated_at, so the rows stay in
    their partitions and only change detection can tell them apart). Returns, per sync, how
    many changed rows had been synced (their state exists): those must be sent again."""
    state = SyncStore(store)
    expected = {}
    with duckdb.connect() as conn:
        for sync in spec.syncs:
            column, change = CHANGES[sync.source]
            source, changed_file = data / f"{sync.source}.csv", data / f"{sync.source}.changed"
            path, temp = (str(f).replace("'", "''") for f in (source, changed_file))
            # B608: the names and expressions come from CHANGES and the sync spec, not input.
            every = f"row_number() OVER () % {EVERY} = 0"
            conn.execute(
                f"COPY (SELECT * REPLACE (CASE WHEN {every} THEN "  # nosec B608
                f"{change} ELSE {column} END AS {column}) "
                f"FROM read_csv('{path}', all_varchar=true, header=true)) "
                f"TO '{temp}' (HEADER, DELIMITER ',')")
            changed = conn.execute(
                f"SELECT {sync.source_key} FROM (SELECT {sync.source_key}, "  # nosec B608
                f"row_number() OVER () AS n FROM read_csv('{path}', all_varchar=true, "
                f"header=true)) WHERE n % {EVERY} = 0").fetchall()
            changed_file.replace(source)
            synced = set(state.state_frame(sync.name)["source_key"])
            expected[sync.name] = sum(1 for (key,) in changed if key in synced)
    return expected


def sent_since(spec: Spec, store: Path, since: float) -> dict[str, int]:
    """Per sync, rows sent since `since`, counted in the store: state written (confirmed) or
    quarantined by the CRM."""
    state = SyncStore(store)
    sent = {}
    for sync in spec.syncs:
        confirmed = state.state_frame(sync.name)
        rejected = state.quarantine_frame(sync.name)
        sent[sync.name] = int((confirmed["synced_at"] >= since).sum()) + int(
            ((rejected["stage"] == "crm") & (rejected["quarantined_at"] >= since)).sum())
    return sent


@dataclass
class Incremental:
    """A full sync of a table, then one after 1% of its rows changed, then one after nothing
    changed; rows sent by each (counted in the store) and the changed rows that had to be."""
    first: FullSync
    second: FullSync  # after 1% changed
    changed: dict[str, int]
    sent: dict[str, int]
    idle: FullSync | None = None  # after nothing changed
    sent_idle: dict[str, int] = field(default_factory=dict)

    @property
    def sent_per_changed(self) -> float:
        changed = sum(self.changed.values())
        return sum(self.sent.values()) / changed if changed else 0.0

    @property
    def time_ratio(self) -> float:
        return self.second.seconds / self.first.seconds if self.first.seconds else 0.0

    @property
    def idle_ratio(self) -> float:
        return self.idle.seconds / self.first.seconds if self.idle and self.first.seconds \
            else 0.0


def incremental(spec: Spec, data: Path, store: Path, url: str, first: FullSync,
                partitions: list[str] | None = None, crm_pid: int | None = None
                ) -> Incremental:
    """After `first` (a full sync of `data` into `store`): 1% changed and synced again, then
    synced once more with nothing changed."""
    changed = change_one_percent(spec, data, store)
    since = time.time()
    second = full_sync("incremental", spec, data, store, url, partitions, crm_pid)
    result = Incremental(first, second, changed, sent_since(spec, store, since))
    since = time.time()
    result.idle = full_sync("nothing changed", spec, data, store, url, partitions, crm_pid)
    result.sent_idle = sent_since(spec, store, since)
    return result


def synced_and_incremental(label: str, spec: Spec, data: Path, url: str, workdir: Path,
                           partitions: list[str] | None = None, crm_pid: int | None = None,
                           log=print) -> Incremental:
    """A full sync of `data` on an empty CRM and store, then `incremental`."""
    reset(url)
    store = fresh_store(workdir / f"full-{label}.sqlite")
    first = full_sync(label, spec, data, store, url, partitions, crm_pid)
    log(f"  full sync of {first.rows:,} rows: {first.seconds:.1f} s, peak RSS "
        f"{first.peak_rss_mb:.0f} MB")
    return incremental_after(first, spec, data, store, url, partitions, crm_pid, log)


def incremental_after(first: FullSync, spec: Spec, data: Path, store: Path, url: str,
                      partitions: list[str] | None = None, crm_pid: int | None = None,
                      log=print) -> Incremental:
    c = incremental(spec, data, store, url, first, partitions, crm_pid)
    log(f"  then {sum(c.changed.values()):,} rows changed: {sum(c.sent.values()):,} sent, "
        f"{c.second.seconds:.1f} s; nothing changed: {sum(c.sent_idle.values()):,} sent, "
        f"{c.idle.seconds:.1f} s")
    return c
