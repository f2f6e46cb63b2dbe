"""Dagster resources that are not CRM connections."""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from crm_sync.state.store import SyncStore, default_store_path


class StoreResource(dg.ConfigurableResource):
    """The sync store (state + quarantine), a SQLite file usable from several processes."""

    path: str = Field(default_factory=default_store_path,
                      description="SQLite file of the sync state and the quarantine")

    def get(self) -> SyncStore:
        return SyncStore(self.path)
