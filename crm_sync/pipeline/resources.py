"""Dagster resources that are not CRM connections."""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from crm_sync.state.store import SyncStore, default_store_path


class StoreResource(dg.ConfigurableResource):
    """The sync store (state + quarantine), usable from several processes: a SQLite file, or
    a PostgreSQL database for several machines (crm_sync/state/backends.py)."""

    path: str = Field(default_factory=default_store_path,
                      description="The sync state and the quarantine: a SQLite file (or "
                                  "sqlite:///path), or postgresql+psycopg://user@host:5432/db")

    def get(self) -> SyncStore:
        # (an EnvVar is resolved by Dagster in a run; used outside one, it is read here)
        path = self.path.get_value() if isinstance(self.path, dg.EnvVar) else self.path
        return SyncStore(path)
