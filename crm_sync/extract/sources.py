"""Where the source tables come from: DuckDB over the files in data/ (the embedded default),
a DuckDB database file, or any SQL database through a SQLAlchemy URL."""

from __future__ import annotations

from contextlib import contextmanager

import re
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
from pydantic import Field

from crm_sync import paths
from crm_sync.extract import columnar, csvsource
from crm_sync.extract.frames import (arrow_with_malformed, as_cursor as _as_cursor,
                                     check_readable as _check_readable, close_kept_connection,
                                     fetch as _fetch, kept_connection, partition_sql,
                                     quoted as _quoted, range_notes, to_arrow as _to_arrow,
                                     utc, with_malformed as _with_malformed)
from crm_sync.errors import CsvFileError, SourceError  # SourceError re-exported: its old home
from crm_sync.extract.sql_errors import duckdb_error_text, sql_error_text

_TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# updated_at as a timestamp. Naive values are UTC: every DuckDB connection runs in UTC
# (`_connect`), whatever the process's time zone.
_TS = "TRY_CAST(updated_at AS TIMESTAMPTZ)"
# A row whose updated_at is missing, not a timestamp, or +-infinity belongs to no daily partition.
_NO_PARTITION = f"({_TS} IS NULL OR isinf({_TS}))"
# SQLite has no timestamp type: updated_at is text ('2026-11-04 10:00:00', '...T...Z',
# '+09:00' offsets, as pandas and SQLite write it), normalised to UTC text that sorts as time.
# (The GLOB keeps out what SQLite would read as a Julian day number or 'now'.)
_SQLITE_TS = ("(CASE WHEN CAST(updated_at AS TEXT) GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9]"
              "[0-9]*' THEN strftime('%Y-%m-%d %H:%M:%f', updated_at) END)")


def _on(fragment: str, cursor: str) -> str:
    """A fragment above on the cursor column `cursor` (a name matched by _TABLE_NAME)."""
    return fragment.replace("updated_at", cursor)


# Statements that make a SQL session read and write naive timestamps as UTC.
_UTC_SESSION = {"postgresql": "SET TIME ZONE 'UTC'", "mysql": "SET time_zone = '+00:00'"}


