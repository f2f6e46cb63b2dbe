"""The reliability promise as one reusable check, and the harness the reliability tests share.

The promise: every source row ends either in the CRM with the right values or in the quarantine
with a reason; never both, never neither, never twice. `check()` verifies it against what the
sandbox stores (`/_sandbox/records/{crm}/{object}`) and what the sync store holds (state,
quarantine, write-ahead log), independently of crm_sync's own counters:

- which rows are valid is decided again here, by `validate_partition` (the oracle);
- which CRM record belongs to which row is read from the record itself (the field that carries
  the source key: Superleap `external_id`, HubSpot `crm_sync_id`, Salesforce `External_Id__c`,
  Brevo `identifiers.ext_id`);
- the right values are `mapped_fields` of the row, compared with the stored record.

`settled=True` (after a run with the faults off): the CRM holds exactly the valid rows, once
each, with the right values and the ids the state keeps; the quarantine holds exactly the other
rows, each with a reason, none transient; no write-ahead entry is open.
`settled=False` (right after a run under faults): no record twice, no record for no row, every
row the state calls synced is in the CRM with its values and id, a row in the CRM that the state
does not know is quarantined transient (its outcome was unknown: the only "both", resolved by the
next run), and no row is in neither place (unless `crashed`: a run killed half way, whose
unanswered Superleap creates must all be in the write-ahead log).
"""

from __future__ import annotations

import random
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pandas as pd

from crm_sync.devtools import generate
from crm_sync.connectors.brevo import BrevoResource
from crm_sync.connectors.hubspot import HubSpotResource, property_value
from crm_sync.connectors.salesforce import SalesforceResource
from crm_sync.connectors.superleap import SuperleapResource
from crm_sync.load.replay import retry_transient
from crm_sync.sandbox.app import DEFAULT_TOKENS
from crm_sync.extract.sources import SourceResource
from crm_sync.spec import SyncSpec, load_spec
from crm_sync.state.store import SyncStore
from crm_sync.transform.convert import mapped_fields
from crm_sync.load.runner import SyncReport, run_upsert
from crm_sync.transform.validate import validate_partition
from crm_sync.state.writeahead import WriteAheadLog
from crm_sync_tests.bundled_spec import bundled_unlinked

CRMS = ("superleap", "hubspot", "salesforce", "brevo")
SYNC_OF = {"superleap": "leads_to_superleap", "hubspot": "contacts_to_hubspot",
           "salesforce": "companies_to_salesforce", "brevo": "projects_to_brevo"}
OBJECT_OF = {"superleap": "lead", "hubspot": "contacts", "salesforce": "Account",
             "brevo": "project"}
# The whole generated table is one "partition" here: its rows span 7 days of updated_at.
WINDOW = (datetime(2026, 10, 1, tzinfo=timezone.utc), datetime(2026, 12, 1, tzinfo=timezone.utc))
PARTITION = "2026-11-03"


def spec_for(crm: str) -> SyncSpec:
    return bundled_unlinked().sync(SYNC_OF[crm])


