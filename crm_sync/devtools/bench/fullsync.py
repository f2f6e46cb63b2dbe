"""Sections 5-6: full syncs through the real pipeline in child processes (peak RSS, rows/s at
two sizes), then an incremental sync after 1% of the rows changed."""

from __future__ import annotations

import json
# B404: our own module in a child process, with a fixed argument list and no shell.
import subprocess  # nosec B404
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from crm_sync.devtools.bench.util import reset
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
    seconds: float = 0.0
    peak_rss_mb: float = 0.0
    summary: list[dict] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(row["rows_read"] for row in self.summary)

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0

    def unaccounted(self) -> dict[str, int]:
        """Per sync: rows read - (created + updated + unchanged + quarantined); 0 when every
        row ended in exactly one bucket."""
        return {row["sync"]: row["rows_read"] - sum(row.get(k, 0) for k in (
            "created", "updated", "unchanged", "quarantined")) for row in self.summary}


def full_sync(label: str, spec: Spec, data: Path, store: Path, url: str,
              partitions: list[str] | None = None) -> FullSync:
    """Every partition with data, synced by a child process; its seconds and peak RSS."""
    config = {"data_dir": str(data), "store": str(store), "url": url,
              "partitions": partitions or partitions_with_data(spec, data)}
    # B603: a fixed argument list (this interpreter, our own module, a JSON config), no shell.
    done = subprocess.run([sys.executable, "-m", "crm_sync.devtools.bench.child",  # nosec B603
                           json.dumps(config)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the {label} sync failed:\n{done.stderr[-4000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return FullSync(label, result["seconds"], result["peak_rss_mb"], result["summary"])


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
    first: FullSync
    second: FullSync
    changed: dict[str, int]
    sent: dict[str, int]

    @property
    def sent_per_changed(self) -> float:
        changed = sum(self.changed.values())
        return sum(self.sent.values()) / changed if changed else 0.0

    @property
    def time_ratio(self) -> float:
        return self.second.seconds / self.first.seconds if self.first.seconds else 0.0


def incremental(spec: Spec, data: Path, store: Path, url: str, first: FullSync,
                partitions: list[str] | None = None) -> Incremental:
    changed = change_one_percent(spec, data, store)
    since = time.time()
    second = full_sync("incremental", spec, data, store, url, partitions)
    return Incremental(first, second, changed, sent_since(spec, store, since))


def scale_and_incremental(spec: Spec, small: Path, large: Path, url: str, workdir: Path,
                          partitions: list[str] | None = None, log=print
                          ) -> tuple[FullSync, FullSync, Incremental]:
    reset(url)
    a = full_sync("small", spec, small, fresh_store(workdir / "full-small.sqlite"), url,
                  partitions)
    log(f"  full sync of {a.rows:,} rows: {a.seconds:.1f} s, peak RSS {a.peak_rss_mb:.0f} MB")
    reset(url)
    store = fresh_store(workdir / "full-large.sqlite")
    b = full_sync("large", spec, large, store, url, partitions)
    log(f"  full sync of {b.rows:,} rows: {b.seconds:.1f} s, peak RSS {b.peak_rss_mb:.0f} MB")
    c = incremental(spec, large, store, url, b, partitions)
    log(f"  incremental sync after {sum(c.changed.values()):,} changed rows: "
        f"{sum(c.sent.values()):,} sent, {c.second.seconds:.1f} s")
    return a, b, c
