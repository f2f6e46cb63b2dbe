"""Unchanged rows are set aside before pandas (crm_sync/transform/unchanged.py): a second run
with nothing changed validates no row, yet every verdict and the end state (store, CRM) are
those of a run that validates every row. Over HTTP to the sandbox, real Dagster runs."""

from __future__ import annotations

import dagster as dg
import pandas as pd
import pyarrow as pa
import pytest

from crm_sync.definitions import build_resources
from crm_sync.extract.sources import SourceResource
from crm_sync.pipeline import validated_rows
from crm_sync.pipeline.assets import build_assets
from crm_sync.pipeline.in_process import sync_partitions
from crm_sync.state.quarantine import QuarantineEntry
from crm_sync.state.store import SyncStore
from crm_sync.transform import unchanged
from crm_sync_tests.bundled_spec import bundled_unlinked
from crm_sync_tests.conftest import BACKENDS, stored

SYNC = "contacts_to_hubspot"
DAY = "2026-11-03"
COLUMNS = ["contact_id", "email", "first_name", "last_name", "phone", "job_title",
           "lifecycle_stage", "company_id", "updated_at"]


def _row(n: int, **changes) -> dict:
    row = dict(zip(COLUMNS, [f"CT-{n:04d}", f"person{n}@example.com", "Ada", f"Last{n}",
                             "+1-555-000-0000", "CTO", "lead", "CO-1", f"{DAY}T0{n % 10}:00:00Z"]))
    return {**row, **changes}


def _write(data, rows: list[dict]) -> None:
    pd.DataFrame(rows, columns=COLUMNS).to_csv(data / "contacts.csv", index=False)


@pytest.fixture
def counted(monkeypatch) -> list[int]:
    """How many rows reach validation (validate_partition, pandera's caller) per run."""
    seen: list[int] = []
    real = validated_rows.validate_partition

    def counting(sync, source, partition=None):
        seen.append(len(source))
        return real(sync, source, partition=partition)

    monkeypatch.setattr(validated_rows, "validate_partition", counting)
    return seen


def _assets():
    spec = bundled_unlinked()
    return [a for a in build_assets(spec) if a.key.path[0] in
            ("source_contacts", f"validated_{SYNC}", SYNC)]


def _run(data, run_config=None) -> dg.ExecuteInProcessResult:
    resources = {**build_resources(), "source": SourceResource(data_dir=str(data))}
    result = dg.materialize(_assets(), partition_key=DAY, resources=resources,
                            run_config=run_config)
    assert result.success
    return result


def _meta(result, node: str) -> dict:
    [event] = result.asset_materializations_for_node(node)
    return {k: v.value for k, v in event.metadata.items() if isinstance(v.value, (int, float))}


def test_a_second_run_with_nothing_changed_validates_no_row(sandbox, store, tmp_path, counted):
    data = tmp_path / "data"
    data.mkdir()
    rows = [_row(n) for n in range(10)]
    _write(data, rows)
    first = _run(data)
    assert counted == [10]
    assert _meta(first, SYNC)["created"] == 10
    requests = sandbox.get("/_sandbox/stats").json()["counters"]["requests total"]

    again = _run(data)
    assert counted == [10, 0]  # before: [10, 10], every row validated and planned again
    validated, upsert = _meta(again, f"validated_{SYNC}"), _meta(again, SYNC)
    assert validated["rows_in"] == 10 and validated["rows_unchanged_skipped"] == 10
    assert upsert["rows_in"] == upsert["unchanged"] == 10
    assert upsert["created"] == upsert["updated"] == upsert["sent"] == 0
    assert sandbox.get("/_sandbox/stats").json()["counters"]["requests total"] == requests

    rows[3] = _row(3, job_title="CEO")
    _write(data, rows)
    changed = _run(data)
    assert counted == [10, 0, 1]  # only the changed row reaches pandera and the planner
    upsert = _meta(changed, SYNC)
    assert (upsert["rows_in"], upsert["updated"], upsert["unchanged"]) == (10, 1, 9)
    [record] = [r for r in stored(sandbox, "hubspot", "contacts")
                if r["properties"]["crm_sync_id"] == "CT-0003"]
    assert record["properties"]["jobtitle"] == "CEO"

    resync = _run(data, {"ops": {SYNC: {"config": {"full_resync": True}}}})
    assert _meta(resync, SYNC)["updated"] == 10  # a full resync sends every row again
    assert counted[-1] == 10


