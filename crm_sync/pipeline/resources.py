"""Dagster resources that are not CRM connections."""

from __future__ import annotations

import dagster as dg
from pydantic import Field, PrivateAttr

from crm_sync.state.store import SyncStore, default_store_path


class StoreResource(dg.ConfigurableResource):
    """The sync store (state + quarantine), usable from several processes: a SQLite file, or
    a PostgreSQL database for several machines (crm_sync/state/backends.py)."""

    path: str = Field(default_factory=default_store_path,
                      description="The sync state and the quarantine: a SQLite file (or "
                                  "sqlite:///path), or postgresql+psycopg://user@host:5432/db")
    # The SyncStore of this resource's run: Dagster makes the resource anew for every run, and
    # each step of it asks for the store (~5 times a run); opening one checks the store's schema
    # (1.4 ms on SQLite, profiled; more on PostgreSQL). Outside a run: a new one each time.
    # (Opened at the first ask, not at the run's start: a store that cannot be opened fails
    # the step that needs it, as before.)
    _in_run: bool = PrivateAttr(default=False)
    _store: SyncStore | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._in_run = True

    def get(self) -> SyncStore:
        if self._store is not None:
            return self._store
        store = SyncStore(self._location())
        if self._in_run:
            self._store = store
        return store

    def _location(self) -> str:
        # (an EnvVar is resolved by Dagster in a run; used outside one, it is read here)
        return self.path.get_value() if isinstance(self.path, dg.EnvVar) else self.path
