"""The Salesforce connector's Bulk API 2.0 path (crm_sync/connectors/salesforce_bulk.py), over
HTTP to the sandbox's ingest jobs and SQL to a real sync store: a partition above the
sync's bulk_threshold goes through one job (the sandbox's request counters show it), below it
through the collections upsert; every row ends once (state or quarantine); a job still in
progress when a run gives up waiting is collected by the next run, which uploads nothing."""

from __future__ import annotations

import asyncio

import pytest

from crm_sync.connectors import salesforce_bulk as bulk
from crm_sync.connectors.salesforce import SalesforceResource
from crm_sync.load.runner import run_upsert
from crm_sync.sandbox.app import DEFAULT_TOKENS
from crm_sync.state.bulkjobs import IN_PROGRESS, BulkJobLog
from crm_sync.transform.validate import validate_partition
from crm_sync_tests import invariant as inv
from crm_sync_tests.conftest import BACKENDS, stored

SPEC = inv.spec_for("salesforce")  # companies_to_salesforce: Account by External_Id__c


@pytest.fixture
def processing(sandbox):
    """Set how long the sandbox keeps a job InProgress (a process-wide setting: put back)."""
    def set_seconds(seconds: float) -> None:
        sandbox.post("/_sandbox/salesforce/bulk",
                     json={"processing_seconds": seconds}).raise_for_status()
    yield set_seconds
    set_seconds(0.5)


def counters(sandbox) -> dict[str, int]:
    return sandbox.get("/_sandbox/stats").json()["counters"]


def calls(sandbox, method: str, kind: str) -> int:
    return counters(sandbox).get(f"requests {method} salesforce {kind}", 0)


def resource(url: str, **options) -> SalesforceResource:
    return inv.resource("salesforce", url, batch_size=200, **options)


def source(tmp_path, rows: int, seed: int = 7):
    data = inv.write_source(tmp_path / "data", "salesforce", rows, seed)
    return data, inv.read_source(SPEC, data)


@pytest.mark.parametrize("store_backend", BACKENDS, indirect=True)
def test_a_partition_above_the_threshold_goes_through_one_job(sandbox, sandbox_url, store,
                                                              tmp_path, processing):
    processing(0.3)
    data, frame = source(tmp_path, 2600)
    report = inv.sync_once(SPEC, data, resource(sandbox_url), store)
    assert report.sent > SPEC.bulk_threshold
    assert (calls(sandbox, "POST", "jobs"), calls(sandbox, "PUT", "jobs"),
            calls(sandbox, "PATCH", "jobs")) == (1, 1, 1)
    assert calls(sandbox, "PATCH", "composite") == 0  # no collections request at all
    # create + upload + close + a few polls + three result CSVs
    assert report.requests == counters(sandbox)["requests total"] <= 12
    tally = inv.check(sandbox, store, SPEC, frame, settled=True)
    assert tally.in_crm == report.created == tally.valid and report.failed == 0
    assert BulkJobLog(store, SPEC.name).pending(frame["company_id"].astype(str)) == {}

    # A second run sends nothing (unchanged); a full resync updates the same records.
    again = run_upsert(SPEC, _valid(frame), resource(sandbox_url), store,
                           partition=inv.PARTITION, full_resync=True)
    assert (again.updated, again.created) == (tally.valid, 0)
    assert calls(sandbox, "POST", "jobs") == 2
    assert inv.check(sandbox, store, SPEC, frame, settled=True).duplicates == 0


def _valid(frame, store=None):
    """The partition's valid rows (its invalid ones quarantined in `store`, as validation
    does)."""
    result = validate_partition(SPEC, frame, partition=inv.PARTITION)
    if store is not None:
        store.record_results(SPEC.name, succeeded=[], quarantined=result.failures)
    return result.valid


