"""Bulk inserts and upserts on the PostgreSQL store: `executemany` of one `INSERT INTO t (...)
VALUES (?, ...) [ON CONFLICT (...) DO ...]` over many rows becomes COPY (`_PgConnection.
executemany`, crm_sync/state/backends.py, sends every such statement here; the callers keep
SQLite's spelling and their one statement).

Why: psycopg's executemany sends the statement once per row (pipelined, but each row is still
bound and executed on its own): 10,000 `sync_state` upserts took 103 ms, COPY and one INSERT
... SELECT 62 ms (the statement alone); in bench section 9, where the runner's threads share
the interpreter, the store's time per chunk of 10,000 rows halved (BENCHMARKS.md, "Round 2,
COPY path").

How, exactly as executemany row by row would:

- a plain INSERT: COPY straight into the table (a duplicate key fails it as it fails the
  executemany: the same UniqueViolation, the transaction aborted either way);
- an upsert: COPY into a temporary table of the same columns (`CREATE TEMP TABLE ... AS SELECT
  <columns> FROM <table> WITH NO DATA`: the real table's column types, so COPY's text is read
  as the statement's parameters would be), then `INSERT INTO t (...) SELECT ... FROM temp
  ON CONFLICT ...` with the statement's own ON CONFLICT clause. One INSERT cannot change one
  row twice ("ON CONFLICT DO UPDATE command cannot affect row a second time"), and row by row
  the second row of a key sees the first one's result (sync_state's `crm_id =
  COALESCE(excluded.crm_id, sync_state.crm_id)`: keeping the last row only would not be the
  same). So each row gets its round, the how-manieth row of its key it is, and the rounds go
  in as one INSERT each, in order: every key's rows are applied in the order given, and rows of
  different keys never touch each other's row. Without duplicates (the usual case) that is one
  INSERT.

Below `THRESHOLD` rows the executemany stays: the temporary table costs a few statements more.
COPY's text is stricter than a parameter in one way: a float for an INTEGER column is refused
("1.0"), where a parameter's assignment cast rounds it; the store's integer columns get ints.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from operator import itemgetter

# Rows from which COPY is faster than executemany (measured: BENCHMARKS.md, "Round 2, COPY path")
THRESHOLD = 200

_INSERT = re.compile(r"\s*INSERT\s+INTO\s+(\w+)\s*\(([\w,\s]+)\)\s*VALUES\s*\(([?,\s]+)\)(.*)",
                     re.DOTALL)
_CONFLICT = re.compile(r"ON\s+CONFLICT\s*\(([\w,\s]+)\)\s*DO\s")


@dataclass(frozen=True)
class BulkInsert:
    table: str
    columns: tuple[str, ...]
    key: tuple[int, ...] | None  # the ON CONFLICT target's positions in `columns`; None: none
    conflict: str  # the statement's ON CONFLICT clause ("" for a plain INSERT)


@lru_cache(maxsize=128)
def parse(sql: str) -> BulkInsert | None:
    """The statement as a BulkInsert, or None when it is not one COPY can do (anything but an
    INSERT of `?` values, or a parameter outside VALUES)."""
    found = _INSERT.fullmatch(sql)  # (the clause kept as written: its literals too)
    if found is None:
        return None
    table, names, marks, conflict = found.groups()
    columns = tuple(name.strip() for name in names.split(","))
    conflict = conflict.strip()
    if "".join(marks.split()) != ",".join("?" * len(columns)) or "?" in conflict:
        return None
    if not conflict:
        return BulkInsert(table, columns, None, "")
    target = _CONFLICT.match(conflict)
    key = target and tuple(name.strip() for name in target.group(1).split(","))
    if not key or any(name not in columns for name in key):
        return None
    return BulkInsert(table, columns, tuple(columns.index(name) for name in key), conflict)


def write(raw, bulk: BulkInsert, rows: list[list]) -> None:
    """`rows` (values as the executemany would send them) into the table, on `raw`, a psycopg
    connection, inside its transaction (one is opened when there is none)."""
    from psycopg.pq import TransactionStatus

    if raw.info.transaction_status == TransactionStatus.IDLE:  # (autocommit: none open)
        with raw.transaction():
            _write(raw, bulk, rows)
    else:
        _write(raw, bulk, rows)


def _write(raw, bulk: BulkInsert, rows: list[list]) -> None:
    # (table and column names are the store's own constants, parsed from its statement; the
    # values travel in COPY's data, never in the SQL)
    columns = ", ".join(bulk.columns)
    if bulk.key is None:
        _copy(raw, f"COPY {bulk.table} ({columns}) FROM STDIN", rows)
        return
    temp = f"_bulk_{bulk.table}"
    raw.execute(f"CREATE TEMP TABLE {temp} ON COMMIT DROP AS SELECT {columns}, "  # nosec B608
                f"0 AS _round FROM {bulk.table} WITH NO DATA")
    rounds = _rounds(rows, bulk.key)
    if rounds is None:  # every key once (the usual case): one INSERT of every row
        _copy(raw, f"COPY {temp} ({columns}) FROM STDIN", rows)
        wheres = ["WHERE true"]
    else:
        _copy(raw, f"COPY {temp} FROM STDIN", [[*row, n] for row, n in zip(rows, rounds)])
        wheres = [f"WHERE _round = {n:d}" for n in range(1, max(rounds) + 1)]
    for where in wheres:
        raw.execute(f"INSERT INTO {bulk.table} ({columns}) SELECT {columns} "  # nosec B608
                    f"FROM {temp} {where} {bulk.conflict}")
    # (a failure above aborts the transaction: its rollback drops the table)
    raw.execute(f"DROP TABLE {temp}")


def _copy(raw, statement: str, rows) -> None:
    with raw.cursor() as cursor, cursor.copy(statement) as copy:
        for row in rows:
            copy.write_row(row)


def _rounds(rows: list[list], key: tuple[int, ...]) -> list[int] | None:
    """Per row, the how-manieth row of its key it is (1, 2, ...); None when every key comes
    once. Keys compared as the text PostgreSQL compares (the store's keys are text columns:
    1 and "1" are one key there)."""
    values = list(map(itemgetter(*key), rows))
    if len(set(values)) == len(values) and all(
            type(part) is str for value in values  # (exactly str: its own text)
            for part in (value if len(key) > 1 else (value,))):
        return None
    seen: Counter = Counter()
    rounds = []
    for row in rows:
        text = tuple(str(row[i]) for i in key)
        seen[text] += 1
        rounds.append(seen[text])
    return rounds
