"""The associations of the rows a run sends (spec `associations:`, crm_sync/spec_links.py).

Per row to send and per association, the row's column holds the target row's source key:

- the target sync's state knows that row (the CRM confirmed its record): the row is linked to
  it (`RowLinks.link`, every time the row is sent: the CRM's links converge on the source);
  a different target recorded before (table `sync_links`, crm_sync/state/links.py) is unlinked
  (`RowLinks.unlink`);
- the column is empty: the target recorded before, if any, is unlinked;
- the target sync never confirmed that row (never synced, or quarantined before it reached
  the CRM): the row is NOT sent. It is quarantined as `ASSOCIATION_TARGET_MISSING`, naming the
  target sync and key, transient: its state is not written, so the next run of its partition
  sends it again, and the replay step of every later run (crm_sync/load/replay.py
  `retry_transient`) retries it; once the target is in the CRM it goes through and its entry
  leaves the quarantine.

The links of a confirmed row are recorded in the transaction that writes its state
(`SyncStore.record_results(links=...)`), so what is recorded is what the CRM confirmed.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from crm_sync.connectors.model import RowLinks, TargetRef
from crm_sync.spec_links import link_column
from crm_sync.state.masking import MASK, sensitive_names
from crm_sync.state.quarantine import QuarantineEntry

TARGET_MISSING = "ASSOCIATION_TARGET_MISSING"


@dataclass
class Resolved:
    """A chunk's associations, by source key of the rows to send."""

    links: dict[str, RowLinks] = field(default_factory=dict)
    # what to record once the CRM confirmed the row: (key, association, target key, crm id)
    rows: dict[str, list[tuple]] = field(default_factory=dict)
    changes: dict[str, tuple[int, int]] = field(default_factory=dict)  # (linked, unlinked)
    missing: dict[str, tuple[str, str]] = field(default_factory=dict)  # key -> (name, value)


def _ref(name: str, target, crm_id, key: str | None) -> TargetRef:
    # The target's matching value is known when it is its source key (Brevo's default ext_id,
    # a Salesforce external id mapped from the source key); else only its CRM id.
    known = target.key_column in (None, target.source_key)
    return TargetRef(name, target.object, None if crm_id is None else str(crm_id),
                     target.matching_key, key if known else None)


def resolve(spec, store, keys: list[str], chunk, same: list[bool]) -> Resolved | None:
    """The associations of the chunk's changed rows (`same[i]` False: row i may be sent);
    None when the sync declares none. Reads the store (in a worker thread)."""
    positions = [pos for pos, unchanged in enumerate(same) if not unchanged]
    if not spec.associations or not positions:
        return None
    wanted = [keys[pos] for pos in positions]
    recorded = store.get_links(spec.name, wanted)
    out = Resolved()
    link: dict[str, list] = {}
    unlink: dict[str, list] = {}
    for name, association in spec.associations.items():
        target = association.target
        column = chunk[link_column(name)].tolist()
        values = [None if column[pos] is None else str(column[pos]) for pos in positions]
        state = store.get_state(target.name, {v for v in values if v is not None})
        for key, value in zip(wanted, values):
            before = recorded.get((key, name))
            if value is not None and value not in state:
                out.missing.setdefault(key, (name, value))
                continue
            changed = before is not None and before[0] != value
            if changed:
                unlink.setdefault(key, []).append(_ref(name, target, before[1], before[0]))
            if value is not None:
                crm_id = state[value][0]
                link.setdefault(key, []).append(_ref(name, target, crm_id, value))
                out.rows.setdefault(key, []).append(
                    (key, name, value, None if crm_id is None else str(crm_id)))
            elif changed:
                out.rows.setdefault(key, []).append((key, name, None, None))
            made, gone = out.changes.get(key, (0, 0))
            out.changes[key] = (made + int(value is not None and (before is None or changed)),
                                gone + int(changed))
    for key in wanted:
        if key not in out.missing and (key in link or key in unlink):
            out.links[key] = RowLinks(tuple(link.get(key, ())), tuple(unlink.get(key, ())))
    return out


def set_aside_missing(spec, plan, resolved: Resolved | None, where, report) -> None:
    """Rows of `plan` whose target is not in the CRM: out of the records to send, into the
    quarantine (transient `ASSOCIATION_TARGET_MISSING`), not written to the state."""
    if resolved is None or not resolved.missing:
        return
    kept = []
    for key, fields, crm_id in plan.to_send:
        if key not in resolved.missing:
            kept.append((key, fields, crm_id))
            continue
        name, value = resolved.missing[key]
        association = spec.associations[name]
        target = association.target
        shown = MASK if target.source_key in sensitive_names(target) else repr(value)
        entry = QuarantineEntry.not_sent(
            spec, key, TARGET_MISSING,
            f"association {name!r}: the {spec.crm} record of sync {target.name!r} with "
            f"{target.source_key} {shown} is not in {spec.crm} (never synced, or "
            f"quarantined), so this row is not sent; it is sent again once that row is synced",
            fields, association.column, plan.hashes.pop(key, None),
            where.day(plan.versions.pop(key, None)), where.path)
        plan.quarantined.append(replace(entry, transient=True,
                                        value=None if shown == MASK else value))
        report.sent -= 1
        report.failed += 1
        report.failed_transient += 1
        report.failed_by_code[TARGET_MISSING] += 1
        report.targets_missing += 1
    plan.to_send = kept


def confirmed(resolved: Resolved | None, keys: list[str], report) -> list[tuple]:
    """The link rows to record for the rows the CRM confirmed (`keys`), counted."""
    if resolved is None:
        return []
    rows = []
    for key in keys:
        rows += resolved.rows.get(key, ())
        made, gone = resolved.changes.get(key, (0, 0))
        report.links_created += made
        report.links_removed += gone
    return rows
