"""A `create_only` Superleap sync creates through `POST .../record/bulk_create` (issue 17).

Over HTTP to the sandbox, with a real sync store: the sandbox's request counters show
bulk_create and no bulk_upsert; a record bulk_create's 400 VALIDATION_FAILED names by
`record_index` (1-based, superleap-bulk-create.txt) is quarantined alone and the others are
created; a rerun creates nothing twice; an unanswered bulk_create is never resent blind (the
write-ahead log and the lookup by external_id decide, as for bulk_upsert's creates).
"""

from __future__ import annotations

import pandas as pd
import pytest

from crm_sync.extract.sources import SourceResource
from crm_sync.load.runner import run_upsert
from crm_sync.transform.validate import validate_partition
from crm_sync.state.writeahead import UNKNOWN_OUTCOME, WriteAheadLog
from crm_sync_tests import invariant as inv

BAD_EMAIL = "test .sok@gmail.com"  # the invalid email of Superleap's bulk_create example


def create_only_spec(check_emails: bool = True):
    spec = inv.spec_for("superleap")
    fields = dict(spec.fields)
    if not check_emails:  # the CRM, not crm_sync's validation, is then the one to reject it
        fields["email"] = fields["email"].model_copy(update={"type": "string"})
    return spec.model_copy(update={"mode": "create_only", "fields": fields})


def leads(n: int, bad: dict[int, str] | None = None) -> pd.DataFrame:
    bad = bad or {}
    return pd.DataFrame([{"lead_id": f"LD-{i:07d}", "superleap_id": None, "name": f"Lead {i}",
                          "email": bad.get(i, f"lead{i}@example.com"), "phone": None,
                          "status": "new", "updated_at": "2026-11-03T10:00:00Z"}
                         for i in range(n)])


def valid_rows(spec, tmp_path, frame: pd.DataFrame) -> pd.DataFrame:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    frame.to_csv(data / "leads.csv", index=False)
    return validate_partition(spec, inv.read_source(spec, SourceResource(data_dir=str(data)))
                              ).valid


def requests(sandbox) -> dict[str, int]:
    counters = sandbox.get("/_sandbox/stats").json()["counters"]
    return {endpoint: counters.get(f"requests POST superleap {endpoint}", 0)
            for endpoint in ("bulk_create", "bulk_upsert", "filter")}


def test_a_create_only_sync_creates_through_bulk_create(sandbox, sandbox_url, store, tmp_path):
    spec = create_only_spec()
    valid = valid_rows(spec, tmp_path, leads(25))
    report = run_upsert(spec, valid, inv.resource("superleap", sandbox_url), store)
    assert report.created == 25 and report.failed == 0
    counts = requests(sandbox)
    assert counts["bulk_create"] == 3 and counts["bulk_upsert"] == 0  # batches of 10
    records = inv.stored_records(sandbox, "superleap")
    assert sorted(r["external_id"] for r in records) == [f"LD-{i:07d}" for i in range(25)]
    # bulk_create answers no ids: they were looked up by external_id, and the state has them
    by_ext = {r["external_id"]: r["id"] for r in records}
    state = store.get_state(spec.name, list(by_ext))
    assert {key: crm_id for key, (crm_id, _) in state.items()} == by_ext
    assert WriteAheadLog(store, spec.name).pending() == {}

    rerun = run_upsert(spec, valid, inv.resource("superleap", sandbox_url), store)
    assert rerun.created == 0 and rerun.sent == 0
    assert requests(sandbox)["bulk_create"] == 3
    assert len(inv.stored_records(sandbox, "superleap")) == 25