def _end_state(sandbox, store) -> dict:
    state = store.state_frame(SYNC)[["source_key", "payload_hash", "updated_at",
                                     "source_digest"]]
    quarantine = store.quarantine_frame(SYNC)[["source_key", "partition", "stage",
                                               "error_code", "rules", "message", "payload",
                                               "path"]]
    records = sorted((r["properties"].get("crm_sync_id"), r["properties"].get("email"),
                      r["properties"].get("jobtitle"), r["properties"].get("lastname"))
                     for r in stored(sandbox, "hubspot", "contacts"))
    return {"state": state.sort_values("source_key").to_dict("records"),
            "quarantine": quarantine.sort_values("source_key").to_dict("records"),
            "records": records}


def _scenario(sandbox, store, data, counted) -> list:
    """Four runs of one partition: unchanged rows, a changed one, a row gone bad then
    reverted, a key twice, a matching value (email, HubSpot ignores case) shared with an
    unchanged row, a row of no partition; what each run reported and the end state."""
    base = [_row(n) for n in range(8)] + [_row(90, updated_at="")]  # (of no partition)
    later = f"{DAY}T23:00:00Z"
    second = [*base[:8], base[8],
              _row(100, email="PERSON3@example.com", updated_at=later),  # shares row 3's
              _row(4, job_title="VP", updated_at=later)]  # key 4 twice: the newer goes on
    second[1] = _row(1, job_title="CFO")
    second[2] = _row(2, email="not an email")
    third = [*second[:9], second[10]]  # row 2 reverted, the email no longer shared
    third[2] = base[2]
    reports = []
    for rows in (base, second, third, third):
        _write(data, rows)
        result = _run(data)
        validated, upsert = _meta(result, f"validated_{SYNC}"), _meta(result, SYNC)
        reports.append(({k: validated[k] for k in ("rows_in", "rows_quarantined")},
                        {k: upsert[k] for k in ("rows_in", "created", "updated", "unchanged",
                                                "skipped", "failed", "superseded")}))
    return [reports, _end_state(sandbox, store), list(counted)]


