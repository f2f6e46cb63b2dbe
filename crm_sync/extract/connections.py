"""The source a sync reads: the spec's `connections:` block (a DuckDB file, a folder of CSV /
Parquet files, a SQLAlchemy URL) and the sync's `source:` / `cursor_column:`.

A sync without a connection reads through the `source` resource (crm_sync/extract/sources.py,
the default). The values of a connection are resolved here, when the source is opened: `{env:
VAR}` and `${VAR}` are read from the environment then, so a secret is never part of the spec
object, an asset's metadata or a message (a SQL error's text has the URL and its password
redacted: `sql_errors.sql_error_text`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from crm_sync.errors import SourceError
from crm_sync.extract.sources import SourceResource

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def resolve(value, what: str) -> str | None:
    """A connection value read now: `{env: VAR}` (an EnvValue) or text with `${VAR}`."""
    if value is None:
        return None
    if hasattr(value, "env"):
        return _env(value.env, what)
    return _VAR.sub(lambda m: _env(m.group(1), what), str(value))


def _env(name: str, what: str) -> str:
    found = os.environ.get(name)
    if found is None:
        raise SourceError(f"{what}: the environment variable {name} is not set")
    return found


def open_connection(name: str, connection) -> SourceResource:
    """A SourceResource reading the spec's connection `name` (values resolved now)."""
    what = f"connection {name!r}"
    if connection.url is not None:
        return SourceResource(url=resolve(connection.url, what))
    if connection.duckdb is not None:
        return SourceResource(duckdb_path=resolve(connection.duckdb, what))
    return SourceResource(data_dir=resolve(connection.folder, what))


@dataclass(frozen=True)
class SyncSource:
    """What one sync reads: its resource, table (or query) and cursor column."""

    resource: Any  # a SourceResource
    table: str
    cursor: str = "updated_at"
    query: str | None = None

    def _extra(self, cursor: bool = True) -> dict:
        # Only what differs from a plain table by updated_at: a resource of an older shape
        # (or a test's stand-in) keeps working for the syncs that use neither.
        extra = {"cursor": self.cursor} if cursor and self.cursor != "updated_at" else {}
        return {**extra, "query": self.query} if self.query is not None else extra

    def read_partition(self, start, end, **kwargs):
        return self.resource.read_partition(self.table, start, end, **kwargs, **self._extra())

    def read_keys(self, key_column: str, keys: list[str]):
        return self.resource.read_keys(self.table, key_column, keys, **self._extra())

    def all_keys(self, key_column: str) -> set[str]:
        return self.resource.all_keys(self.table, key_column, **self._extra(cursor=False))

    def day_fingerprints(self) -> dict[str, str]:
        return self.resource.day_fingerprints(self.table, **self._extra())


def sync_source(sync, default: SourceResource) -> SyncSource:
    """The source `sync` reads: its spec connection, or `default` (the `source` resource)."""
    resource = default
    if sync.source_connection:
        resource = open_connection(sync.source_connection, sync.connection)
    return SyncSource(resource, sync.source, sync.cursor_column, sync.source_query)