def test_at_or_below_the_threshold_the_collections_upsert_is_used(sandbox, sandbox_url, store,
                                                                 tmp_path):
    data, frame = source(tmp_path, 600)
    spec = SPEC.model_copy(update={"bulk_threshold": 2000})
    report = run_upsert(spec, _valid(frame), resource(sandbox_url), store,
                            partition=inv.PARTITION)
    assert 0 < report.sent <= 2000
    assert calls(sandbox, "POST", "jobs") == 0
    assert calls(sandbox, "PATCH", "composite") == -(-report.sent // 200)
    # the threshold is the sync's: lowered, the same rows go through a job
    lowered = SPEC.model_copy(update={"bulk_threshold": 100})
    full = run_upsert(lowered, _valid(frame), resource(sandbox_url), store,
                          partition=inv.PARTITION, full_resync=True)
    assert full.updated == report.created and calls(sandbox, "POST", "jobs") == 1


def _items(connector, n: int, start: int = 0, **fields):
    return [connector.item(f"CO-{i:05d}", {"External_Id__c": f"CO-{i:05d}",
                                           "Name": f"Company {i}", **fields}, None)
            for i in range(start, start + n)]


async def _upsert(url, store, items_of, **options):
    async with resource(url, **options).open(SPEC) as connector:
        connector.bind_store(store)
        return await connector.upsert(items_of(connector)), connector.core.stats


def test_every_row_gets_exactly_one_outcome_with_salesforce_codes(sandbox, sandbox_url, store):
    def items_of(connector):
        good = _items(connector, 2050, NumberOfEmployees=12, Website=None)
        nameless = [connector.item(f"NN-{i}", {"External_Id__c": f"NN-{i}", "Name": None}, None)
                    for i in range(5)]
        return good + nameless

    outcomes, stats = asyncio.run(_upsert(sandbox_url, store, items_of))
    assert len(outcomes) == len({o.key for o in outcomes}) == 2055
    by_key = {o.key: o for o in outcomes}
    failed = {k: o for k, o in by_key.items() if o.status == "failed"}
    assert set(failed) == {f"NN-{i}" for i in range(5)}
    assert {(o.error_code, o.column, o.transient) for o in failed.values()} == \
        {("REQUIRED_FIELD_MISSING", "Name", False)}
    records = {r["External_Id__c"]: r for r in stored(sandbox, "salesforce", "Account")}
    assert len(records) == 2050
    assert all(by_key[k].status == "created" and by_key[k].crm_id == r["Id"]
               for k, r in records.items())
    assert records["CO-00007"]["NumberOfEmployees"] == 12
    assert records["CO-00007"]["Website"] is None  # #N/A: null
    assert stats.records == 2055 and stats.failed_by_code["REQUIRED_FIELD_MISSING"] == 5

    again, _ = asyncio.run(_upsert(sandbox_url, store, lambda c: _items(c, 2050)))
    assert {o.status for o in again} == {"updated"}
    assert {o.key: o.crm_id for o in again} == {k: by_key[k].crm_id for k in records}
    assert calls(sandbox, "POST", "jobs") == 2


def test_a_csv_over_the_upload_limit_is_split_over_as_few_jobs_as_it_takes(
        sandbox, sandbox_url, store, monkeypatch):
    monkeypatch.setattr(bulk, "MAX_UPLOAD_BYTES", 40_000)  # 2,100 rows of ~25 bytes: 2 jobs
    outcomes, _ = asyncio.run(_upsert(sandbox_url, store, lambda c: _items(c, 2100)))
    assert {o.status for o in outcomes} == {"created"} and len(outcomes) == 2100
    assert calls(sandbox, "POST", "jobs") == calls(sandbox, "PUT", "jobs") == 2


def test_records_the_csv_cannot_carry_go_through_the_collections_upsert(sandbox, sandbox_url,
                                                                        store):
    def items_of(connector):
        odd = [connector.item("CR-1", {"External_Id__c": "CR-1", "Name": "a\r\nb"}, None),
               connector.item("NA-1", {"External_Id__c": "NA-1", "Name": "#N/A"}, None)]
        return _items(connector, 2001) + odd

    outcomes, _ = asyncio.run(_upsert(sandbox_url, store, items_of))
    assert {o.status for o in outcomes} == {"created"} and len(outcomes) == 2003
    assert calls(sandbox, "POST", "jobs") == 1 and calls(sandbox, "PATCH", "composite") == 1
    names = {r["External_Id__c"]: r["Name"] for r in stored(sandbox, "salesforce", "Account")}
    assert (names["CR-1"], names["NA-1"]) == ("a\r\nb", "#N/A")


@pytest.mark.parametrize("store_backend", BACKENDS, indirect=True)
def test_a_job_still_in_progress_is_collected_by_the_next_run_not_uploaded_again(
        sandbox, sandbox_url, store, tmp_path, processing):
    processing(2.5)
    data, frame = source(tmp_path, 2300, seed=8)
    first = run_upsert(SPEC, _valid(frame, store), resource(sandbox_url, bulk_timeout_seconds=0.5),
                           store, partition=inv.PARTITION)
    assert first.failed == first.failed_transient == first.sent > 2000
    quarantine = store.quarantine_frame(SPEC.name)
    assert set(quarantine[quarantine["stage"] == "crm"]["error_code"]) == {IN_PROGRESS}
    assert len(quarantine[quarantine["stage"] == "crm"]) == first.sent
    keys = quarantine[quarantine["error_code"] == IN_PROGRESS]["source_key"].tolist()
    assert len(set(job for job, _ in BulkJobLog(store, SPEC.name).pending(keys).values())) == 1
    uploads = calls(sandbox, "PUT", "jobs")
    assert uploads == 1

    second = run_upsert(SPEC, _valid(frame), resource(sandbox_url), store,
                            partition=inv.PARTITION)
    assert second.created == first.sent and second.failed == 0
    assert (calls(sandbox, "POST", "jobs"), calls(sandbox, "PUT", "jobs")) == (1, 1)
    assert calls(sandbox, "PATCH", "composite") == 0
    assert BulkJobLog(store, SPEC.name).pending(keys) == {}
    inv.check(sandbox, store, SPEC, frame, settled=True)


def test_a_job_left_open_by_a_dead_run_is_aborted_and_its_rows_sent_again(
        sandbox, sandbox_url, store, monkeypatch):
    """The run died after logging the job and before UploadComplete (here: the upload and the
    close never happen): the next run aborts that job and sends the rows in a new one."""
    real = bulk._Jobs.request

    async def dying(self, method, path, content=None, **kwargs):
        if method == "PUT":
            raise KeyboardInterrupt  # (stands for the kill: nothing after it runs)
        return await real(self, method, path, content, **kwargs)

    monkeypatch.setattr(bulk._Jobs, "request", dying)
    with pytest.raises(KeyboardInterrupt):
        asyncio.run(_upsert(sandbox_url, store, lambda c: _items(c, 2100)))
    monkeypatch.setattr(bulk._Jobs, "request", real)
    [left] = set(job for job, _ in BulkJobLog(store, SPEC.name).pending(
        [f"CO-{i:05d}" for i in range(2100)]).values())
    outcomes, _ = asyncio.run(_upsert(sandbox_url, store, lambda c: _items(c, 2100)))
    assert {(o.status, o.error_code, o.message) for o in outcomes} == {("created", None, None)}
    assert len(outcomes) == 2100
    job = sandbox.get(f"/services/data/v62.0/jobs/ingest/{left}",
                      headers={"Authorization": f"Bearer {DEFAULT_TOKENS['salesforce']}"})
    assert job.json()["state"] == "Aborted"
    assert calls(sandbox, "POST", "jobs") == 2 and calls(sandbox, "PUT", "jobs") == 1


def test_a_row_changed_while_its_job_runs_is_sent_after_that_job_ended(
        sandbox, sandbox_url, store, processing):
    """The old job must not overwrite the newer values after them: the next run waits for it
    to end, then sends the changed rows in a new job."""
    processing(2.0)
    first, _ = asyncio.run(_upsert(sandbox_url, store, lambda c: _items(c, 2100),
                                   bulk_timeout_seconds=0.3))
    assert {o.error_code for o in first} == {IN_PROGRESS}
    [old] = set(job for job, _ in BulkJobLog(store, SPEC.name).pending(
        [f"CO-{i:05d}" for i in range(2100)]).values())
    changed, _ = asyncio.run(_upsert(sandbox_url, store, lambda c: [
        c.item(i.key, {**i.record, "Name": i.record["Name"] + " (new)"}, None)
        for i in _items(c, 2100)]))
    assert {o.status for o in changed} == {"updated"} and len(changed) == 2100
    assert calls(sandbox, "POST", "jobs") == 2
    job = sandbox.get(f"/services/data/v62.0/jobs/ingest/{old}",
                      headers={"Authorization": f"Bearer {DEFAULT_TOKENS['salesforce']}"})
    assert job.json()["state"] == "JobComplete"  # (reading it would process it now)
    names = {r["Name"] for r in stored(sandbox, "salesforce", "Account")}
    assert len(names) == 2100 and all(name.endswith(" (new)") for name in names)


def test_a_spent_allowance_fails_the_job_rows_transient_and_stops(sandbox, sandbox_url, store):
    sandbox.post("/_sandbox/limits", json={"salesforce_daily_limit": 1}).raise_for_status()
    try:
        sandbox.get("/services/data/v62.0/limits", headers={
            "Authorization": f"Bearer {DEFAULT_TOKENS['salesforce']}"}).raise_for_status()
        outcomes, stats = asyncio.run(_upsert(sandbox_url, store, lambda c: _items(c, 2100)))
    finally:
        sandbox.post("/_sandbox/limits", json={"salesforce_daily_limit": 100_000})
    assert {(o.status, o.error_code, o.transient, o.http_status) for o in outcomes} == \
        {("failed", "REQUEST_LIMIT_EXCEEDED", True, 403)}
    assert "allowance" in stats.limit_stop and stats.requests == 1  # no upload after the 403
    assert stored(sandbox, "salesforce", "Account") == []


# Every request of a job meets a fault often (a job is ~9 requests): 5xx, timeouts, dropped
# connections, bodies cut short or not JSON, answers lost after the sandbox committed. No 429:
# Salesforce answers its limits with 403 REQUEST_LIMIT_EXCEEDED, which ends the run's sending.
FAULTS = {"rate_500": 0.05, "rate_503": 0.05, "rate_delay": 0.05, "rate_drop": 0.05,
          "rate_truncated": 0.05, "rate_non_json": 0.05, "rate_drop_after_commit": 0.05,
          "rate_truncated_after_commit": 0.05, "rate_delay_after_commit": 0.05,
          "delay_seconds": 1.5}


@pytest.mark.parametrize("seed", [21, 22, 23])
def test_every_row_ends_once_under_faults_on_the_bulk_path(seed, sandbox, sandbox_url, store,
                                                           tmp_path, processing):
    processing(0.2)
    spec = SPEC.model_copy(update={"bulk_threshold": 50})
    data, frame = source(tmp_path, 400, seed)
    sandbox.post("/_sandbox/faults", json={"seed": seed, **FAULTS}).raise_for_status()
    try:
        inv.sync_once(spec, data, resource(sandbox_url, timeout_seconds=1.0), store)
        assert sum(inv.injected(sandbox).values()) > 0
        during = inv.check(sandbox, store, spec, frame, settled=False)
        assert during.duplicates == 0 and during.missing == 0
    finally:
        sandbox.post("/_sandbox/faults", json={}).raise_for_status()
    inv.converge(spec, data, resource(sandbox_url), store, sandbox, rounds=5, pause=0.1)
    after = inv.check(sandbox, store, spec, frame, settled=True)
    assert after.in_crm == after.valid and after.duplicates == 0
    assert calls(sandbox, "POST", "jobs") >= 1


@pytest.mark.parametrize("value,text", [(None, "#N/A"), ("", "#N/A"), (True, "true"),
                                        (False, "false"), (7, "7"), (1.5, "1.5"),
                                        (1e21, "1000000000000000000000"), (2.5e-7, "0.00000025"),
                                        ("2026-11-03", "2026-11-03"), ("a,b", "a,b")])
def test_csv_cells(value, text):
    assert bulk.cell(value) == text


@pytest.mark.parametrize("error,parsed", [
    ("REQUIRED_FIELD_MISSING:Required fields are missing: [Name]:Name --",
     ("REQUIRED_FIELD_MISSING", "Required fields are missing: [Name]", "Name")),
    ("STRING_TOO_LONG:Name: data value too large:Name,Site",
     ("STRING_TOO_LONG", "Name: data value too large", "Name")),
    ("DUPLICATE_VALUE:duplicate value found:; INVALID_EMAIL_ADDRESS:bad:Email",
     ("DUPLICATE_VALUE", "duplicate value found; INVALID_EMAIL_ADDRESS:bad:Email", None)),
    ("something odd", ("BULK_ROW_FAILED", "something odd", None)),
])
def test_sf_error_is_parsed_into_its_status_code(error, parsed):
    assert bulk.parse_error(error) == parsed


@pytest.mark.parametrize("text,kind", [
    ("sf__Id,sf__Created,External_Id__c\n001A,true,CO-1\n001B,true,CO-1", "successfulResults"),
    ('sf__Id,sf__Error,External_Id__c,Name\n,X:y:,CO-2,"a\n', "failedResults"),
    ('{"results": [{"id": "1", "succ', "successfulResults"),
    ("External_Id__c,sf__Id,sf__Created\nCO-1,001A,true\n", "successfulResults"),
])
def test_a_result_csv_cut_short_or_of_another_shape_is_not_read(text, kind):
    """A cut CSV could end in a prefix of another row's external id: it is refused whole."""
    with pytest.raises(bulk._Refused):
        bulk.read_csv(text, kind)


def test_results_that_do_not_add_up_to_the_jobs_counts_are_not_used():
    ok = [{"sf__Id": "001A"}], [{"sf__Error": "X:y:"}], []
    bulk.check_counts({"numberRecordsProcessed": 2, "numberRecordsFailed": 1}, list(ok))
    with pytest.raises(bulk._Refused):
        bulk.check_counts({"numberRecordsProcessed": 3, "numberRecordsFailed": 1}, list(ok))
