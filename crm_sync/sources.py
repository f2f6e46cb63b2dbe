"""Where the source tables come from: DuckDB over the files in data/ (the embedded default),
a DuckDB database file, or any SQL database through a SQLAlchemy URL."""

from __future__ import annotations

import os
import re
from datetime import datetime
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
from pydantic import Field

from crm_sync.spec import PROJECT_ROOT

_TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# A row whose updated_at is missing, not a timestamp, or +-infinity belongs to no daily partition.
_NO_PARTITION = ("(TRY_CAST(updated_at AS TIMESTAMPTZ) IS NULL "
                 "OR isinf(TRY_CAST(updated_at AS TIMESTAMPTZ)))")


class SourceError(RuntimeError):
    """A source table cannot be read; the message names the table and what to do."""


class SourceResource(dg.ConfigurableResource):
    """Reads one day of a source table (rows whose `updated_at` falls in the partition)."""

    data_dir: str = Field(
        default_factory=lambda: os.environ.get("CRM_SYNC_DATA_DIR") or str(PROJECT_ROOT / "data"),
        description="folder with <table>.csv / <table>.parquet files ($CRM_SYNC_DATA_DIR)")
    duckdb_path: str | None = Field(default=None, description="read tables from this DuckDB file")
    url: str | None = Field(default=None, description="SQLAlchemy URL of a SQL database",
                            repr=False)

    def read_partition(self, table: str, start: datetime, end: datetime,
                       include_unpartitioned: bool = False) -> pd.DataFrame:
        """The rows whose `updated_at` falls in [start, end). With `include_unpartitioned`, also
        the rows of the whole table whose `updated_at` is missing or not a timestamp (they fall
        in no daily partition), flagged by a boolean column `_no_partition`, so that they are
        reported instead of silently never synced."""
        if not _TABLE_NAME.match(table):
            raise SourceError(f"invalid table name {table!r}")
        if self.url:
            return self._read_sql(table, start, end, include_unpartitioned)
        relation = self._relation(table)
        # Every column as text: the schemas check formats, the connectors convert types.
        flag = f", {_NO_PARTITION} AS _no_partition" if include_unpartitioned else ""
        orphans = f" OR {_NO_PARTITION}" if include_unpartitioned else ""
        query = (f"SELECT *{flag} FROM {relation} "  # nosec B608  # relation is validated above
                 "WHERE (TRY_CAST(updated_at AS TIMESTAMPTZ) >= CAST(? AS TIMESTAMPTZ) "
                 f"AND TRY_CAST(updated_at AS TIMESTAMPTZ) < CAST(? AS TIMESTAMPTZ)){orphans} "
                 "ORDER BY updated_at")
        with self._connect() as conn:
            try:
                return conn.execute(query, [start.isoformat(), end.isoformat()]).df()
            except duckdb.BinderException as exc:
                if '"updated_at" not found' in str(exc):
                    raise SourceError(f"source table {table!r} has no column updated_at, which "
                                      f"every source table needs (rows are synced by the day "
                                      f"of their updated_at)") from None
                raise SourceError(f"cannot read source table {table!r}: {exc}") from None
            except duckdb.Error as exc:
                raise SourceError(f"cannot read source table {table!r}: {exc}") from None

    def read_keys(self, table: str, key_column: str, keys: list[str]) -> pd.DataFrame:
        """The current rows of `table` whose `key_column` is one of `keys` (quarantine replay)."""
        if not (_TABLE_NAME.match(table) and _TABLE_NAME.match(key_column)):
            raise SourceError(f"invalid table or column name: {table}.{key_column}")
        if self.url:
            import sqlalchemy as sa

            engine = sa.create_engine(self.url)
            # B608 (nosec below): names matched _TABLE_NAME above; values are bound
            query = sa.text(f"SELECT * FROM {table} WHERE {key_column} IN :keys"  # nosec B608
                            ).bindparams(sa.bindparam("keys", expanding=True))
            try:
                with engine.connect() as conn:
                    frame = pd.read_sql(query, conn, params={"keys": list(keys)})
            finally:
                engine.dispose()
            frame = frame.map(lambda v: None if pd.isna(v) else str(v))
            if "updated_at" in frame.columns:
                frame["_no_partition"] = frame["updated_at"].isna()
            return frame
        relation = self._relation(table)
        with self._connect() as conn:
            # B608 (nosec below): names matched _TABLE_NAME above; values are bound
            return conn.execute(f"SELECT *, {_NO_PARTITION} AS _no_partition "  # nosec B608
                                f"FROM {relation} "  # names validated above
                                f"WHERE CAST({key_column} AS VARCHAR) IN (SELECT unnest(?))",
                                [list(keys)]).df()

    def all_keys(self, table: str, key_column: str) -> set[str]:
        """Every value of `key_column` in the whole table, as text (mirror: which synced rows
        are still in the source). Rows without a key are left out."""
        if not (_TABLE_NAME.match(table) and _TABLE_NAME.match(key_column)):
            raise SourceError(f"invalid table or column name: {table}.{key_column}")
        if self.url:
            import sqlalchemy as sa

            engine = sa.create_engine(self.url)
            query = sa.text(f"SELECT DISTINCT {key_column} FROM {table} "  # nosec B608  # names
                            f"WHERE {key_column} IS NOT NULL")  # validated above
            try:
                with engine.connect() as conn:
                    return {str(row[0]) for row in conn.execute(query)}
            except sa.exc.SQLAlchemyError as exc:
                raise SourceError(f"cannot read the keys of source table {table!r}: "
                                  f"{type(exc).__name__}") from None
            finally:
                engine.dispose()
        relation = self._relation(table)
        with self._connect() as conn:
            try:
                # B608 (nosec below): names matched _TABLE_NAME above; values are bound
                rows = conn.execute(f"SELECT DISTINCT CAST({key_column} AS VARCHAR) "  # nosec B608
                                    f"FROM {relation} WHERE {key_column} IS NOT NULL").fetchall()
            except duckdb.Error as exc:
                raise SourceError(f"cannot read the keys of source table {table!r}: "
                                  f"{exc}") from None
        return {row[0] for row in rows}

    def day_fingerprints(self, table: str) -> dict[str, str]:
        """Per day of `updated_at`: a fingerprint of that day's rows. A sensor compares them
        with the last ones it saw to start the syncs of the days that changed."""
        if not _TABLE_NAME.match(table):
            raise SourceError(f"invalid table name {table!r}")
        if self.url:
            import sqlalchemy as sa

            engine = sa.create_engine(self.url)
            # B608 (nosec below): names matched _TABLE_NAME above; values are bound
            query = sa.text(f"SELECT substr(CAST(updated_at AS VARCHAR(40)), 1, 10) AS day, "  # nosec B608
                            f"COUNT(*), MAX(updated_at) FROM {table} GROUP BY 1")
            try:
                with engine.connect() as conn:
                    return {str(d): f"{n}:{m}" for d, n, m in conn.execute(query)}
            finally:
                engine.dispose()
        relation = self._relation(table)
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT strftime(TRY_CAST(updated_at AS TIMESTAMPTZ) AT TIME ZONE 'UTC', "
                "'%Y-%m-%d') AS day, COUNT(*), MAX(updated_at), "
                # B608 (nosec below): names matched _TABLE_NAME above; values are bound
                f"SUM(hash(CAST(t AS VARCHAR))) FROM {relation} t GROUP BY 1"  # nosec B608
            ).fetchall()
        return {d: f"{n}:{m}:{h}" for d, n, m, h in rows if d}

    def _connect(self):
        return duckdb.connect(self.duckdb_path or ":memory:", read_only=bool(self.duckdb_path))

    def _relation(self, table: str) -> str:
        if self.duckdb_path:  # typed columns read as text, like the CSV files
            # B608 (nosec below): every caller matched `table` against _TABLE_NAME
            return f"(SELECT CAST(COLUMNS(*) AS VARCHAR) FROM {table})"  # nosec B608
        folder = Path(self.data_dir)
        for suffix, reader in ((".parquet", "(SELECT CAST(COLUMNS(*) AS VARCHAR) "
                                            "FROM read_parquet({}))"),
                               (".csv", "read_csv({}, all_varchar=true, header=true)")):
            path = folder / f"{table}{suffix}"
            if path.exists():
                if path.stat().st_size == 0:
                    raise SourceError(f"source table {table!r} is an empty file ({path}): not "
                                      f"even a header row. Write at least the header line.")
                return reader.format("'" + str(path).replace("'", "''") + "'")
        raise SourceError(f"source table {table!r} not found: no {table}.csv or {table}.parquet "
                          f"in {folder}")

    def _read_sql(self, table: str, start: datetime, end: datetime,
                  include_unpartitioned: bool = False) -> pd.DataFrame:
        import sqlalchemy as sa

        engine = sa.create_engine(self.url)
        # In a SQL database updated_at is typed: a row without a timestamp has none at all.
        orphans = " OR updated_at IS NULL" if include_unpartitioned else ""
        # B608 (nosec below): names matched _TABLE_NAME above; values are bound
        query = sa.text(f"SELECT * FROM {table} WHERE (updated_at >= :start "  # nosec B608
                        f"AND updated_at < :end){orphans} ORDER BY updated_at")  # name validated
        params = {"start": start, "end": end}
        if engine.dialect.name == "sqlite":
            # SQLite has no timestamp type: timestamps are ISO-8601 text, compared as text.
            params = {k: v.strftime("%Y-%m-%dT%H:%M:%SZ") for k, v in params.items()}
        try:
            with engine.connect() as conn:
                frame = pd.read_sql(query, conn, params=params)
        except sa.exc.SQLAlchemyError as exc:
            raise SourceError(f"cannot read source table {table!r}: "
                              f"{type(exc).__name__}") from None
        finally:
            engine.dispose()
        frame = frame.map(lambda v: None if pd.isna(v) else str(v))
        if include_unpartitioned:
            frame["_no_partition"] = frame["updated_at"].isna()
        return frame
