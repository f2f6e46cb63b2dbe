"""The SQL of one partition of a DuckDB source (a file, its columnar copy, a DuckDB table or
query), and what is added to the rows it reads: the cursor copied to `updated_at` and the CSV
lines that cannot be read, on a pandas DataFrame or a pyarrow Table alike."""

from __future__ import annotations

import os
import threading
from datetime import datetime

import duckdb
import pandas as pd

from crm_sync.errors import SourceError

# This thread's in-memory DuckDB over data_dir's files (`kept_connection`).
_KEPT = threading.local()


def utc(conn: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """`conn`, in UTC: naive timestamps are UTC, whatever the process's time zone."""
    conn.execute("SET TimeZone = 'UTC'")
    return conn


def kept_connection() -> duckdb.DuckDBPyConnection:
    """This thread's in-memory DuckDB, in UTC, opened once: opening one costs 15-40 ms, once
    per partition run (profiled). Each use finds it as a new one would be: every statement
    names the files it reads (DuckDB reads them again each time), and the CSV lines earlier
    reads could not parse are gone (`store_rejects` adds to reject_errors, which
    csvsource.rejected_lines reads as the last reads'). (A forked child opens its own.)"""
    if getattr(_KEPT, "conn", None) is None or _KEPT.pid != os.getpid():
        _KEPT.conn, _KEPT.pid = utc(duckdb.connect(":memory:")), os.getpid()
    _KEPT.conn.execute("DROP TABLE IF EXISTS reject_errors; DROP TABLE IF EXISTS reject_scans")
    return _KEPT.conn


def close_kept_connection() -> None:
    """Close this thread's kept DuckDB (the next use opens another): after a columnar copy
    was made on it, so the memory of sorting a whole table is not kept with it."""
    conn, _KEPT.conn = getattr(_KEPT, "conn", None), None
    if conn is not None:
        conn.close()


def range_notes(bounds: tuple[datetime, datetime]) -> tuple[str, str]:
    """Why a row is outside `bounds` (the first partition's start, the last one's end)."""
    lo, hi = bounds
    return (f"it is before {lo:%Y-%m-%d}, where the first daily partition (start_date) begins",
            f"it is at or after {hi:%Y-%m-%dT%H:%M:%SZ}, where the last daily partition that "
            f"exists now (today's) ends")


def _timestamp(value: datetime) -> str:
    """A bound as a TIMESTAMPTZ literal (a datetime's own text: no user input)."""
    return f"CAST('{value.isoformat()}' AS TIMESTAMPTZ)"


def partition_sql(relation: str, ts: str, cursor: str, start: datetime, end: datetime,
                  include_unpartitioned: bool, bounds, row: str | None = None,
                  drop: tuple[str, ...] = (), prune: bool = False) -> tuple[str, dict]:
    """The query of the rows of `relation` whose timestamp `ts` (an expression) is in
    [start, end), with (`include_unpartitioned`) those in no partition, flagged; ordered by
    the cursor's text, ties by the column `row` (the line order) when there is one. `drop`:
    the relation's own columns left out of the result. `prune`: `relation` is sorted by `ts`
    (a columnar copy): it is read as the disjoint ranges of `ts` the rows can be in, each a
    plain range DuckDB prunes row groups on (it scans every row group for the OR of them)."""
    flag = orphans = ""
    params: dict = {}
    if include_unpartitioned:
        no_partition = f"({ts} IS NULL OR isinf({ts}))"
        out = "NULL"
        if bounds:
            # Literal bounds (not parameters): DuckDB prunes a Parquet copy's row groups on them.
            lo, hi = _timestamp(bounds[0]), _timestamp(bounds[1])
            out = (f"(CASE WHEN isinf({ts}) THEN NULL WHEN {ts} < {lo} THEN $before "
                   f"WHEN {ts} >= {hi} THEN $after END)")
            params.update(zip(("before", "after"), range_notes(bounds)))
        flag = (f", ({no_partition} OR {out} IS NOT NULL) AS _no_partition, "
                f"CAST({out} AS VARCHAR) AS _out_of_range")
        orphans = f" OR {no_partition} OR {out} IS NOT NULL"
    if prune:
        relation = _pruned(relation, ts, start, end, include_unpartitioned, bounds)
    columns = f"* EXCLUDE ({', '.join(drop)})" if drop else "*"
    order = f"{cursor}, {row}" if row else cursor
    # B608 (nosec below): relation and names are validated by the caller; values are bound
    sql = (f"SELECT {columns}{flag} FROM {relation} "  # nosec B608
           f"WHERE ({ts} >= {_timestamp(start)} AND {ts} < {_timestamp(end)}){orphans} "
           f"ORDER BY {order}")
    return sql, params


def _pruned(relation: str, ts: str, start: datetime, end: datetime,
            include_unpartitioned: bool, bounds) -> str:
    """`relation` as the union of its rows in the ranges of `ts` a partition read can keep:
    the day, and for the rows in no partition none (null), -infinity or before the first
    partition, +infinity or from today's end on. The ranges do not overlap."""
    ranges = [f"{ts} >= {_timestamp(start)} AND {ts} < {_timestamp(end)}"]
    if include_unpartitioned:
        low = f"{ts} < {_timestamp(min(start, bounds[0]))}" if bounds else \
            f"{ts} = CAST('-infinity' AS TIMESTAMPTZ)"
        high = f"{ts} >= {_timestamp(max(end, bounds[1]))}" if bounds else \
            f"{ts} = CAST('infinity' AS TIMESTAMPTZ)"
        ranges += [f"{ts} IS NULL", low, high]
    # B608 (nosec below): relation and ts come from the caller, the bounds are datetimes
    return "(" + " UNION ALL ".join(f"SELECT * FROM {relation} WHERE {r}"  # nosec B608
                                    for r in ranges) + ")"


def quoted(path) -> str:
    return "'" + str(path).replace("'", "''") + "'"  # a literal, quotes doubled


def fetch(conn, sql: str, params: dict, arrow: bool):
    """The rows of a query, as an Arrow Table (DuckDB's own) or a DataFrame."""
    result = conn.sql(sql, params=params or None)
    return result.to_arrow_table() if arrow else result.df()


def check_readable(table: str, rows, malformed: list[dict], total) -> None:
    """Refuse a CSV file none of whose lines fits the header (`total()`: its rows)."""
    if malformed and rows.shape[0] == 0 and not total():
        # Not one line fits the header: the file is wrong, not some of its lines.
        raise SourceError(
            f"source table {table!r}: none of its {len(malformed)} line(s) can be "
            f"read with the header's columns ({malformed[0]['description']}); check "
            f"the header and the delimiter (a comma)")


def as_cursor(rows, cursor: str):
    """The rows (DataFrame or Table) with `updated_at` holding the cursor column (what
    validation and the runner read as the row's day and version)."""
    if cursor == "updated_at":
        return rows
    if isinstance(rows, pd.DataFrame):
        if cursor in rows.columns:
            rows["updated_at"] = rows[cursor]
        return rows
    if cursor not in rows.column_names:
        return rows
    if "updated_at" in rows.column_names:
        return rows.set_column(rows.column_names.index("updated_at"), "updated_at",
                               rows[cursor])
    return rows.append_column("updated_at", rows[cursor])


def with_malformed(frame: pd.DataFrame, lines: list[dict]) -> pd.DataFrame:
    """`frame` plus one row per CSV line that could not be read: every table column empty,
    flagged `_no_partition` (it belongs to no partition: its updated_at is unknown)."""
    if not lines:
        return frame
    bad = pd.DataFrame({column: [None] * len(lines) for column in frame.columns})
    bad["_no_partition"] = True
    bad["_malformed_key"] = [line["key"] for line in lines]
    bad["_malformed"] = [line["description"] for line in lines]
    frame = frame.assign(_malformed_key=None, _malformed=None)
    return pd.concat([frame, bad], ignore_index=True).astype(
        {c: object for c in frame.columns if c not in ("_no_partition",)})


def arrow_with_malformed(table, lines: list[dict]):
    """`with_malformed` on a pyarrow Table: the same rows and columns, text as strings."""
    import pyarrow as pa

    if not lines:
        return table
    table = table.append_column("_malformed_key", pa.nulls(table.num_rows, pa.string()))
    table = table.append_column("_malformed", pa.nulls(table.num_rows, pa.string()))
    values = {"_no_partition": pa.array([True] * len(lines)),
              "_malformed_key": pa.array([line["key"] for line in lines], pa.string()),
              "_malformed": pa.array([line["description"] for line in lines], pa.string())}
    bad = pa.table({field.name: values.get(field.name, pa.nulls(len(lines), field.type))
                    for field in table.schema})
    return pa.concat_tables([table, bad])


def to_arrow(frame: pd.DataFrame):
    """A pandas partition as a pyarrow Table, a column of nothing but nulls typed as text (as
    DuckDB's own Arrow output types it)."""
    import pyarrow as pa

    table = pa.Table.from_pandas(frame, preserve_index=False)
    return table.cast(pa.schema([pa.field(f.name, pa.string()) if pa.types.is_null(f.type)
                                 else f for f in table.schema]))
