"""StoreResource opens the sync store once per run (each step of a run asks for it), and
anew in every run: a store file replaced between two runs is the new one."""

from __future__ import annotations

import dagster as dg

from crm_sync.pipeline import resources
from crm_sync.pipeline.resources import StoreResource
from crm_sync.state.store import SyncStore


def test_one_store_per_run_and_a_new_one_in_the_next_run(tmp_path, monkeypatch):
    opened: list[str] = []

    class Counting(SyncStore):
        def __init__(self, location):
            opened.append(str(location))
            super().__init__(location)

    monkeypatch.setattr(resources, "SyncStore", Counting)
    seen: list[int] = []

    @dg.asset
    def first(store: StoreResource) -> int:
        seen.append(id(store.get()))
        return len(store.get().state_frame())

    @dg.asset
    def second(first: int, store: StoreResource) -> int:
        seen.append(id(store.get()))
        return first

    path = tmp_path / "store.sqlite"
    resource = StoreResource(path=str(path))
    for run in range(2):
        if run:  # the file replaced between the runs: the second run must open the new one
            path.unlink()
        assert dg.materialize([first, second], resources={"store": resource}).success
        assert path.exists()
    assert len(opened) == 2 and len(seen) == 4
    assert seen[0] == seen[1]  # both steps of a run: one store
    assert resource.get() is not resource.get()  # outside a run: a new one each time