def test_verdicts_and_end_state_are_those_of_validating_every_row(sandbox, store_url, tmp_path,
                                                                  counted, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    with_prefilter = _scenario(sandbox, SyncStore(store_url), data, counted)

    sandbox.post("/_sandbox/reset").raise_for_status()
    monkeypatch.setenv("CRM_SYNC_STORE", str(tmp_path / "without.sqlite"))
    counted.clear()
    real = unchanged.prefilter
    monkeypatch.setattr(unchanged, "prefilter", lambda sync, table, store, enabled=True:
                        real(sync, table, store, enabled=False))
    without = _scenario(sandbox, SyncStore(tmp_path / "without.sqlite"), data, counted)

    assert with_prefilter[:2] == without[:2]  # same reports, same store, same CRM records
    reports, end, _ = with_prefilter
    assert [r[1]["unchanged"] for r in reports] == [0, 4, 8, 8]
    assert [r[1]["rows_in"] for r in reports] == [8, 7, 8, 8]
    # the reverted row and the one whose email another row shared left the quarantine
    assert {q["source_key"] for q in end["quarantine"]} == {"CT-0090", "CT-0100"}
    assert all(s["source_digest"] for s in end["state"]) and len(end["state"]) == 8
    assert without[2] == [9, 11, 10, 10]  # every row validated in every run
    # set aside: the unchanged rows, never the row of no partition, key 4 twice, the row
    # whose email CT-0100 shared, the rows in the quarantine
    assert with_prefilter[2] == [9, 7, 5, 3]


def test_the_digests_survive_the_fs_io_manager(sandbox, tmp_path, monkeypatch, counted):
    """A persistent instance pickles the source Table and the validated frame (with the count
    set aside) through Dagster's filesystem IO manager."""
    data = tmp_path / "data"
    data.mkdir()
    _write(data, [_row(n) for n in range(6)])
    monkeypatch.setenv("CRM_SYNC_STORE", str(tmp_path / "store.sqlite"))
    resources = {**build_resources(), "source": SourceResource(data_dir=str(data))}
    (tmp_path / "home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "home")) as instance:
        assert not instance.is_ephemeral
        for _ in range(2):
            [summary] = sync_partitions([DAY], bundled_unlinked(), instance=instance,
                                        syncs=[SYNC], resources=resources, log=lambda *_: None)
            assert summary["partitions_ok"] == 1
        assert summary["unchanged"] == summary["rows_read"] == 6
        assert counted == [6, 0]
        stored_rows = list((tmp_path / "home" / "storage").rglob("*"))
        assert any(p.parts[-2:] == ("source_contacts", DAY) for p in stored_rows)


@pytest.mark.parametrize("store_backend", BACKENDS, indirect=True)
def test_store_keeps_source_digests_of_confirmed_rows_only(store):
    store.record_results("s", ["a", "b"], [], [("a", "1", "h1"), ("b", "2", "h2")],
                         source_digests={"a": "da", "b": "db"})
    assert store.source_digests("s", ["a", "b", "c"]) == {"a": "da", "b": "db"}
    # unchanged rows (no state rewritten) get theirs; a quarantined row loses its digest
    entry = QuarantineEntry(source_key="b", stage="crm", error_code="X", message="m")
    store.record_results("s", ["a"], [entry], [], source_digests={"a": "da2"})
    assert store.source_digests("s", ["a", "b"]) == {"a": "da2"}
    # a state written without one (replay) has none; forget drops it with the state
    store.record_results("s", ["a"], [], [("a", "1", "h3")])
    assert store.source_digests("s", ["a"]) == {}
    store.record_results("s", ["a"], [], [("a", "1", "h4")], source_digests={"a": "d4"})
    store.forget("s", ["a"])
    assert store.source_digests("s", ["a"]) == {}


def test_digests_cover_every_column_and_the_spec():
    sync = bundled_unlinked().sync(SYNC)
    table = pa.table({"contact_id": ["a", "b"], "email": ["x@y.z", None]})
    first = unchanged.with_digests(sync, table).column(unchanged.SOURCE_DIGEST).to_pylist()
    changed = unchanged.with_digests(sync, pa.table({"contact_id": ["a", "b"],
                                                     "email": ["x@y.z", ""]}))
    assert changed.column(unchanged.SOURCE_DIGEST).to_pylist()[0] == first[0]
    assert changed.column(unchanged.SOURCE_DIGEST).to_pylist()[1] != first[1]  # None != ""
    other = sync.model_copy(update={"quarantine_threshold": 0.2})
    assert unchanged.with_digests(other, table).column(
        unchanged.SOURCE_DIGEST).to_pylist()[0] != first[0]


@pytest.mark.parametrize("typed", [False, True])
def test_only_rows_with_a_key_of_their_own_may_be_set_aside(typed):
    """The candidates for setting aside: in a partition, with a key (blank text is none, as
    RE2's \\s reads blank) that no other row of the partition has, whatever the key column's
    type (text, or values DuckDB casts to text)."""
    sync = next(s for s in bundled_unlinked().syncs if s.name == SYNC)
    if typed:
        keys = pa.array([1, 2, 2, None, 5, 6], pa.int64())
        expected = [("1", 0), ("5", 4)]  # 6: in no partition
    else:
        keys = pa.array(["a", "b", "b", None, "", " \t\n", "c", "d", "\u00a0", "x ", "x"],
                        pa.string())
        expected = [("a", 0), ("d", 7), ("x", 10), ("x ", 9), ("\u00a0", 8)]  # c: no partition
    orphan = [False] * len(keys)
    orphan[5 if typed else 6] = True
    if not typed:
        orphan[7] = None  # (a missing flag: in its partition)
    table = pa.table({sync.source_key: keys, "_no_partition": pa.array(orphan, pa.bool_())})
    found, positions = unchanged._candidates(sync, table)
    assert sorted(zip(found.to_pylist(), positions.to_pylist())) == expected
