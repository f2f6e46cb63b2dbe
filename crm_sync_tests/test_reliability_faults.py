"""Reliability under injected faults, for every CRM and several seeds.

Each run syncs a generated partition of a few hundred rows (with the generator's ~3% bad rows)
while the sandbox answers 10% of requests badly before its CRM logic runs (429 with and without
Retry-After, 500, 503, a reply slower than the client's timeout, a dropped connection, a
truncated JSON body, an HTML 502) and 5% after it committed (dropped, truncated, late). Brevo
processes also end `failed` 15% of the time. Then the promise is checked (crm_sync_tests/
invariant.py), the faults are switched off, and reruns must converge: the CRM holds exactly the
valid rows, once each, with the right values; the quarantine holds exactly the others, none of
them transient.
"""

from __future__ import annotations

from collections import Counter

import pytest

from crm_sync_tests import invariant as inv

pytestmark = pytest.mark.reliability

ROWS = 300
SEEDS = (11, 12, 13)
CLIENT_TIMEOUT = 1.0  # seconds; the injected delays are longer
DELAY = 1.5
BEFORE_COMMIT = {"rate_429": 0.025, "rate_500": 0.01, "rate_503": 0.01, "rate_delay": 0.015,
                 "rate_drop": 0.015, "rate_truncated": 0.0125, "rate_non_json": 0.0125}  # 10%
AFTER_COMMIT = {"rate_drop_after_commit": 0.02, "rate_truncated_after_commit": 0.02,
                "rate_delay_after_commit": 0.01}  # 5%
# Small batches: more requests per run, so more of them meet a fault.
BATCH_SIZE = {"superleap": 5, "hubspot": 10, "salesforce": 5, "brevo": 25}
# The faults to prove, as kinds of the sandbox: the coverage test wants each of them.
CATEGORIES = {"429": {"429"}, "500/503": {"500", "503"}, "delay past the timeout": {"delay"},
              "dropped connection": {"drop"},
              "truncated or non-JSON body": {"truncated", "non_json"},
              "lost after commit": {"drop_after_commit", "truncated_after_commit",
                                    "delay_after_commit"}}

# What the parametrized runs injected and what their rows failed with, for the coverage test.
SEEN_FAULTS: Counter = Counter()
SEEN_429: Counter = Counter()  # by whether the 429s carried Retry-After
SEEN_CODES: Counter = Counter()
RUNS: list[tuple[str, int]] = []


def with_retry_after(crm: str, seed: int) -> bool:
    return (seed + inv.CRMS.index(crm)) % 2 == 0  # half the runs each


def fault_settings(crm: str, seed: int) -> dict:
    # 429s carry `Retry-After: 0`, or none (the client then waits its default second).
    return {"seed": seed * 100 + inv.CRMS.index(crm), **BEFORE_COMMIT, **AFTER_COMMIT,
            "delay_seconds": DELAY, "retry_after": with_retry_after(crm, seed),
            "retry_after_seconds": 0,
            "brevo_failed_processes": 0.15 if crm == "brevo" else 0.0}


# Every CRM and seed on SQLite; on PostgreSQL, a subset (Superleap's write-ahead log, HubSpot).
@pytest.mark.parametrize("crm,seed,store_backend", [
    *((crm, seed, "sqlite") for crm in inv.CRMS for seed in SEEDS),
    ("superleap", 11, "postgresql"), ("hubspot", 12, "postgresql")], indirect=["store_backend"])
def test_every_row_ends_once_under_faults_and_reruns_converge(crm, seed, sandbox, sandbox_url,
                                                               store, tmp_path):
    spec = inv.spec_for(crm)
    source = inv.write_source(tmp_path / "data", crm, ROWS, seed)
    frame = inv.read_source(spec, source)
    sandbox.post("/_sandbox/faults", json=fault_settings(crm, seed)).raise_for_status()

    faulty = inv.resource(crm, sandbox_url, timeout_seconds=CLIENT_TIMEOUT,
                          batch_size=BATCH_SIZE[crm])
    report = inv.sync_once(spec, source, faulty, store)
    faults = inv.injected(sandbox)
    assert sum(faults.values()) > 0, "no fault was injected: the run proves nothing"
    during = inv.check(sandbox, store, spec, frame, settled=False)
    assert during.duplicates == 0 and during.missing == 0

    sandbox.post("/_sandbox/faults", json={}).raise_for_status()  # the network heals
    runs = inv.converge(spec, source, inv.resource(crm, sandbox_url), store, sandbox)
    after = inv.check(sandbox, store, spec, frame, settled=True)
    assert after.in_crm == after.valid and after.quarantined == after.rows - after.valid

    SEEN_FAULTS.update(faults)
    SEEN_429[with_retry_after(crm, seed)] += faults.get("429", 0)
    SEEN_CODES.update(report.failed_by_code)
    RUNS.append((crm, seed))
    inv.record("faults", crm, seed, after, faults, failed_during=report.failed,
               unknown_during=during.unknown, reruns=runs,
               failed_codes=dict(report.failed_by_code))


def test_the_seeded_runs_exercised_every_fault():
    if len({run for run in RUNS}) < len(SEEDS) * len(inv.CRMS):
        pytest.skip("only part of the fault matrix ran")
    missing = [name for name, kinds in CATEGORIES.items() if not kinds & set(SEEN_FAULTS)]
    assert not missing, f"never injected: {missing} (injected: {dict(SEEN_FAULTS)})"
    assert SEEN_429[True] and SEEN_429[False], f"429s with / without Retry-After: {SEEN_429}"
    # Rows did fail under them (and were recovered by the reruns), Brevo processes included.
    assert "PROCESS_FAILED" in SEEN_CODES, SEEN_CODES
    assert {"TIMEOUT", "CONNECTION_DROPPED", "MALFORMED_RESPONSE"} & set(SEEN_CODES), SEEN_CODES


@pytest.mark.parametrize("store_backend", ("sqlite", "postgresql"), indirect=True)
def test_salesforce_allowance_running_out_mid_partition(sandbox, sandbox_url, store, tmp_path):
    crm, seed = "salesforce", 21
    spec = inv.spec_for(crm)
    source = inv.write_source(tmp_path / "data", crm, ROWS, seed)
    frame = inv.read_source(spec, source)
    sandbox.post("/_sandbox/faults", json={"seed": seed, "rate_429": 0.05,
                                           "retry_after_seconds": 0}).raise_for_status()
    # 12 requests for a partition that needs 30: the org's allowance runs out half way.
    sandbox.post("/_sandbox/limits", json={"salesforce_daily_limit": 12}).raise_for_status()
    try:
        report = inv.sync_once(spec, source, inv.resource(crm, sandbox_url), store)
        held = store.quarantine_frame(spec.name)
        held = held[held["transient"].astype(bool)]
        assert report.created > 0 and len(held) > 0
        assert set(held["error_code"]) <= {"REQUEST_LIMIT_EXCEEDED", "ALLOWANCE_RESERVE_REACHED"}
        during = inv.check(sandbox, store, spec, frame, settled=False)
    finally:
        sandbox.post("/_sandbox/limits", json={"salesforce_daily_limit": 100_000})
    sandbox.post("/_sandbox/faults", json={}).raise_for_status()  # the next day
    runs = inv.converge(spec, source, inv.resource(crm, sandbox_url), store, sandbox)
    after = inv.check(sandbox, store, spec, frame, settled=True)
    inv.record("allowance", crm, seed, after, {"allowance": 12}, held=len(held), reruns=runs,
               unknown_during=during.unknown)