class SourceResource(dg.ConfigurableResource):
    """Reads one day of a source table (rows whose `updated_at` falls in the partition)."""

    data_dir: str = Field(
        default_factory=lambda: str(paths.data_dir()),
        description="folder with <table>.csv / <table>.parquet files ($CRM_SYNC_DATA_DIR)")
    duckdb_path: str | None = Field(default=None, description="read tables from this DuckDB file")
    url: str | None = Field(default=None, description="SQLAlchemy URL of a SQL database",
                            repr=False)
    cache_dir: str | None = Field(
        default=None, description="folder of the columnar copies of the data_dir files "
        "($CRM_SYNC_SOURCE_CACHE, else .crm_sync/source_cache)")
    use_cache: bool = Field(default=True, description="read a data_dir file's partitions from "
                            "its columnar copy (made at the first read of each file version)")

    def read_partition(self, table: str, start: datetime, end: datetime,
                       include_unpartitioned: bool = False,
                       bounds: tuple[datetime, datetime] | None = None,
                       cursor: str = "updated_at", query: str | None = None,
                       arrow: bool = False):
        """The rows whose `updated_at` falls in [start, end), compared as timestamps (naive ones
        are UTC). With `include_unpartitioned`, also the rows of the whole table that fall in
        no daily partition, flagged by a boolean column `_no_partition`, so that they are
        reported instead of silently never synced: those whose `updated_at` is missing or not a
        timestamp; with `bounds` (the first partition's start, the last one's end) those
        outside them too, `_out_of_range` saying why; and for a CSV file the lines that cannot
        be read (`_malformed_key`, `_malformed`: their identity and what is wrong).
        `cursor`: the column read instead of `updated_at` (the frame's `updated_at` is then a
        copy of it); `query`: a SQL query read instead of the table (`table` names it).
        `arrow`: the same rows and columns as a pyarrow Table (text columns, the flags boolean)
        instead of a pandas DataFrame."""
        _check_names(table, cursor)
        if self.url:
            frame = _as_cursor(self._read_sql(table, start, end, include_unpartitioned, bounds,
                                              cursor, query), cursor)
            return _to_arrow(frame) if arrow else frame
        with self._connect() as conn:
            try:
                rows, malformed = self._read_duckdb(conn, table, start, end,
                                                    include_unpartitioned, bounds, cursor,
                                                    query, arrow)
            except CsvFileError as exc:
                raise SourceError(f"source table {table!r}: {exc}") from None
            except duckdb.BinderException as exc:
                if f'"{cursor}" not found' in str(exc):
                    raise SourceError(f"source table {table!r} has no column {cursor}, which "
                                      f"every source table needs (rows are synced by the day "
                                      f"of their {cursor})") from None
                raise SourceError(f"cannot read source table {table!r}: {duckdb_error_text(exc)}") from None
            except duckdb.Error as exc:
                raise SourceError(f"cannot read source table {table!r}: {duckdb_error_text(exc)}") from None
        rows = _as_cursor(rows, cursor)
        if not include_unpartitioned:
            return rows
        return arrow_with_malformed(rows, malformed) if arrow else _with_malformed(rows, malformed)

    def _read_duckdb(self, conn, table, start, end, include_unpartitioned, bounds, cursor,
                     query, arrow):
        """One partition of a DuckDB source (the rows, as a DataFrame or an Arrow Table) and
        the CSV lines that cannot be read. A data_dir file is read from its columnar copy
        (crm_sync/extract/columnar.py), else from the file; either way ordered by the cursor,
        ties in the file's line order (validation keeps the last of rows sharing a key and an
        updated_at)."""
        relation = self._relation(table, query)
        path = None if query is not None else self._file_path(table)
        csv_path = path if path is not None and path.suffix == ".csv" else None
        copy = self._copy(conn, table, relation, cursor) if path is not None else None
        if copy is not None:
            sql, params = partition_sql(f"read_parquet({_quoted(copy.parquet)})", columnar.TS,
                                        cursor, start, end, include_unpartitioned, bounds,
                                        row=columnar.ROW, drop=(columnar.ROW, columnar.TS),
                                        prune=True)
            try:
                rows = _fetch(conn, sql, params, arrow)
            except duckdb.IOException:
                if copy.parquet.exists():
                    raise
                # Removed since by a process that copied a newer version: read the file.
            else:
                _check_readable(table, rows, copy.malformed, lambda: copy.rows)
                return rows, copy.malformed
        row = columnar.ROW if path is not None else None  # a file's line order
        source = (f"(SELECT *, row_number() OVER () AS {row} FROM {relation})"  # nosec B608
                  if row else relation)
        sql, params = partition_sql(source, _on(_TS, cursor), cursor, start, end,
                                    include_unpartitioned, bounds, row=row,
                                    drop=(row,) if row else ())
        rows = _fetch(conn, sql, params, arrow)
        malformed = csvsource.rejected_lines(conn, csv_path) if csv_path else []
        # B608 (nosec below): the relation is built from a validated table name
        count = f"SELECT count(*) FROM {relation}"  # nosec B608
        _check_readable(table, rows, malformed, lambda: conn.execute(count).fetchone()[0])
        return rows, malformed

    def read_keys(self, table: str, key_column: str, keys: list[str],
                  cursor: str = "updated_at", query: str | None = None) -> pd.DataFrame:
        """The current rows of `table` whose `key_column` is one of `keys` (quarantine replay)."""
        if not (_TABLE_NAME.match(table) and _TABLE_NAME.match(key_column)):
            raise SourceError(f"invalid table or column name: {table}.{key_column}")
        _check_names(table, cursor)
        if self.url:
            import sqlalchemy as sa

            with self._sql(f"source table {table!r}") as (conn, sqlite):
                ts = _on(_SQLITE_TS, cursor) if sqlite else cursor
                # B608 (nosec below): names matched _TABLE_NAME above; values are bound
                sql = sa.text(f"SELECT *, CASE WHEN {ts} IS NULL THEN 1 ELSE 0 END "  # nosec B608
                              f"AS _no_partition FROM {_sql_from(table, query)} "
                              f"WHERE {key_column} IN :keys"
                              ).bindparams(sa.bindparam("keys", expanding=True))
                frame = pd.read_sql(sql, conn, params={"keys": list(keys)})
            flag = frame.pop("_no_partition").astype(int).astype(bool)
            frame = frame.map(lambda v: None if pd.isna(v) else str(v))
            frame["_no_partition"] = flag
            return _as_cursor(frame, cursor)
        relation = self._relation(table, query)
        with self._connect() as conn:
            # B608 (nosec below): names matched _TABLE_NAME above; values are bound
            return _as_cursor(conn.execute(
                f"SELECT *, {_on(_NO_PARTITION, cursor)} AS _no_partition "  # nosec B608
                f"FROM {relation} "  # names validated above
                f"WHERE CAST({key_column} AS VARCHAR) IN (SELECT unnest(?))",
                [list(keys)]).df(), cursor)

    def all_keys(self, table: str, key_column: str, query: str | None = None) -> set[str]:
        """Every value of `key_column` in the whole table, as text (mirror: which synced rows
        are still in the source). Rows without a key are left out."""
        if not (_TABLE_NAME.match(table) and _TABLE_NAME.match(key_column)):
            raise SourceError(f"invalid table or column name: {table}.{key_column}")
        if self.url:
            import sqlalchemy as sa

            with self._sql(f"the keys of source table {table!r}") as (conn, _):
                sql = sa.text(f"SELECT DISTINCT {key_column} "  # nosec B608  # names
                              f"FROM {_sql_from(table, query)} "  # validated above
                              f"WHERE {key_column} IS NOT NULL")
                return {str(row[0]) for row in conn.execute(sql)}
        relation = self._relation(table, query)
        with self._connect() as conn:
            try:
                # B608 (nosec below): names matched _TABLE_NAME above; values are bound
                rows = conn.execute(f"SELECT DISTINCT CAST({key_column} AS VARCHAR) "  # nosec B608
                                    f"FROM {relation} WHERE {key_column} IS NOT NULL").fetchall()
                csv_path = None if query is not None else self._csv_path(table)
                malformed = csvsource.rejected_lines(conn, csv_path) if csv_path else []
            except CsvFileError as exc:
                raise SourceError(f"source table {table!r}: {exc}") from None
            except duckdb.Error as exc:
                raise SourceError(f"cannot read the keys of source table {table!r}: "
                                  f"{duckdb_error_text(exc)}") from None
        if malformed:  # a key on a line that cannot be read is unknown, not absent
            raise SourceError(f"cannot list the keys of source table {table!r}: "
                              f"{len(malformed)} line(s) cannot be read "
                              f"({malformed[0]['description']}); fix them first")
        return {row[0] for row in rows}

    def day_fingerprints(self, table: str, cursor: str = "updated_at",
                         query: str | None = None) -> dict[str, str]:
        """Per day of `updated_at` (`cursor`): a fingerprint of that day's rows. A sensor
        compares them with the last ones it saw to start the syncs of the days that changed."""
        _check_names(table, cursor)
        if self.url:
            import sqlalchemy as sa

            with self._sql(f"source table {table!r}") as (conn, sqlite):
                # The UTC day of the cursor (SQLite: of its text read as a timestamp).
                day = (f"substr({_on(_SQLITE_TS, cursor)}, 1, 10)" if sqlite
                       else f"substr(CAST({cursor} AS VARCHAR(40)), 1, 10)")
                # B608 (nosec below): names matched _TABLE_NAME above; values are bound
                sql = sa.text(f"SELECT {day} AS day, "  # nosec B608
                              f"COUNT(*), MAX({cursor}) FROM {_sql_from(table, query)} "
                              f"GROUP BY 1")
                return {str(d): f"{n}:{m}" for d, n, m in conn.execute(sql) if d}
        relation = self._relation(table, query)
        with self._connect() as conn:
            try:  # the copy the partition runs then read (rows DuckDB could read: the same)
                copy = None if query is not None else self._copy(conn, table, relation, cursor)
            except CsvFileError:  # a line not UTF-8: fingerprinted without it, as it was
                copy = None
            if copy is not None:
                relation = (f"(SELECT * EXCLUDE ({columnar.ROW}, {columnar.TS}) "  # nosec B608
                            f"FROM read_parquet({_quoted(copy.parquet)}))")
            rows = conn.execute(
                f"SELECT strftime(TRY_CAST({cursor} AS TIMESTAMPTZ) AT TIME ZONE 'UTC', "
                f"'%Y-%m-%d') AS day, COUNT(*), MAX({cursor}), "
                # B608 (nosec below): names matched _TABLE_NAME above; values are bound
                f"SUM(hash(CAST(t AS VARCHAR))) FROM {relation} t GROUP BY 1"  # nosec B608
            ).fetchall()
        return {d: f"{n}:{m}:{h}" for d, n, m, h in rows if d}

    def _copy(self, conn, table: str, relation: str, cursor: str):
        """The columnar copy of the table's data_dir file (None: read the file itself)."""
        path = None if not self.use_cache else self._file_path(table)
        if path is None:
            return None
        return columnar.copy_of(conn, paths.source_cache_dir(self.cache_dir), path, relation,
                                cursor, csvsource.header(path) if path.suffix == ".csv" else None)

    @contextmanager
    def _connect(self):
        """A DuckDB connection in UTC: over data_dir's files this thread's kept one; a DuckDB
        file's a read-only one of its own, closed after (it sees the file as it is now)."""
        if not self.duckdb_path:
            builds = columnar.builds
            try:
                yield kept_connection()
            finally:
                if columnar.builds != builds:  # it sorted a whole table: its memory goes too
                    close_kept_connection()
            return
        with utc(duckdb.connect(self.duckdb_path, read_only=True)) as conn:
            yield conn

    def _csv_path(self, table: str) -> Path | None:  # a Parquet file of the name wins
        path = self._file_path(table)
        return path if path is not None and path.suffix == ".csv" else None

    def _file_path(self, table: str) -> Path | None:
        """The data_dir file the table is read from (<table>.parquet, else <table>.csv)."""
        if self.duckdb_path:
            return None
        folder = Path(self.data_dir)
        for suffix in (".parquet", ".csv"):
            if (path := folder / f"{table}{suffix}").exists():
                return path
        return None

    def _relation(self, table: str, query: str | None = None) -> str:
        if query is not None:  # the user's own SQL (their spec), every column as text
            if not self.duckdb_path:
                raise SourceError(f"source {table!r}: a query source needs a DuckDB file or a "
                                  f"SQL database, not a folder of files")
            return f"(SELECT CAST(COLUMNS(*) AS VARCHAR) FROM ({query}))"  # nosec B608
        if self.duckdb_path:  # typed columns read as text, like the CSV files
            # B608 (nosec below): every caller matched `table` against _TABLE_NAME
            return f"(SELECT CAST(COLUMNS(*) AS VARCHAR) FROM {table})"  # nosec B608
        folder = Path(self.data_dir)
        for suffix in (".parquet", ".csv"):
            path = folder / f"{table}{suffix}"
            if path.exists():
                if path.stat().st_size == 0:
                    raise SourceError(f"source table {table!r} is an empty file ({path}): not "
                                      f"even a header row. Write at least the header line.")
                if suffix == ".csv":
                    try:
                        return csvsource.reader(path)
                    except CsvFileError as exc:
                        raise SourceError(f"source table {table!r} ({path}): {exc}") from None
                # B608 (nosec below): the only value is the file path, quoted as a literal
                return (f"(SELECT CAST(COLUMNS(*) AS VARCHAR) "  # nosec B608
                        f"FROM read_parquet({_quoted(path)}))")
        raise SourceError(f"source table {table!r} not found: no {table}.csv or {table}.parquet "
                          f"in {folder}")

    @contextmanager
    def _sql(self, what: str):
        """A connection to the SQL source (and whether it is SQLite), in a UTC session. Its
        errors become one SourceError naming `what`, with the driver's message and no
        credentials; the engine is disposed of whatever happens."""
        import sqlalchemy as sa

        engine = None
        try:
            engine = sa.create_engine(self.url)
            with engine.connect() as conn:
                _utc_session(conn)
                yield conn, engine.dialect.name == "sqlite"
        except sa.exc.SQLAlchemyError as exc:
            raise SourceError(f"cannot read {what}: {sql_error_text(exc, self.url)}") from None
        finally:
            if engine is not None:
                engine.dispose()

    def _read_sql(self, table: str, start: datetime, end: datetime,
                  include_unpartitioned: bool = False,
                  bounds: tuple[datetime, datetime] | None = None,
                  cursor: str = "updated_at", query: str | None = None) -> pd.DataFrame:
        import sqlalchemy as sa

        with self._sql(f"source table {table!r}") as (conn, sqlite):
            frame = self._read_partition_sql(sa, conn, sqlite, table, start, end,
                                             include_unpartitioned, bounds, cursor, query)
        flagged = {c: frame.pop(c) for c in ("_no_partition", "_out_of_range") if c in frame}
        frame = frame.map(lambda v: None if pd.isna(v) else str(v))
        if include_unpartitioned:
            frame["_no_partition"] = flagged["_no_partition"].astype(int).astype(bool)
            frame["_out_of_range"] = flagged["_out_of_range"].astype(object).where(
                flagged["_out_of_range"].notna(), None)
        return frame

    @staticmethod
    def _read_partition_sql(sa, conn, sqlite: bool, table, start, end, include_unpartitioned,
                            bounds, cursor, query) -> pd.DataFrame:
        """One partition of a SQL source, as read (before its flags are typed)."""
        # Compared as timestamps: SQLite's text normalised to UTC (`_SQLITE_TS`), elsewhere the
        # typed column in a UTC session.
        ts = _on(_SQLITE_TS, cursor) if sqlite else cursor
        params = {"start": start, "end": end}
        flags = orphans = ""
        if include_unpartitioned:
            invalid = f"({ts} IS NULL)"
            out = "NULL"
            if bounds:
                out = f"(CASE WHEN {ts} < :lo THEN :before WHEN {ts} >= :hi THEN :after END)"
                params.update(lo=bounds[0], hi=bounds[1],
                              **dict(zip(("before", "after"), range_notes(bounds))))
            flags = (f", CASE WHEN {invalid} OR {out} IS NOT NULL THEN 1 ELSE 0 END "
                     f"AS _no_partition, {out} AS _out_of_range")
            orphans = f" OR {invalid} OR {out} IS NOT NULL"
        # B608 (nosec below): names matched _TABLE_NAME above; values are bound
        sql = sa.text(f"SELECT *{flags} FROM {_sql_from(table, query)} "  # nosec B608
                      f"WHERE ({ts} >= :start "
                      f"AND {ts} < :end){orphans} ORDER BY {cursor}")  # names validated
        if sqlite:
            params = {k: _sqlite_time(v) for k, v in params.items()}
        return pd.read_sql(sql, conn, params=params)


def _check_names(table: str, cursor: str) -> None:
    if not _TABLE_NAME.match(table):
        raise SourceError(f"invalid table name {table!r}")
    if not _TABLE_NAME.match(cursor):
        raise SourceError(f"invalid cursor column name {cursor!r}")


def _sql_from(table: str, query: str | None) -> str:
    """What a SQL source reads: the table (a validated name) or the spec's query."""
    return table if query is None else f"({query}) AS source_query"


def _sqlite_time(value):
    """A bound timestamp as `_SQLITE_TS` writes them (UTC text); other values unchanged."""
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(timezone.utc)
        return value.strftime("%Y-%m-%d %H:%M:%S.") + f"{value.microsecond // 1000:03d}"
    return value


def _utc_session(conn) -> None:
    statement = _UTC_SESSION.get(conn.engine.dialect.name)
    if statement:
        import sqlalchemy as sa

        conn.execute(sa.text(statement))
