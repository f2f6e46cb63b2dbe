"""Mirror syncs: after the upsert, delete the CRM records of rows that left the source.

A sync with `mode: mirror` is an upsert plus this step. Candidates are the source keys in the
sync's state (rows crm_sync created or updated before) that are no longer in the source table
at all, whatever their day. Their CRM records are deleted through the CRM's delete API, by the
record ids the state keeps:

- a confirmed deletion removes the key from the state (and any quarantine entry of it), in one
  transaction, so a later run does not see it again;
- a failed deletion keeps the key in the state and puts it in the quarantine (stage `crm`, the
  CRM's code and message, transient or not): nothing is lost, and the next mirror run tries
  again (deleting a record that is already gone is harmless in every supported CRM);
- a gone key whose CRM record another source row still maps to (two rows matched on one
  record, e.g. one HubSpot email) is only forgotten: deleting would remove a live row's record.

A run that would delete more than the sync's `mirror_max_delete_share` (default 0.1) of its
records deletes nothing and fails with both counts (`MassDeleteRefused`): a source file cut
short (a truncated export, a partial extract) looks exactly like mass deletion. A run whose
run config sets `allow_mass_delete` deletes anyway.

Order matters: the state is read before the source, so a row synced by a concurrent run after
the source was read can never look gone. A source table that holds no rows at all deletes
nothing (an empty extract is far more often a broken one than an intended wipe of the CRM).
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from crm_sync.connectors.base import CrmResource
from crm_sync.connectors.model import Outcome
from crm_sync.state.quarantine import MIRROR, QuarantineEntry, day_of
from crm_sync.extract.connections import sync_source
from crm_sync.extract.sources import SourceResource
from crm_sync.errors import MassDeleteRefused, SpecError  # MassDeleteRefused re-exported
from crm_sync.connectors import PROFILES
from crm_sync.spec import SyncSpec
from crm_sync.state.store import SyncStore

QUARANTINE_PATH = MIRROR  # the quarantine's `path` of failed deletions


@dataclass
class MirrorReport:
    sync: str
    candidates: int = 0  # synced keys whose source row is gone
    deleted: int = 0  # their CRM record is deleted and the key forgotten
    failed: int = 0  # the deletion failed: still in the state, and in the quarantine
    failed_transient: int = 0
    forgotten: int = 0  # the record belongs to a row still in the source: key forgotten only
    dry_run: bool = False
    would_delete: int = 0  # dry run: keys whose record a real run would delete
    skipped: str | None = None  # why nothing was deleted although there were candidates
    requests: int = 0
    failed_by_code: Counter = field(default_factory=Counter)


def mirror_deletes(spec: SyncSpec, source: SourceResource, resource: CrmResource,
                   store: SyncStore, log=None, dry_run: bool = False,
                   allow_mass_delete: bool = False) -> MirrorReport:
    """Delete the CRM records of the sync's synced rows that left the source table.
    `allow_mass_delete`: delete even more than the sync's mirror_max_delete_share."""
    reason = PROFILES[spec.crm].mirror_unsupported
    if reason:
        raise SpecError(f"sync {spec.name!r}: mode 'mirror' is not available for {spec.crm}: "
                        f"{reason}")
    report = MirrorReport(spec.name, dry_run=dry_run)
    state = store.state_frame(spec.name)  # before the source: see the module docstring
    if state.empty:
        return report
    present = sync_source(spec, source).all_keys(spec.source_key)
    gone = state[~state["source_key"].isin(present)]
    report.candidates = len(gone)
    if gone.empty:
        return report
    if not present:
        report.skipped = (f"source table {spec.source!r} holds no rows; deleting all "
                          f"{len(gone)} records of sync {spec.name!r} was not attempted")
        _say(log, f"{spec.name}: {report.skipped}")
        return report

    targets, shared, no_id = _targets(state, gone, present)
    would_delete = sum(len(keys) for keys in targets.values())
    refusal = _mass_delete(spec, would_delete, len(state), allow_mass_delete)
    if dry_run:
        report.would_delete = would_delete
        if refusal:
            _say(log, f"{spec.name}: dry run: a real run would delete nothing: {refusal}")
        return report
    if refusal:
        raise MassDeleteRefused(refusal)

    outcomes, report.requests = asyncio.run(_delete(spec, resource, list(targets)))
    _record(spec, store, report, gone, targets, outcomes, shared, no_id)
    _say(log, f"{spec.name}: {report.candidates} synced rows left the source: {report.deleted} "
              f"deleted in {spec.crm}, {report.failed} failed (quarantined), "
              f"{report.forgotten} forgotten (their record belongs to another row)")
    return report


