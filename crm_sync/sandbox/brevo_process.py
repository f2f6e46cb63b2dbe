"""A Brevo process at work: applying an upsert's or a delete's records when the process
completes, one record at a time (a bad record is rejected, the others go on), inside the
transaction of the poll that completes it. Also the public view of a stored record.
"""

from __future__ import annotations

from crm_sync.sandbox.brevo_rules import (
    ASSOCIATIONS_SHOWN, BREVO_MAX_ASSOCIATIONS, SCHEMAS, iso, value_fits,
)
from crm_sync.sandbox.state import SandboxState, now_ms

CRM = "brevo"


class Rejected(Exception):
    """One record of a process is rejected; the others go on."""


class Processor:
    """Applies one completed process's records, in order, inside one transaction."""

    def __init__(self, state: SandboxState, object_type: str):
        self.state, self.object_type = state, object_type
        self.schema = SCHEMAS[object_type]
        self.ts = now_ms()

    def new_id(self) -> int:
        # Brevo ids are integers issued by Brevo; a per-object counter never reuses one.
        name = f"brevo record ids {self.object_type}"
        self.state.db.bump(name)
        return self.state.db.counters()[name]

    def find(self, object_type: str, identifiers: dict) -> tuple[str | None, dict | None]:
        db = self.state.db
        if "id" in identifiers:  # id takes precedence when both are given (SDK docs)
            rid = str(identifiers["id"])
            return rid, db.get(CRM, object_type, rid)
        rid = db.find_unique(CRM, object_type, "ext_id", identifiers["ext_id"])
        return rid, db.get(CRM, object_type, rid) if rid else None

    def apply_all(self, records: list[dict]) -> list[dict]:
        """Write every acceptable record; return the rejections (index, reason)."""
        rejected = []
        duplicated = self.duplicated_identifiers(records)
        for index, record in enumerate(records):
            try:
                if index in duplicated:
                    raise Rejected("the same identifier appears more than once in the request")
                self.apply(record)
            except Rejected as exc:
                rejected.append({"index": index, "identifiers": record.get("identifiers"),
                                 "reason": str(exc)})
        return rejected

    @staticmethod
    def duplicated_identifiers(records: list[dict]) -> set[int]:
        # Undocumented; strict: every record sharing an identifier with another is rejected.
        seen: dict[tuple, list[int]] = {}
        for index, record in enumerate(records):
            identifiers = record.get("identifiers") or {}
            key = ("id", identifiers["id"]) if "id" in identifiers else \
                ("ext_id", identifiers["ext_id"]) if "ext_id" in identifiers else None
            if key:
                seen.setdefault(key, []).append(index)
        return {i for indexes in seen.values() if len(indexes) > 1 for i in indexes}

    def apply(self, record: dict) -> None:
        identifiers = record.get("identifiers") or {}
        rid, existing = self.find(self.object_type, identifiers) if identifiers else (None, None)
        if "id" in identifiers and existing is None:
            raise Rejected(f"no {self.object_type} record with id {identifiers['id']} "
                           "(id is for updates only)")
        attributes = self.known_attributes(record["attributes"])
        current = existing or {"identifiers": {}, "attributes": {}, "associations": {},
                               "createdAt": iso(self.ts)}
        links = self.resolve_links(current.get("associations", {}),
                                   record.get("associations") or [])
        if existing is None:
            rid = str(self.new_id())
            current["identifiers"] = {"id": int(rid)}
            if "ext_id" in identifiers:
                current["identifiers"]["ext_id"] = identifiers["ext_id"]
        current["attributes"] = {**current.get("attributes", {}), **attributes}
        old_links = current.get("associations", {})
        current["associations"] = links
        current["updatedAt"] = iso(self.ts)
        self.state.db.put(CRM, self.object_type, rid, current, self.ts)
        if "ext_id" in current["identifiers"]:
            self.state.db.set_unique(CRM, self.object_type, "ext_id",
                                     current["identifiers"]["ext_id"], rid)
        self.mirror_links(int(rid), old_links, links)

    def delete_all(self, identifiers: dict) -> tuple[int, list[dict]]:
        """Delete the records named by `ids` or `ext_ids`; (deleted, not found). An identifier
        without a record is skipped (deleting is idempotent), and links to the deleted
        records are removed from the records on the other side."""
        (kind, values), = identifiers.items()
        deleted, missing = 0, []
        for value in values:
            wanted = {"id": value} if kind == "ids" else {"ext_id": value}
            rid, record = self.find(self.object_type, wanted)
            if record is None:
                missing.append({"identifiers": wanted, "reason": "no such record"})
                continue
            self.mirror_links(int(rid), record.get("associations", {}), {})
            self.state.db.delete(CRM, self.object_type, rid)  # and its ext_id index entry
            deleted += 1
        return deleted, missing

    def known_attributes(self, attributes: dict) -> dict:
        """Keep the schema's attributes (unknown keys are silently ignored, as documented);
        a value of the wrong type rejects the record (undocumented; strict)."""
        kept = {}
        for key, value in attributes.items():
            kind = self.schema.attributes.get(key)
            if kind is None:
                continue
            if not value_fits(kind, value):
                raise Rejected(f"invalid value for attribute {key} ({kind}): {value!r}"[:300])
            kept[key] = value
        return kept

    def resolve_links(self, current: dict, associations: list[dict]) -> dict:
        links = {t: list(ids) for t, ids in current.items()}
        for entry in associations:
            target_type, action = entry["object_type"], entry.get("action") or "link"
            ids = links.setdefault(target_type, [])
            for target in entry["records"]:
                target_id, found = self.find(target_type, target["identifiers"])
                if action == "unlink":  # idempotent: unlinking a missing link is a no-op
                    if found is not None and int(target_id) in ids:
                        ids.remove(int(target_id))
                    continue
                if found is None:
                    raise Rejected(f"associated {target_type} record not found: "
                                   f"{target['identifiers']}")
                if int(target_id) not in ids:
                    ids.append(int(target_id))
            if len(ids) > BREVO_MAX_ASSOCIATIONS:
                raise Rejected(f"a record can be linked to at most {BREVO_MAX_ASSOCIATIONS} "
                               f"{target_type} records")
        return {t: ids for t, ids in links.items() if ids}

    def mirror_links(self, rid: int, old: dict, new: dict) -> None:
        """Associations are two-sided: keep the other record's list in step."""
        for target_type in set(old) | set(new):
            before, after = set(old.get(target_type, [])), set(new.get(target_type, []))
            for target_id, linked in [(t, True) for t in after - before] + \
                                     [(t, False) for t in before - after]:
                other = self.state.db.get(CRM, target_type, str(target_id))
                if other is None:
                    continue
                ids = other.setdefault("associations", {}).setdefault(self.object_type, [])
                if linked and rid not in ids:
                    ids.append(rid)
                elif not linked and rid in ids:
                    ids.remove(rid)
                if not ids:
                    other["associations"].pop(self.object_type)
                self.state.db.put(CRM, target_type, str(target_id), other, self.ts)


def public_record(data: dict, with_associations: bool) -> dict:
    view = {"identifiers": data["identifiers"], "attributes": data.get("attributes", {}),
            "createdAt": data.get("createdAt"), "updatedAt": data.get("updatedAt")}
    if with_associations:
        view["associations"] = [
            {"object_type": t, "records": [{"identifiers": {"id": i}}
                                           for i in ids[:ASSOCIATIONS_SHOWN]]}
            for t, ids in sorted(data.get("associations", {}).items())
        ]
    return view
