"""The emulated Salesforce org: its sObject types, records, external id index and daily API
allowance, and the two sObject Collections operations (upsert by external id, delete by id).

Every request's writes land in one transaction. The request handlers are in salesforce.py.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from crm_sync.sandbox.salesforce_rules import (
    NOT_FOUND, ROLLED_BACK, RequestError, blank, parser_error, check_type, field_errors,
    required_errors, save_error,
)
from crm_sync.sandbox.salesforce_schema import (
    BUILTIN_SOBJECTS, SfField, SObjectType, canonical_id, case_safe_suffix, new_record_id,
    sf_datetime, sobject_from_dict,
)
from crm_sync.sandbox.salesforce_relations import parent_ref, resolve_references
from crm_sync.sandbox.state import SandboxState, now_ms

CRM = "salesforce"
RECYCLE_BIN = "_recycle_bin"  # where deleted records' ids are kept (ENTITY_IS_DELETED)
SCHEMA_OBJECT = "_sobject_types"  # where sObject types registered at run time are stored
_USAGE_PREFIX = "salesforce api-usage "


# -- the emulation -----------------------------------------------------------------------------
@dataclass
class Plan:
    """What one record of a request will do, decided before anything is written."""

    changes: dict
    errors: list[dict] = field(default_factory=list)
    ext_value: str | None = None
    target: str | None = None  # the existing record an upsert updates
    new_id: str | None = None


class Salesforce:
    """The org: its sObject types, records, external id index and daily API allowance."""

    def __init__(self, state: SandboxState):
        self.state, self.db = state, state.db

    # sObject types ----------------------------------------------------------------------------
    def sobject(self, name: str) -> SObjectType:
        found = BUILTIN_SOBJECTS.get(name.lower())
        if found:
            return found
        for data in self.db.list(CRM, SCHEMA_OBJECT):
            if data["name"].lower() == name.lower():
                return sobject_from_dict(data)
        raise RequestError(404, "NOT_FOUND", NOT_FOUND)

    @staticmethod
    def external_id_field(sobj: SObjectType, name: str) -> str:
        found = sobj.field(name)
        if not found or not found[1].external_id:
            raise RequestError(404, "NOT_FOUND", "Provided external ID field does not exist or "
                                                 f"is not accessible: {name}")
        return found[0]

    # daily allowance -------------------------------------------------------------------------
    @staticmethod
    def _bucket(epoch: float) -> str:
        return _USAGE_PREFIX + time.strftime("%Y-%m-%dT%H", time.gmtime(epoch))

    def usage(self) -> int:
        """Requests in the rolling 24 hours (hour granularity), from the shared counters."""
        now = time.time()
        names = {self._bucket(now - hours * 3600) for hours in range(24)}
        return sum(v for k, v in self.db.counters().items() if k in names)

    def spend(self) -> tuple[bool, int]:
        """Count one request against the allowance; (admitted, usage after it)."""
        with self.db.transaction():  # check and count atomically, across processes
            used = self.usage()
            if used >= self.state.salesforce_daily_limit:
                return False, used
            self.db.bump(self._bucket(time.time()))
        return True, used + 1

    # external id index -----------------------------------------------------------------------
    # unique_values maps (sObject, field, value) to the ids holding it, comma-separated: an
    # External ID field need not be Unique, so several records may share a value.
    @staticmethod
    def index_key(fld: SfField, value) -> str:
        text = value if isinstance(value, str) else json.dumps(value)
        return text if fld.case_sensitive else text.lower()

    def matches(self, sobj: SObjectType, name: str, value) -> list[str]:
        ids = self.db.find_unique(CRM, sobj.name, name, self.index_key(sobj.fields[name], value))
        return ids.split(",") if ids else []

    def _index(self, sobj: SObjectType, name: str, value, record_id: str, add: bool) -> None:
        ids = [i for i in self.matches(sobj, name, value) if i != record_id]
        if add:
            ids.append(record_id)
        self.db.set_unique(CRM, sobj.name, name, self.index_key(sobj.fields[name], value),
                           ",".join(ids))

    def unique_conflicts(self, sobj: SObjectType, changes: dict, record_id: str | None,
                         claimed: dict | None = None) -> list:
        """DUPLICATE_VALUE for each Unique field whose value another record holds, stored or
        claimed by an earlier record of the same request (records are processed in order)."""
        problems = []
        for name, value in changes.items():
            fld = sobj.fields[name]
            if fld.unique and value is not None:
                others = [i for i in self.matches(sobj, name, value) if i != record_id]
                earlier = (claimed or {}).get((name, self.index_key(fld, value)))
                if earlier and earlier != record_id:
                    others.append(earlier)
                if others:
                    problems.append(save_error(
                        "DUPLICATE_VALUE", f"duplicate value found: {name} duplicates value on "
                                           f"record with id: {others[0]}", [name]))
        return problems

    # records ---------------------------------------------------------------------------------
    def parse_record(self, sobj: SObjectType, record, in_collection: bool) -> dict:
        """A record's values under their API names, or a whole-request error."""
        if not isinstance(record, dict):
            raise parser_error(f"SObject[{sobj.name}]", record)
        # "Each object in the request body must contain an attributes map. The map must contain
        # a value for type." and "objects only of the type indicated in the request URI".
        attributes = record.get("attributes")
        if in_collection or attributes is not None:
            kind = attributes.get("type") if isinstance(attributes, dict) else None
            if not isinstance(kind, str) or not kind:
                raise RequestError(400, "INVALID_TYPE", "Must send a concrete entity type.")
            if kind.lower() != sobj.name.lower():
                raise RequestError(400, "INVALID_TYPE",
                                   f"Record type {kind} does not match the sObject type of the "
                                   f"request URI: {sobj.name}")
        changes = {}
        for key, value in record.items():
            if key == "attributes":
                continue
            found = sobj.field(key)
            relationship = None if found else sobj.relationship(key)
            if not found and not relationship:
                raise RequestError(400, "INVALID_FIELD",
                                   f"No such column '{key}' on sobject of type {sobj.name}")
            name, fld = found or relationship[1:]
            if name in changes:  # also a parent named both ways (AccountId and Account)
                raise RequestError(400, "JSON_PARSER_ERROR", f"Duplicate field '{key}'")
            if relationship:  # the parent by an indexed field: salesforce_relations.py
                value = parent_ref(self, sobj, relationship[0], fld, value)
            else:
                check_type(fld, value)
            changes[name] = value
        return changes

    def record_errors(self, sobj: SObjectType, changes: dict) -> list[dict]:
        """One record's own errors: its references (parents looked up, ids checked), then its
        values (field_errors)."""
        return resolve_references(self, sobj, changes) + field_errors(sobj, changes)

    def write(self, sobj: SObjectType, plan: Plan, ts: int) -> tuple[str, bool]:
        """Apply one planned record; (record id, created)."""
        stamp = sf_datetime(ts)
        if plan.target:
            record = self.db.get(CRM, sobj.name, plan.target) or {}
            before = dict(record)
            record.update(plan.changes, LastModifiedDate=stamp, SystemModstamp=stamp)
            rid, created = plan.target, False
        else:
            rid = plan.new_id or self.fresh_id(sobj)
            before = {}
            record = {"Id": rid, **plan.changes, "IsDeleted": False, "CreatedDate": stamp,
                      "CreatedById": self.user_id, "LastModifiedDate": stamp,
                      "LastModifiedById": self.user_id, "SystemModstamp": stamp}
            created = True
        self.db.put(CRM, sobj.name, rid, record, ts)
        for name, fld in sobj.fields.items():  # keep the index of matchable fields current
            if not (fld.external_id or fld.unique) or before.get(name) == record.get(name):
                continue
            if before.get(name) is not None:
                self._index(sobj, name, before[name], rid, add=False)
            if record.get(name) is not None:
                self._index(sobj, name, record[name], rid, add=True)
        return rid, created

    def fresh_id(self, sobj: SObjectType) -> str:
        while True:
            rid = new_record_id(sobj.key_prefix)
            if self.db.get(CRM, sobj.name, rid) is None:
                return rid

    @property
    def user_id(self) -> str:
        body = "0055g0" + (self.state.org + "000000000")[:9]
        return body + case_safe_suffix(body)

    # the collections upsert ------------------------------------------------------------------
    def plan_upsert(self, sobj: SObjectType, ext: str, records: list) -> list[Plan]:
        plans = [Plan(changes=self.parse_record(sobj, r, in_collection=True)) for r in records]
        ext_fld = sobj.fields[ext]
        for plan in plans:
            plan.errors = self.record_errors(sobj, plan.changes)
            value = plan.changes.get(ext)
            if blank(value):
                plan.errors.append(save_error("MISSING_ARGUMENT", f"{ext} not specified", [ext]))
            else:
                plan.ext_value = value
        # "When batch updating multiple objects where the external ID is the same for two or more
        # objects in your batch call, those records are marked as errors in the UpsertResult."
        seen: dict[str, int] = {}
        for plan in plans:
            if plan.ext_value is not None:
                key = self.index_key(ext_fld, plan.ext_value)
                seen[key] = seen.get(key, 0) + 1
        for plan in plans:
            if plan.ext_value is not None and seen[self.index_key(ext_fld, plan.ext_value)] > 1:
                plan.errors.append(save_error(
                    "DUPLICATE_VALUE", f"Duplicate external id specified: {plan.ext_value}",
                    [ext]))
        claimed: dict[tuple[str, str], str] = {}
        for plan in plans:
            if not plan.errors:
                self.plan_match(sobj, ext, plan, claimed)
        return plans

    def plan_match(self, sobj: SObjectType, ext: str, plan: Plan,
                   claimed: dict | None = None) -> None:
        """Decide create or update by the external id; add what that decision runs into."""
        ids = self.matches(sobj, ext, plan.ext_value)
        if len(ids) > 1:
            plan.errors.append(save_error(
                "DUPLICATE_EXTERNAL_ID", f"more than one record found for external id field: "
                                         f"[{', '.join(ids)}]", [ext]))
            return
        plan.target = ids[0] if ids else None
        plan.errors += required_errors(sobj, plan.changes, creating=plan.target is None)
        plan.errors += self.unique_conflicts(sobj, plan.changes, plan.target, claimed)
        if plan.target is None:
            plan.new_id = self.fresh_id(sobj)
        if claimed is not None and not plan.errors:
            for name, value in plan.changes.items():
                if sobj.fields[name].unique and value is not None:
                    key = (name, self.index_key(sobj.fields[name], value))
                    claimed[key] = plan.target or plan.new_id

    def upsert_collection(self, sobj: SObjectType, ext: str, records: list,
                          all_or_none: bool) -> list[dict]:
        ts = now_ms()
        with self.db.transaction():  # every write of the request lands together, or none
            plans = self.plan_upsert(sobj, ext, records)
            failed = any(p.errors for p in plans)
            if all_or_none and failed:
                return [_rolled_back(p) for p in plans]
            results = []
            for plan in plans:
                if plan.errors:
                    # The documented partial answer (allOrNone false): a failed entry has only
                    # `success` and `errors`, no `id` and no `created`.
                    results.append({"success": False, "errors": plan.errors})
                    continue
                rid, created = self.write(sobj, plan, ts)
                results.append({"id": rid, "success": True, "errors": [], "created": created})
            return results

    # the collections delete -----------------------------------------------------------------
    def sobject_by_prefix(self, key_prefix: str) -> SObjectType | None:
        for sobj in BUILTIN_SOBJECTS.values():
            if sobj.key_prefix == key_prefix:
                return sobj
        for data in self.db.list(CRM, SCHEMA_OBJECT):
            if data["key_prefix"] == key_prefix:
                return sobject_from_dict(data)
        return None

    def plan_delete(self, raw_id: str) -> tuple[str, SObjectType | None, dict | None]:
        """(18-character id, its sObject type, the record) of one id to delete, or raise a
        DeleteError with the DeleteResult error Salesforce gives for it."""
        rid = canonical_id(raw_id)
        if rid is None:
            raise DeleteError(None, "MALFORMED_ID", f"malformed id {raw_id}")
        if self.db.get(CRM, RECYCLE_BIN, rid) is not None:
            raise DeleteError(rid, "ENTITY_IS_DELETED", "entity is deleted")
        sobj = self.sobject_by_prefix(rid[:3])
        record = self.db.get(CRM, sobj.name, rid) if sobj else None
        if record is None:
            raise DeleteError(rid, "INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id")
        return rid, sobj, record

    def delete_record(self, sobj: SObjectType, rid: str, record: dict) -> None:
        """Delete one record: out of the records and the external id / unique index (values
        other records share stay indexed for them), into the recycle bin."""
        for name, fld in sobj.fields.items():
            value = record.get(name)
            if (fld.external_id or fld.unique) and value is not None and \
                    [i for i in self.matches(sobj, name, value) if i != rid]:
                self._index(sobj, name, value, rid, add=False)
        self.db.delete(CRM, sobj.name, rid)  # drops the index rows only this record held
        self.db.put(CRM, RECYCLE_BIN, rid, {"Id": rid, "type": sobj.name, "IsDeleted": True},
                    now_ms())

    def delete_collection(self, ids: list[str], all_or_none: bool) -> list[dict]:
        """Delete records in the order given; one DeleteResult per id, in that order."""
        with self.db.transaction():  # every delete of the request lands together, or none
            results, planned = [], []
            for raw_id in ids:
                try:
                    rid, sobj, record = self.plan_delete(raw_id)
                except DeleteError as exc:
                    results.append(exc.result())
                    continue
                if all_or_none:  # nothing is deleted before every id is known to be fine
                    planned.append((len(results), rid, sobj, record))
                    results.append({"id": rid, "success": True, "errors": []})
                    continue
                self.delete_record(sobj, rid, record)
                results.append({"id": rid, "success": True, "errors": []})
            if all_or_none and any(not r["success"] for r in results):
                for index, rid, _, _ in planned:
                    results[index] = {"id": rid, "success": False,
                                      "errors": [save_error(*ROLLED_BACK)]}
            elif all_or_none:
                for _, rid, sobj, record in planned:
                    self.delete_record(sobj, rid, record)
            return results

    def as_resource(self, sobj: SObjectType, record: dict, version: str) -> dict:
        url = f"/services/data/v{version}/sobjects/{sobj.name}/{record['Id']}"
        return {"attributes": {"type": sobj.name, "url": url}, **record}


class DeleteError(Exception):
    """One id of a collections delete that cannot be deleted (the others go on)."""

    def __init__(self, rid: str | None, code: str, message: str):
        super().__init__(message)
        self.rid, self.code, self.message = rid, code, message

    def result(self) -> dict:
        # The documentation's example of a failed DeleteResult has no `id`: it is only shown
        # when the id was understood.
        entry = {"success": False, "errors": [save_error(self.code, self.message)]}
        return {"id": self.rid, **entry} if self.rid else entry



def _rolled_back(plan: Plan) -> dict:
    # The docs' allOrNone example: the record that was valid still shows the id it had been
    # given; the failed one has only `success` and `errors`. Neither carries `created`.
    if plan.errors:
        return {"success": False, "errors": plan.errors}
    return {"id": plan.target or plan.new_id, "success": False,
            "errors": [save_error(*ROLLED_BACK)]}