# -- source data ----------------------------------------------------------------------------------
def write_source(data_dir: Path, crm: str, rows: int, seed: int) -> SourceResource:
    """A generated table for the CRM's sync (the demo generator: ~3% bad rows of the kinds the
    CRMs document), written as CSV where a SourceResource reads it."""
    spec = spec_for(crm)
    rng = random.Random(f"reliability-{seed}-{crm}")
    make = {"leads": lambda: generate.leads(rng, rows),
            "contacts": lambda: generate.contacts(rng, rows, max(rows // 3, 1)),
            "companies": lambda: generate.companies(rng, rows),
            "projects": lambda: generate.projects(rng, rows, max(rows // 3, 1))}[spec.source]
    data_dir.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(list(make())).to_csv(data_dir / f"{spec.source}.csv", index=False)
    return SourceResource(data_dir=str(data_dir))


def read_source(spec: SyncSpec, source: SourceResource) -> pd.DataFrame:
    return source.read_partition(spec.source, *WINDOW)


# -- resources tuned for tests ------------------------------------------------------------------
# Unanswered Superleap creates are looked up once they are this old (production default: 60 s).
# Long enough for a sandbox slowed down by a busy machine to have processed any request a
# timed-out or killed client left behind; `converge` waits as long between its runs.
RECONCILE_AFTER = 1.0


def resource(crm: str, url: str, **overrides):
    """A resource with short waits: no client-side pacing to speak of, short backoffs."""
    common = {"base_url": url, "token": DEFAULT_TOKENS[crm], "requests_per_window": 1000,
              "max_backoff_seconds": 0.2, "timeout_seconds": 10.0}
    if crm == "superleap":
        return SuperleapResource(**{**common, "batch_size": 10,
                                    "reconcile_after_seconds": RECONCILE_AFTER, **overrides})
    if crm == "hubspot":
        return HubSpotResource(**{**common, "batch_size": 25, **overrides})
    if crm == "salesforce":
        return SalesforceResource(**{**common, "batch_size": 10, "daily_allowance_share": 1.0,
                                     **overrides})
    return BrevoResource(**{**common, "batch_size": 25, "poll_interval_seconds": 0.01,
                            "max_poll_interval_seconds": 0.05, **overrides})


# -- one materialization, as the assets do it ------------------------------------------------------
def sync_once(spec: SyncSpec, source: SourceResource, crm_resource, store: SyncStore,
              chunk_rows: int = 10_000) -> SyncReport:
    """validated_<sync> (quarantine the invalid rows) then <sync> (run_upsert, then the retry of
    earlier transient failures), without Dagster around them."""
    frame = read_source(spec, source)
    result = validate_partition(spec, frame, partition=PARTITION)
    store.record_results(spec.name, succeeded=[], quarantined=result.failures)
    started = time.time()
    report = run_upsert(spec, result.valid, crm_resource, store, partition=PARTITION,
                        chunk_rows=chunk_rows)
    retry_transient(spec, source, crm_resource, store, before=started)
    return report


def converge(spec: SyncSpec, source: SourceResource, crm_resource, store: SyncStore,
             sandbox: httpx.Client, rounds: int = 4, pause: float = RECONCILE_AFTER) -> int:
    """Run again (faults off) until nothing transient is left; the runs it took."""
    for run in range(1, rounds + 1):
        sync_once(spec, source, crm_resource, store)
        if not store.quarantine_frame(spec.name)["transient"].astype(bool).any():
            return run
        time.sleep(pause)
    return rounds


# -- the check ---------------------------------------------------------------------------------
class InvariantError(AssertionError):
    pass


@dataclass
class Tally:
    rows: int = 0
    valid: int = 0
    in_crm: int = 0
    quarantined: int = 0
    unknown: int = 0  # in the CRM, not confirmed, quarantined transient (resolved next run)
    missing: int = 0  # in neither place (only allowed for a killed run)
    duplicates: int = 0
    problems: list[str] = field(default_factory=list)

    def add(self, other: Tally) -> None:
        for name in ("rows", "valid", "in_crm", "quarantined", "unknown", "missing",
                     "duplicates"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


def _key_field(spec: SyncSpec) -> str | None:
    for name, mapping in spec.fields.items():
        if mapping.column == spec.source_key:
            return name
    return None


def record_key(spec: SyncSpec, record: dict) -> str | None:
    """The source key a stored CRM record carries."""
    if spec.crm == "brevo":
        return (record.get("identifiers") or {}).get("ext_id")
    name = _key_field(spec)
    if spec.crm == "hubspot":
        return (record.get("properties") or {}).get(name)
    return record.get(name)


def record_id(spec: SyncSpec, record: dict) -> str:
    if spec.crm == "brevo":
        return str(record["identifiers"]["id"])
    return str(record["Id"] if spec.crm == "salesforce" else record["id"])


def differences(spec: SyncSpec, expected: dict, record: dict) -> list[str]:
    """Fields whose stored value is not the value the row maps to."""
    wrong = []
    for name, value in expected.items():
        if spec.crm == "hubspot":
            have, want = (record.get("properties") or {}).get(name), property_value(value)
            if name == "email":
                have, want = (have or "").lower(), want.lower()
        elif spec.crm == "brevo":
            have, want = (record.get("attributes") or {}).get(name), value
        else:
            have, want = record.get(name), value
        if have != want:
            wrong.append(f"{name}: {have!r} != {want!r}")
    return wrong


def stored_records(sandbox: httpx.Client, crm: str) -> list[dict]:
    response = sandbox.get(f"/_sandbox/records/{crm}/{OBJECT_OF[crm]}")
    response.raise_for_status()
    return response.json()["records"]


_ORACLES: dict = {}


def _oracle(spec: SyncSpec, frame: pd.DataFrame) -> tuple[list[str], dict[str, dict]]:
    """The source keys, and the CRM fields each valid row maps to (validated once per frame)."""
    fingerprint = (spec.name, len(frame), int(pd.util.hash_pandas_object(frame).sum()))
    if fingerprint not in _ORACLES:
        result = validate_partition(spec, frame)
        _ORACLES.clear()
        _ORACLES[fingerprint] = ([str(k) for k in frame[spec.source_key]],
                                 {str(row["_key"]): mapped_fields(spec, row)
                                  for row in result.valid.to_dict("records")})
    return _ORACLES[fingerprint]


def check(sandbox: httpx.Client, store: SyncStore, spec: SyncSpec, frame: pd.DataFrame, *,
          settled: bool, crashed: bool = False) -> Tally:
    """Check the promise for the source rows `frame`; raise InvariantError listing what breaks
    it, else return the counts. `crashed`: the last run was killed half way, so rows may be in
    neither place yet and the CRM may hold records whose answer the run never read (for
    Superleap, each of those must still have its write-ahead entry open)."""
    keys, expected = _oracle(spec, frame)
    tally = Tally(rows=len(keys), valid=len(expected))
    problems = tally.problems

    records = stored_records(sandbox, spec.crm)
    known = set(keys)
    by_key: dict[str, list[dict]] = {}
    for record in records:
        key = record_key(spec, record)
        if key is None or key not in known:
            problems.append(f"a CRM record belongs to no source row: {str(record)[:200]}")
            continue
        by_key.setdefault(str(key), []).append(record)
    for key, found in by_key.items():
        if len(found) > 1:
            tally.duplicates += len(found) - 1
            problems.append(f"{key}: {len(found)} CRM records")

    state = {str(k): v for k, v in store.state_frame(spec.name)
             .set_index("source_key")["crm_id"].items()}
    quarantine = store.quarantine_frame(spec.name).set_index("source_key")
    open_creates = WriteAheadLog(store, spec.name).pending()

    for key in keys:
        in_crm = key in by_key
        entry = quarantine.loc[key] if key in quarantine.index else None
        transient = entry is not None and bool(entry["transient"])
        tally.in_crm += in_crm
        tally.quarantined += entry is not None
        if entry is not None and not (str(entry["message"] or "").strip() and
                                      entry["error_code"]):
            problems.append(f"{key}: quarantined without a reason")
        if in_crm:
            record = by_key[key][0]
            if key not in expected:
                problems.append(f"{key}: invalid row reached the CRM")
            elif wrong := differences(spec, expected[key], record):
                problems.append(f"{key}: wrong values in the CRM: {'; '.join(wrong[:3])}")
            if key in state:
                if state[key] is not None and state[key] != record_id(spec, record):
                    problems.append(f"{key}: state id {state[key]} != CRM id "
                                    f"{record_id(spec, record)}")
                if entry is not None:
                    problems.append(f"{key}: synced and quarantined ({entry['error_code']})")
            elif transient and not settled:
                tally.unknown += 1  # its answer was lost: the next run adopts or confirms it
            elif crashed and (spec.crm != "superleap" or key in open_creates):
                tally.unknown += 1  # the killed run never read the answer
            else:
                problems.append(f"{key}: in the CRM but neither confirmed nor pending "
                                f"(quarantine: {None if entry is None else entry['error_code']})")
        else:
            if key in state:
                problems.append(f"{key}: the state says synced, the CRM has no record")
            if entry is None:
                tally.missing += 1
                if not crashed:
                    problems.append(f"{key}: neither in the CRM nor in the quarantine (lost)")
        if settled:
            if key in expected and not in_crm:
                problems.append(f"{key}: valid row not in the CRM (quarantine: "
                                f"{None if entry is None else entry['error_code']})")
            if key not in expected and entry is None:
                problems.append(f"{key}: invalid row not in the quarantine")
            if transient:
                problems.append(f"{key}: still quarantined transient ({entry['error_code']})")
    if settled and open_creates:
        problems.append(f"{len(open_creates)} write-ahead entries still open: "
                        f"{sorted(open_creates)[:5]}")
    if problems:
        raise InvariantError(f"{spec.name}: {len(problems)} violation(s) of the promise:\n  " +
                             "\n  ".join(problems[:25]))
    return tally


def integrity(store: SyncStore) -> str:
    """'ok' when the sync store is sound: SQLite's `PRAGMA integrity_check` of the file; on
    PostgreSQL (whose server rolls a killed client's transaction back) every table reads."""
    if store.path is None:
        with store.connection() as conn:
            for table in STORE_TABLES:
                conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()  # nosec B608
        return "ok"
    conn = sqlite3.connect(str(store.path))
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()


STORE_TABLES = ("sync_state", "quarantine", "write_ahead", "matching_owners", "sending",
                "partition_lease", "store_meta")


def injected(sandbox: httpx.Client) -> Counter:
    return Counter(sandbox.get("/_sandbox/faults").json()["injected"])


# -- the ledger: what the reliability suite did (CRM_SYNC_RELIABILITY_LEDGER=<file> keeps it) ----
def record(test: str, crm: str, seed, tally: Tally, faults: Counter | dict | None = None,
           **extra) -> None:
    """Append one line (JSON) per checked run to $CRM_SYNC_RELIABILITY_LEDGER, when set."""
    import json
    import os

    path = os.environ.get("CRM_SYNC_RELIABILITY_LEDGER")
    if not path:
        return
    line = {"test": test, "crm": crm, "seed": seed, "rows": tally.rows, "valid": tally.valid,
            "in_crm": tally.in_crm, "quarantined": tally.quarantined, "unknown": tally.unknown,
            "missing": tally.missing, "duplicates": tally.duplicates,
            "faults": dict(faults or {}), **extra}
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(line, default=str) + "\n")