def test_a_record_bulk_create_rejects_is_quarantined_alone(sandbox, sandbox_url, store,
                                                             tmp_path):
    spec = create_only_spec(check_emails=False)
    # one batch of 10 with two bad records: the first one and one in the middle
    valid = valid_rows(spec, tmp_path, leads(10, bad={0: BAD_EMAIL, 6: "not-an-email"}))
    report = run_upsert(spec, valid, inv.resource("superleap", sandbox_url), store)
    assert report.created == 8 and report.failed == 2
    held = store.quarantine_frame(spec.name)
    assert sorted(held["source_key"]) == ["LD-0000000", "LD-0000006"]
    reasons = dict(zip(held["source_key"], held["message"]))
    assert reasons["LD-0000000"] == f"invalid email format: {BAD_EMAIL}"
    assert reasons["LD-0000006"] == "invalid email format: not-an-email"
    assert set(held["error_code"]) == {"PARSE_INVALID_FORMAT"}
    assert not any(held["transient"])
    created = sorted(r["external_id"] for r in inv.stored_records(sandbox, "superleap"))
    assert created == [f"LD-{i:07d}" for i in range(10) if i not in (0, 6)]
    counts = requests(sandbox)
    # a 400 naming both, then the 8 others: accepted
    assert counts["bulk_create"] == 2 and counts["bulk_upsert"] == 0
    assert WriteAheadLog(store, spec.name).pending() == {}  # every outcome known

    rerun = run_upsert(spec, valid, inv.resource("superleap", sandbox_url), store)
    assert rerun.created == 0
    assert len(inv.stored_records(sandbox, "superleap")) == 8  # nothing created twice
    assert requests(sandbox)["bulk_upsert"] == 0


def test_an_unanswered_bulk_create_is_looked_up_not_resent(sandbox, sandbox_url, store,
                                                           tmp_path):
    spec = create_only_spec()
    valid = valid_rows(spec, tmp_path, leads(6))
    sandbox.post("/_sandbox/faults", json={"seed": 4, "rate_drop_after_commit": 1.0})
    lost = run_upsert(spec, valid, inv.resource("superleap", sandbox_url), store)
    assert lost.created == 0 and lost.failed_transient == 6
    assert requests(sandbox)["bulk_create"] == 1  # not resent on the dropped connection
    assert len(WriteAheadLog(store, spec.name).pending()) == 6
    assert len(inv.stored_records(sandbox, "superleap")) == 6  # Superleap had created them

    sandbox.post("/_sandbox/faults", json={})
    # Too recent to look up: Superleap may still be working on it. Nothing is sent.
    patient = run_upsert(spec, valid, inv.resource("superleap", sandbox_url,
                                                   reconcile_after_seconds=3600), store)
    assert patient.failed_by_code == {UNKNOWN_OUTCOME: 6}
    assert requests(sandbox)["bulk_create"] == 1
    settled = run_upsert(spec, valid, inv.resource("superleap", sandbox_url,
                                                   reconcile_after_seconds=0), store)
    assert settled.failed == 0 and settled.created == 6  # adopted: found by external_id
    counts = requests(sandbox)
    assert counts["bulk_create"] == 1 and counts["bulk_upsert"] == 0 and counts["filter"] >= 1
    assert len(inv.stored_records(sandbox, "superleap")) == 6
    assert WriteAheadLog(store, spec.name).pending() == {}


def test_a_bulk_create_answered_with_a_5xx_is_looked_up_at_once_then_created(
        sandbox, sandbox_url, store, tmp_path):
    spec = create_only_spec()
    valid = valid_rows(spec, tmp_path, leads(4))
    sandbox.post("/_sandbox/faults", json={"seed": 5, "rate_500": 1.0})
    failed = run_upsert(spec, valid, inv.resource("superleap", sandbox_url, max_attempts=1),
                        store)
    assert failed.failed_transient == 4 and inv.stored_records(sandbox, "superleap") == []
    pending = WriteAheadLog(store, spec.name).pending()
    assert len(pending) == 4 and all(p.answered_at is not None for p in pending.values())

    sandbox.post("/_sandbox/faults", json={})
    # Superleap answered: not in progress any more, so no settle time to wait; looked up (not
    # found), then created once.
    report = run_upsert(spec, valid, inv.resource("superleap", sandbox_url,
                                                  reconcile_after_seconds=3600), store)
    assert report.created == 4 and report.failed == 0
    assert len(inv.stored_records(sandbox, "superleap")) == 4
    assert requests(sandbox)["bulk_create"] == 2 and requests(sandbox)["bulk_upsert"] == 0
    assert WriteAheadLog(store, spec.name).pending() == {}
