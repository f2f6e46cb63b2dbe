"""Quarantine replay: send again the rows that failed for reasons that pass (rate limits,
timeouts, 5xx) and the rows whose source has changed since they were rejected.

A row leaves the quarantine when it goes through (the runner clears it in the same transaction
that records its state). Rows whose source row has not changed and that failed for a
permanent reason stay: sending them again would fail the same way and cost an API call.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, replace

import pandas as pd

from crm_sync.connectors.base import CrmResource
from crm_sync.state.quarantine import REPLAY
from crm_sync.extract.connections import sync_source
from crm_sync.extract.sources import SourceResource
from crm_sync.spec import SyncSpec
from crm_sync.state.store import SyncStore
from crm_sync.transform.convert import DIGEST, PAYLOAD, is_legacy_hash, legacy_payload_hash
from crm_sync.load.runner import SyncReport, run_upsert
from crm_sync.transform.validate import validate_partition


@dataclass
class ReplayReport:
    sync: str
    candidates: int = 0  # quarantined rows looked at
    gone: int = 0  # source row no longer exists (kept in quarantine, nothing lost)
    still_invalid: int = 0
    unchanged_permanent: int = 0  # same data, permanent error: not resent
    resent: SyncReport | None = None

    @property
    def recovered(self) -> int:
        return (self.resent.created + self.resent.updated + self.resent.unchanged) \
            if self.resent else 0


def replay_sync(spec: SyncSpec, source: SourceResource, resource: CrmResource, store: SyncStore,
                keys: list[str] | None = None, log=None) -> ReplayReport:
    """Replay the sync's quarantined rows (or only `keys`)."""
    quarantine = store.quarantine_frame(spec.name)
    if keys is not None:
        quarantine = quarantine[quarantine["source_key"].isin(keys)]
    # Only a partition run knows the partitions: it re-evaluates these rows every time and syncs
    # them once their updated_at falls in one. Sent from here, they would be in both places.
    quarantine = quarantine[quarantine["error_code"] != "UPDATED_AT_OUT_OF_RANGE"]
    report = ReplayReport(spec.name, candidates=len(quarantine))
    if quarantine.empty:
        return report
    rows = sync_source(spec, source).read_keys(spec.source_key, list(quarantine["source_key"]))
    report.gone = len(set(quarantine["source_key"]) - set(rows[spec.source_key].astype(str)))
    if rows.empty:
        return report
    result = validate_partition(spec, rows)
    # each entry keeps its row's day (`partition`) and says that replay found it (`path`)
    store.record_results(spec.name, succeeded=[], quarantined=[
        replace(f, path=REPLAY) for f in result.failures])
    report.still_invalid = len(result.failures)

    entries = quarantine.set_index("source_key")
    worth_sending = [
        idx for idx, row in result.valid.iterrows()
        if _worth_sending(spec, row.to_dict(), entries.loc[row["_key"]])
    ]
    report.unchanged_permanent = len(result.valid) - len(worth_sending)
    if worth_sending:
        report.resent = run_upsert(spec, result.valid.loc[worth_sending], resource, store,
                                   partition=None, log=log, path=REPLAY)
    return report


def _worth_sending(spec: SyncSpec, row: dict, entry: pd.Series) -> bool:
    """`row`: a validated row (its typed payload and digest from validation)."""
    if entry["stage"] == "validation" or bool(entry["transient"]):
        return True  # it passes validation now / the failure may have passed
    digest = entry.get("payload_digest")
    if isinstance(digest, str) and digest:
        # The digest of what was refused, unmasked (the stored payload is masked when the sync
        # has sensitive fields, so it would never equal the row). An entry written before
        # digests existed holds the sha256 of its payload: compared that way.
        if is_legacy_hash(digest):
            return legacy_payload_hash(row[PAYLOAD]) != digest
        return row[DIGEST] != digest
    try:
        before = json.loads(entry["payload"]) if entry["payload"] else None
    except ValueError:
        return True
    return before is None or legacy_payload_hash(row[PAYLOAD]) != legacy_payload_hash(before)


def retry_transient(spec: SyncSpec, source: SourceResource, resource: CrmResource,
                    store: SyncStore, before: float, log=None) -> ReplayReport | None:
    """Retry the sync's transient failures of earlier runs (quarantined before `before`),
    claimed so that concurrent runs never retry the same row twice."""
    claimant = uuid.uuid4().hex
    keys = store.claim_transient(spec.name, claimant, before=before)
    if not keys:
        return None
    try:
        return replay_sync(spec, source, resource, store, keys=keys, log=log)
    finally:
        store.release_claims(spec.name, claimant)
