"""The quarantine entry (crm_sync/state/quarantine.py): `partition` is always the row's day, whatever
path found the failure (`path`: sync, replay, mirror); sensitive values are masked once, where
entries enter the store, whichever constructor built them."""

from __future__ import annotations

import dagster as dg
import pandas as pd
import yaml

from crm_sync.pipeline.assets import build_assets
from crm_sync.pipeline.sync_steps import sync_asset_names
from crm_sync.connectors.superleap import SuperleapResource
from crm_sync.definitions import build_resources
from crm_sync.sandbox.app import DEFAULT_TOKENS
from crm_sync.extract.sources import SourceResource
from crm_sync.spec import PROJECT_ROOT, load_spec
from crm_sync.state.store import SyncStore
from crm_sync.transform.validate import validate_partition
from crm_sync_tests.bundled_spec import bundled_raw, bundled_unlinked

SYNC = "leads_to_superleap"
DAY1, DAY2 = "2026-11-02", "2026-11-03"
SECRET = "ada.lovelace.secret@example.com"
OTHER_SECRET = "charles.babbage.secret@example.com"


def _day1_leads(tmp_path, rows=4):
    """Valid DAY1 leads only: the DAY2 partition holds no row."""
    leads = pd.read_csv(PROJECT_ROOT / "data" / "leads.csv", dtype=str, keep_default_na=False)
    bad = {f.source_key for f in validate_partition(bundled_unlinked().sync(SYNC), leads).failures}
    picked = leads[~leads["lead_id"].isin(bad) & leads["updated_at"].str.startswith(DAY1)]
    picked = picked.head(rows)
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    picked.to_csv(data / "leads.csv", index=False)
    return picked, data


def _assets():
    return [a for a in build_assets(bundled_unlinked()) if a.key.path[0] in
            sync_asset_names(bundled_unlinked().sync(SYNC))]  # with the replay step


def test_a_row_that_fails_again_through_replay_stays_in_its_days_quarantine(
        sandbox, sandbox_url, store, tmp_path):
    picked, data = _day1_leads(tmp_path)
    keys = set(picked["lead_id"])
    resources = {**build_resources(), "source": SourceResource(data_dir=str(data)),
                 "superleap": SuperleapResource(base_url=sandbox_url,
                                                token=DEFAULT_TOKENS["superleap"],
                                                max_attempts=1)}
    sandbox.post("/_sandbox/faults", json={"seed": 1, "rate_503": 1.0}).raise_for_status()
    first = dg.materialize(_assets(), partition_key=DAY1, resources=resources,
                           raise_on_error=False)
    assert not first.success  # every row failed transiently at its own day's run
    day1 = store.quarantine_frame(SYNC, partition=DAY1)
    assert set(day1["source_key"]) == keys
    first_paths = set(day1.get("path", ()))

    # DAY2's run (no row of its own) retries DAY1's transient rows; the CRM fails them again.
    later = dg.materialize(_assets(), partition_key=DAY2, resources=resources)
    meta = later.asset_materializations_for_node(f"{SYNC}_replay")[0].metadata
    assert meta["retried_transient"].value == len(keys)
    assert meta["recovered_transient"].value == 0

    # Their last failure came through replay: they are still DAY1's, and say how they failed.
    day1 = store.quarantine_frame(SYNC, partition=DAY1)
    assert set(day1["source_key"]) == keys, store.quarantine_frame(SYNC)[["source_key",
                                                                        "partition"]]
    assert day1["transient"].all() and store.quarantine_frame(SYNC, partition=DAY2).empty

    # A dry run of DAY1 sends and records nothing: its preview shows what the quarantine holds.
    dry = dg.materialize(_assets(), partition_key=DAY1, resources=resources, run_config={
        "ops": {SYNC: {"config": {"dry_run": True}}}})
    meta = dry.asset_materializations_for_node(SYNC)[0].metadata
    preview = meta["quarantine_preview"].value
    assert all(key in preview for key in keys), preview
    assert all(f"| {key} | crm | replay |" in preview for key in keys), preview
    assert f"| crm | {day1['error_code'].iloc[0]} | {len(keys)} |" in \
        meta["quarantined_by_error_code"].value
    # The path column says which step's failure each entry is.
    assert first_paths == {"sync"}
    assert set(store.quarantine_frame(SYNC, partition=DAY1)["path"]) == {"replay"}


# -- masking once, in the store ------------------------------------------------------------------
def _sensitive_spec(tmp_path):
    raw = bundled_raw()
    for sync in raw["syncs"]:
        if sync["name"] == SYNC:
            sync["fields"]["email"] = {"column": "email", "type": "email", "sensitive": True}
    (tmp_path / "syncs.yaml").write_text(yaml.safe_dump(raw))
    return load_spec(tmp_path / "syncs.yaml").sync(SYNC)


