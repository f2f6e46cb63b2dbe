"""`crm-sync store copy SOURCE DESTINATION`: move a sync store to another backend (a SQLite
file to PostgreSQL, typically) with every row that carries state, so that the first run on the
new store knows what the old one knew. Without the copy a run on an empty store creates every
Superleap lead a second time (creates have no idempotency key; issue 16).

Both stores are opened with SyncStore, which brings each to the current schema version, so the
columns are the same on both sides; the column lists are read from the destination. Copied:
the tables below (`COPIED`). Not copied: `partition_lease` (a live lock of a running run: a
lease copied would only make the new store wait for a run that is not there) and `store_meta`
(the destination has its own, at the same version).

Safety. The destination must hold no row in any table but `store_meta` (a store in use is
refused: there is no override). Every row is written in ONE destination write transaction
(the whole-store lock on PostgreSQL, BEGIN IMMEDIATE on SQLite): a failure on the way leaves
the destination as empty as it was. The source is read inside its own write transaction, so
no run changes it while it is copied, and the counts compared at the end are those of one
moment; they are compared inside the destination transaction, which commits only if every
table's count is equal. Rows go in chunks (`CHUNK_ROWS`, keyset pagination on each table's
primary key), so a large store is never in memory whole. Locations are shown with `display`
(a URL without its password).
"""

from __future__ import annotations

from collections.abc import Callable

from crm_sync.errors import StoreCopyRefused, StoreError
from crm_sync.state import backends
from crm_sync.state.store import SyncStore

# Each table that carries state, with its primary key (the copy's order of pages).
COPIED = {
    "sync_state": ("sync", "source_key"),
    "quarantine": ("sync", "source_key"),
    "write_ahead": ("sync", "source_key"),
    "matching_owners": ("sync", "matching_digest"),
    "sync_links": ("sync", "source_key", "association"),  # associations (state/links.py)
    "sending": ("sync", "source_key"),
}
NOT_COPIED = ("partition_lease", "store_meta")  # a live lock; the destination's own version
CHUNK_ROWS = 5_000


def open_stores(source: str, destination: str) -> tuple[SyncStore, SyncStore]:
    """Both stores, opened (each created or upgraded to the current schema). Refused: a source
    SQLite file that does not exist (opening it would create an empty store), one store twice."""
    where = backends.parse(source)
    if where.kind == backends.SQLITE and not where.path.is_file():
        raise StoreCopyRefused(f"no sync store at {where.display}: nothing to copy")
    if _identity(where) == _identity(backends.parse(destination)):
        raise StoreCopyRefused(f"source and destination are the same store ({where.display})")
    return SyncStore(source), SyncStore(destination)


def _identity(where: backends.Location) -> str:
    """One store however it is spelled (a relative path, sqlite:///, the absolute path)."""
    if where.kind == backends.SQLITE:
        return str(where.path.resolve())
    return where.connect_string


def copy_store(source: SyncStore, destination: SyncStore,
               log: Callable[[str], None] = print) -> dict[str, int]:
    """Copy every row of the `COPIED` tables from `source` into the empty `destination`, in one
    destination transaction; returns the rows copied per table (equal to the source's counts:
    checked before the commit). StoreCopyRefused when the destination holds any row."""
    log(f"copying the sync store {source.display} -> {destination.display}")
    try:
        with source.transaction() as src, destination.transaction(durable=True) as dst:
            _refuse_unless_empty(destination, dst)
            copied = {}
            for table, key in COPIED.items():
                columns = sorted(destination.backend.columns(dst, table))
                copied[table] = _copy_table(src, dst, table, columns, key)
                log(f"  {table}: {copied[table]} rows copied")
            _verify(source.display, destination.display, _counts(src), _counts(dst))
    except (*source.errors, *destination.errors) as exc:
        if isinstance(exc, StoreError):
            raise
        reason = " ".join(str(exc).split())
        raise StoreError(f"copy of {source.display} to {destination.display} failed, rolled "
                         f"back: {type(exc).__name__}: {reason}") from exc
    log(f"verified: {destination.display} holds as many rows as {source.display} in every table")
    return copied


def _refuse_unless_empty(destination: SyncStore, conn) -> None:
    """Inside the destination's write transaction (no run can write between check and copy)."""
    tables = [t for t in (*COPIED, *NOT_COPIED) if t != "store_meta"]
    held = {t: n for t in tables
            if (n := conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0])}  # nosec B608
    if held:
        rows = ", ".join(f"{t}: {n}" for t, n in held.items())
        raise StoreCopyRefused(
            f"the destination store {destination.display} is not empty ({rows} rows): "
            f"refusing to copy into a store in use; nothing was written")


def _copy_table(src, dst, table: str, columns: list[str], key: tuple[str, ...]) -> int:
    """Page through the source table in primary-key order, `CHUNK_ROWS` rows at a time, each
    page written by `_write_chunk`. Returns the rows copied."""
    # (table and column names are this module's constants or the store's own columns)
    select = f"SELECT {', '.join(columns)} FROM {table}"  # nosec B608
    order = f" ORDER BY {', '.join(key)} LIMIT ?"
    after = f" WHERE ({', '.join(key)}) > ({', '.join('?' for _ in key)})"
    at = [columns.index(c) for c in key]
    copied, last = 0, None
    while True:
        if last is None:
            rows = src.execute(select + order, (CHUNK_ROWS,)).fetchall()
        else:
            rows = src.execute(select + after + order, (*last, CHUNK_ROWS)).fetchall()
        if not rows:
            return copied
        _write_chunk(dst, table, columns, rows)
        copied += len(rows)
        last = tuple(rows[-1][i] for i in at)


def _write_chunk(conn, table: str, columns: list[str], rows: list) -> None:
    """One page of rows into the destination (a plain INSERT: the table was empty, so a
    conflict is a defect, and fails the whole copy)."""
    conn.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES "  # nosec B608
                     f"({', '.join('?' for _ in columns)})", [tuple(row) for row in rows])


def _counts(conn) -> dict[str, int]:
    return {table: conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]  # nosec B608
            for table in COPIED}


def _verify(source: str, destination: str, before: dict[str, int], after: dict[str, int]):
    """Raise (the destination transaction then rolls back) unless every count is equal."""
    differ = {t: (before[t], after[t]) for t in COPIED if before[t] != after[t]}
    if differ:
        raise StoreError(
            f"copy of {source} to {destination} not verified, rolled back: " + ", ".join(
                f"{t}: {a} in the source, {b} copied" for t, (a, b) in differ.items()))
