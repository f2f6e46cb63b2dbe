"""A columnar copy of each source file (a CSV or Parquet file of the data folder), made once per
version of the file and shared by every partition run and process.

Reading one day of a CSV file used to read the whole file (DuckDB over the CSV, every run):
a backfill of 7 days read it 7 times per sync. The copy is a Parquet file with the table's
columns (as text, as the CSV is read), the line's ordinal (`ROW`) and the cursor parsed as a
timestamp (`TS`), ordered by that timestamp then by the line: a day's rows are then a few
consecutive row groups, and DuckDB skips the others on their min/max statistics of `TS`
(filter pushdown into the Parquet scan, zonemaps:
https://duckdb.org/docs/current/data/parquet/overview). The rows in no partition (no
timestamp, +-infinity, before the first partition, after today's) sort to the two ends, so
they are pruned row groups too.

A copy is keyed by the file's identity (absolute path, size, mtime_ns, inode, header) and the
cursor column: a file changed in place gets a new copy at its next read and the older copies of
it are removed. The malformed lines DuckDB set aside while copying a CSV are stored beside it
(`<name>.json`, with the row count) so that a read of the copy reports them as a read of the
file does. A copy is written under a temporary name and renamed (atomic): a reader never sees
half a file; processes building the same copy at once wait on one lock file, so one builds it.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from crm_sync.extract import csvsource

# Column names of the copy's own columns (no source table is expected to use them).
ROW = "__crm_sync_row"
TS = "__crm_sync_ts"
# Rows per row group: a day of a 1,000,000-row table over 7 days (~143,000 rows) reads at most
# two partial groups beyond its own, and the per-group metadata stays small.
ROW_GROUP_ROWS = 20_480

# How many copies this process built (read by the tests: a second read must not build again).
builds = 0


@dataclass(frozen=True)
class Copy:
    """A copy that is ready: its Parquet file, the source's row count and malformed lines."""
    parquet: Path
    rows: int
    malformed: list[dict]


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _digest(*parts) -> str:
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def _names(folder: Path, path: Path, cursor: str, header: list[str] | None) -> tuple[str, str]:
    """(the entry of this file and cursor, the version of it now): file name prefixes."""
    path = path.absolute()
    stat = path.stat()
    entry = f"{path.stem[:40]}-{_digest(str(path), cursor)}"
    return entry, f"{entry}-{_digest(stat.st_size, stat.st_mtime_ns, stat.st_ino, header)}"


def ready(folder: Path, name: str) -> Copy | None:
    """The copy `name` in `folder` if it was published (its Parquet file exists)."""
    parquet = folder / f"{name}.parquet"
    if not parquet.exists():
        return None
    try:
        meta = json.loads((folder / f"{name}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return Copy(parquet, int(meta["rows"]), list(meta["malformed"]))


def copy_of(conn, folder: Path, path: Path, relation: str, cursor: str,
            header: list[str] | None) -> Copy | None:
    """The copy of the source file `path` (read by DuckDB as `relation` on `conn`), built now
    if there is none for its current version. None when the copy cannot be written (a read-only
    cache folder) or the file changed while it was copied: the caller reads the file itself.
    DuckDB errors (a missing cursor column, ...) and CsvFileError propagate."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        entry, name = _names(folder, path, cursor, header)
    except OSError:
        return None
    found = ready(folder, name)
    if found is not None:
        return found
    try:
        with _lock(folder / f"{entry}.lock"):
            found = ready(folder, name)  # another process built it while this one waited
            if found is None:
                found = _build(conn, folder, path, relation, cursor, header, name)
                if found is not None:
                    _remove_others(folder, entry, name)
            return found
    except OSError:
        return None


def _build(conn, folder: Path, path: Path, relation: str, cursor: str,
           header: list[str] | None, name: str) -> Copy | None:
    global builds
    temp = folder / f"{name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
    try:
        # The line order: a scan, a subquery of one and a window with an empty OVER keep the
        # rows' order, and row_number() OVER () makes it a column
        # (https://duckdb.org/docs/2.0/sql/dialect/order_preservation.html).
        # B608 (nosec below): relation is built from validated names, cursor matched a pattern
        (rows,) = conn.execute(
            f"COPY (SELECT *, TRY_CAST({cursor} AS TIMESTAMPTZ) AS {TS} FROM "  # nosec B608
            f"(SELECT *, row_number() OVER () AS {ROW} FROM {relation}) "
            f"ORDER BY {TS} NULLS LAST, {ROW}) TO {_literal(str(temp))} "
            f"(FORMAT parquet, ROW_GROUP_SIZE {ROW_GROUP_ROWS}, COMPRESSION zstd)").fetchone()
        malformed = csvsource.rejected_lines(conn, path) if header is not None else []
        if _names(folder, path, cursor, header)[1] != name:
            return None  # the file changed while it was read: this copy is of neither version
        meta = folder / f"{name}.json"
        meta_temp = temp.with_suffix(".json.tmp")
        meta_temp.write_text(json.dumps({"source": str(path.absolute()), "rows": int(rows),
                                         "malformed": malformed}), encoding="utf-8")
        os.replace(meta_temp, meta)  # before the Parquet file: a published copy has its notes
        os.replace(temp, folder / f"{name}.parquet")
        builds += 1
        return Copy(folder / f"{name}.parquet", int(rows), malformed)
    finally:
        for leftover in (temp, temp.with_suffix(".json.tmp")):
            leftover.unlink(missing_ok=True)


def _remove_others(folder: Path, entry: str, keep: str) -> None:
    """Remove the older versions of this entry, and the copies of files that are gone."""
    for meta in folder.glob("*.json"):
        files = [folder / f"{meta.stem}.parquet", meta]
        if not meta.stem.startswith(f"{entry}-"):
            try:
                if Path(json.loads(meta.read_text(encoding="utf-8"))["source"]).exists():
                    continue
            except (OSError, ValueError, KeyError, TypeError):
                continue
            files.append(folder / f"{meta.stem.rsplit('-', 1)[0]}.lock")  # nobody reads it
        elif meta.stem == keep:
            continue
        for file in files:
            file.unlink(missing_ok=True)


@contextmanager
def _lock(path: Path):
    """An exclusive lock on `path` across processes (fcntl; without it, none: builders then
    race, each to its own temporary file, and the last rename wins)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