def _targets(state, gone, present):
    """(CRM id -> the gone keys mapped to it, the gone keys whose record a row still in the
    source maps to, the gone keys without a CRM id)."""
    live_ids = set(state.loc[state["source_key"].isin(present), "crm_id"].dropna())
    shared = gone[gone["crm_id"].isin(live_ids)]
    no_id = gone[gone["crm_id"].isna()]
    targets: dict[str, list[str]] = defaultdict(list)
    for key, crm_id in gone.loc[~gone.index.isin(shared.index.union(no_id.index)),
                                ["source_key", "crm_id"]].itertuples(index=False):
        targets[str(crm_id)].append(key)
    return targets, shared, no_id


def _record(spec: SyncSpec, store: SyncStore, report: MirrorReport, gone, targets, outcomes,
            shared, no_id) -> None:
    """Forget the keys whose record is deleted (or another row's), quarantine the others."""
    to_forget = list(shared["source_key"])  # no deletion needed: the record is another row's
    report.forgotten = len(to_forget)
    days = _days(gone)
    quarantined = [QuarantineEntry.mirror_deletion(spec, key, None, Outcome(
        key, "failed", error_code="NO_CRM_ID", transient=False,
        message="the state holds no CRM record id for this row, so its record cannot be "
                "deleted"), days.get(key)) for key in no_id["source_key"]]
    for outcome in outcomes:
        keys = targets.get(outcome.key, [])
        if outcome.status == "deleted":
            to_forget += keys
            report.deleted += len(keys)
            continue
        quarantined += [QuarantineEntry.mirror_deletion(spec, key, outcome.key, outcome,
                                                        days.get(key)) for key in keys]
    for entry in quarantined:
        report.failed += 1
        report.failed_transient += int(entry.transient)
        report.failed_by_code[entry.error_code] += 1
    store.forget(spec.name, to_forget)  # only confirmed deletions (and shared records)
    if quarantined:
        store.record_results(spec.name, succeeded=[], quarantined=quarantined)
    if report.deleted + report.failed + report.forgotten != report.candidates:
        raise AssertionError(f"sync {spec.name!r}: mirror accounted for "
                             f"{report.deleted + report.failed + report.forgotten} of "
                             f"{report.candidates} candidates")


async def _delete(spec: SyncSpec, resource: CrmResource,
                  crm_ids: list[str]) -> tuple[list[Outcome], int]:
    if not crm_ids:
        return [], 0
    async with resource.open(spec) as connector:
        outcomes = await connector.delete(crm_ids)
        requests = connector.core.stats.requests
    if sorted(o.key for o in outcomes) != sorted(crm_ids):
        raise AssertionError(f"sync {spec.name!r}: the {spec.crm} connector returned "
                             f"{len(outcomes)} outcomes for {len(crm_ids)} deletions")
    return outcomes, requests


def _days(gone) -> dict[str, str | None]:
    """Source key -> the day of the updated_at its state keeps (the quarantine's `partition`
    of a failed deletion; None when the state predates that column)."""
    if "updated_at" not in gone.columns:
        return {}
    return {key: day_of(stamp) for key, stamp in zip(gone["source_key"], gone["updated_at"])}


def _mass_delete(spec: SyncSpec, would_delete: int, records: int, allowed: bool) -> str | None:
    """Why the run must not delete `would_delete` of the sync's `records`, or None."""
    share = would_delete / records if records else 0.0
    if allowed or share <= spec.mirror_max_delete_share:
        return None
    return (f"sync {spec.name!r}: the mirror step would delete {would_delete} of the "
            f"{records} {spec.crm} records the sync holds ({share:.1%}), more than its "
            f"mirror_max_delete_share ({spec.mirror_max_delete_share:.0%}); nothing was "
            f"deleted. A source table cut short (a truncated file, a partial extract) looks "
            f"like this: check the source table {spec.source!r}. If the rows really left it, "
            f"run once with the run config "
            f'{{"ops": {{"{spec.name}_mirror": {{"config": {{"allow_mass_delete": true}}}}}}}}, '
            f"or raise mirror_max_delete_share in the sync spec.")


def _say(log, message: str) -> None:
    if log is not None:
        log(message)


__all__ = ["MassDeleteRefused", "MirrorReport", "mirror_deletes", "QUARANTINE_PATH"]