def _file_bytes(store: SyncStore) -> bytes:
    """Everything SQLite wrote: the database file and its write-ahead log."""
    return b"".join(p.read_bytes() for p in store.path.parent.glob(store.path.name + "*"))


def _entries(spec):
    from crm_sync.connectors.model import Outcome
    from crm_sync.state.quarantine import QuarantineEntry, batch_echoes

    payload = {"name": "Ada", "email": SECRET}
    echoes = batch_echoes([payload, {"name": "Charles", "email": OTHER_SECRET}],
                          {"email"})
    answer = f'{{"errors": [{{"email": "{SECRET}"}}, {{"email": "{OTHER_SECRET}"}}]}}'
    return [
        QuarantineEntry.validation_failure(
            spec, "L-1", "INVALID_EMAIL", "email_format", "email", SECRET,
            f"invalid email format: {SECRET}", payload, DAY1),
        QuarantineEntry.conversion_failure(spec, "L-2", f"cannot convert {SECRET}",
                                           {**payload, "_key": "L-2"}, DAY1),
        QuarantineEntry.not_sent(spec, "L-3", "DUPLICATE_MATCHING_KEY",
                                 f"owned: {SECRET.upper()}", payload, "lead_id", None, DAY1),
        QuarantineEntry.crm_outcome(
            spec, Outcome("L-4", "failed", error_code="PARSE_INVALID_FORMAT",
                          message=f"bad value {SECRET}", raw=answer), payload, "digest",
            DAY1, echoes=echoes),
        QuarantineEntry.mirror_deletion(
            spec, "L-5", "crm-5", Outcome("crm-5", "failed", error_code="X", message="gone",
                                          raw="<html>bad gateway</html>"), None),
    ]


def test_entries_hold_what_they_were_given_and_the_store_masks_them_once(tmp_path):
    spec = _sensitive_spec(tmp_path)
    entries = _entries(spec)
    # No producer masks: the entries carry the values (and what masking needs) to the store.
    assert entries[0].value == SECRET and entries[0].payload["email"] == SECRET
    assert all(e.sensitive == {"email"} for e in entries)
    store = SyncStore(tmp_path / "store.sqlite")
    store.record_results(SYNC, [], entries)
    data = _file_bytes(store).lower()
    assert SECRET.encode() not in data and OTHER_SECRET.encode() not in data
    rows = store.quarantine_frame(SYNC).set_index("source_key")
    assert rows.loc["L-1", "value"] == "***" and "***" in rows.loc["L-1", "message"]
    for key in ("L-1", "L-2", "L-3", "L-4"):
        assert '"email": "***"' in rows.loc[key, "payload"], key
    assert rows.loc["L-4", "raw"].count("***") == 2  # the batch's other record too
    assert rows.loc["L-4", "payload_digest"] == "digest"
    assert list(rows["path"]) == ["sync", "sync", "sync", "sync", "mirror"]
    assert list(rows["partition"].fillna("-")) == [DAY1, DAY1, DAY1, DAY1, "-"]


def test_masking_an_entry_twice_changes_nothing(tmp_path):
    spec = _sensitive_spec(tmp_path)
    for entry in _entries(spec):
        once = entry.masked()
        assert once.masked() == once
        shown = f"{once.payload} {once.value} {once.message} {once.raw}".lower()
        assert SECRET not in shown and OTHER_SECRET not in shown, entry.source_key
        assert SECRET not in repr(entry).lower(), entry.source_key  # (logs, assertions)


def test_a_store_from_before_path_moves_replay_and_mirror_out_of_partition(tmp_path):
    import sqlite3

    path = tmp_path / "old.sqlite"
    SyncStore(path)
    with sqlite3.connect(path) as conn:  # an older store: no `path` column
        conn.execute("ALTER TABLE quarantine DROP COLUMN path")
        conn.execute("DROP TABLE store_meta")  # (nor a schema version: made before them)
        conn.executemany(
            "INSERT INTO quarantine (sync, source_key, partition, stage, error_code, message, "
            "quarantined_at) VALUES ('s', ?, ?, 'crm', 'X', 'm', 0)",
            [("a", DAY1), ("b", "replay"), ("c", "mirror"), ("d", None)])
    rows = SyncStore(path).quarantine_frame("s").set_index("source_key")
    assert rows["path"].to_dict() == {"a": "sync", "b": "replay", "c": "mirror", "d": "sync"}
    assert rows["partition"].where(rows["partition"].notna(), None).to_dict() == \
        {"a": DAY1, "b": None, "c": None, "d": None}
