"""Superleap: `POST /api/v1/org/objects/{slug}/record/bulk_upsert` with `{"values": [...]}`.

A record with `id` updates that record; one without creates a record. Superleap matches on its
own ids only, so crm_sync keeps each source row's Superleap id in its state store and sends it
on the next run: that is what makes a rerun update instead of creating a duplicate.
The answer's `records` list accounts for every input in input order (`CREATED`, `UPDATED`,
`FAILED` with `error_message`); `failed_records` carries the failures.

A create has no idempotency key. Run by the runner (load/runner.py), the connector keeps a write-ahead log of
creates in the sync store (crm_sync/state/writeahead.py) and, before creating a row whose earlier
create has an unknown outcome, looks the record up by `external_id` (`POST .../filter`): a record
found is adopted (updated by its id), never created a second time.

A `create_only` sync creates through `POST .../record/bulk_create` instead (a bare array; no ids
in the answer, so they are looked up by `external_id`; a 400 VALIDATION_FAILED names the bad
records by `record_index`: those are rejected, the rest sent again). Same write-ahead log.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from typing import ClassVar

from pydantic import Field

from crm_sync.connectors.base import Connector, CrmResource
from crm_sync.connectors.core import HttpCore
from crm_sync.connectors.fields import CrmObjectSchema
from crm_sync.connectors.superleap_create import MATCH_FIELD, bulk_create
from crm_sync.connectors.superleap_schema import parse_object
from crm_sync.connectors.model import Item, Outcome, failed_all
from crm_sync.connectors.wire import path_segment, serialize
from crm_sync.connectors.profile import CrmProfile, RecordRule
from crm_sync.errors import FatalCrmError, TransientFailure
from crm_sync.spec import SyncSpec
from crm_sync.state.writeahead import UNKNOWN_OUTCOME, WriteAheadLog, token

# Superleap record ids look like `g1koYv_2lLKYVan`: a 6-character org prefix, `_`, 8 characters
# (every id in Superleap's documentation has this shape, 15 characters in all).
SUPERLEAP_ID_PATTERN = r"^[A-Za-z0-9]{6}_[A-Za-z0-9]{8}$"

log = logging.getLogger(__name__)

LOOKUP_VALUES = 100  # external ids per Filter Object Data request
LOOKUP_PAGE_SIZE = 1000


class SuperleapConnector(Connector):
    crm = "superleap"
    # Superleap documents no maximum (REFERENCE.md §1: "max records ... nothing public found"):
    # a guess, the other CRMs' order of size; batch_size (default 100) sets the real one.
    max_records = 1000
    prefix = b'{"values":['
    suffix = b"]}"

    def __init__(self, spec: SyncSpec, core: HttpCore, batch_size: int | None = None, *,
                 reconcile_after_seconds: float = 60.0):
        super().__init__(spec, core, batch_size)
        self.reconcile_after = reconcile_after_seconds
        self.journal: WriteAheadLog | None = None
        self.adopted = 0  # records an earlier, unanswered create had made: adopted, not re-created

    def bind_store(self, store) -> None:
        self.journal = WriteAheadLog(store, self.spec.name)

    def build_record(self, key: str, fields: dict, crm_id: str | None) -> dict:
        record = dict(fields)
        if crm_id:
            record["id"] = crm_id
        return record

    @property
    def path(self) -> str:
        return f"/api/v1/org/objects/{path_segment(self.spec.object)}/record/bulk_upsert"

    async def upsert(self, items: Sequence[Item]) -> list[Outcome]:
        """One chunk of the run: settle the rows whose earlier create is still open, log the
        chunk's creates (one durable transaction, before any of its requests leaves), send."""
        if self.journal is None:  # no sync store (a resource used on its own)
            return await super().upsert(items)
        items, unresolved, seen = await self._reconcile(list(items))
        creates = [(i.key, i.record.get(MATCH_FIELD)) for i in items if "id" not in i.record]
        if creates:  # committed before a request leaves: a crash from here on is recoverable
            _, refused = await asyncio.to_thread(self.journal.log, creates, seen)
            if refused:  # another run logged or recorded one of these rows since we read
                items, unresolved = _refused(items, refused, unresolved)
                self.adopted += sum(r.crm_id is not None for r in refused.values())
                creates = [c for c in creates if c[0] not in refused]
        outcomes = await super().upsert(items) if items else []
        # Creates that failed with an answer (not a timeout or a drop, nor a gateway's 504) are
        # no longer in progress at Superleap: the next run may look them up at once.
        created = {key for key, _ in creates}
        answered = [o.key for o in outcomes if o.transient and o.http_status is not None
                    and o.http_status != 504 and o.key in created]
        if answered:
            await asyncio.to_thread(self.journal.answered, answered)
        return unresolved + outcomes

    @property
    def create_path(self) -> str:
        return f"/api/v1/org/objects/{path_segment(self.spec.object)}/record/bulk_create"

    async def send_batch(self, batch: list[Item]) -> list[Outcome]:
        if self.spec.mode != "create_only":
            return await self._send(batch)
        # create_only: new rows go through bulk_create. A row that carries an id here was
        # adopted (an earlier, unanswered create of it made the record) or recorded by another
        # run: the record exists, and create_only never updates one.
        made = [Outcome(i.key, "created", crm_id=i.record["id"]) for i in batch if "id" in i.record]
        new = [i for i in batch if "id" not in i.record]
        return made + (await bulk_create(self, new) if new else [])

    # -- reconciliation of creates whose outcome is unknown -----------------------------------
    async def _reconcile(self, batch: list[Item]) -> tuple[list[Item], list[Outcome], dict]:
        """Rows about to be created whose earlier create is still open in the write-ahead log:
        adopt the record that create made, if Superleap has it; (items to send, outcomes of
        the rows that cannot be decided now, the batch id of each open entry read)."""
        creates = [i.key for i in batch if "id" not in i.record]
        pending = await asyncio.to_thread(self.journal.pending, creates) if creates else {}
        seen = {key: entry.batch_id for key, entry in pending.items()}
        if not pending:
            return batch, [], seen
        now, unresolved, lookup = time.time(), [], {}
        for item in batch:
            entry = pending.get(item.key) if "id" not in item.record else None
            if entry is None:
                continue
            if entry.match_value is None:
                unresolved.append(_unknown(
                    item, transient=False, message=f"an earlier create of this row (batch "
                    f"{entry.batch_id}) got no answer, and the row has no {MATCH_FIELD} to find "
                    f"its record by: check Superleap, then put the record's id in the sync's "
                    f"matching_column (or map {MATCH_FIELD} in the sync spec)"))
            elif entry.maybe_in_progress(now, self.reconcile_after):
                unresolved.append(_unknown(
                    item, transient=True, message=f"an earlier create of this row (batch "
                    f"{entry.batch_id}) got no answer {now - entry.sent_at:.0f} s ago and may "
                    f"still be in progress; a later run looks the record up"))
            else:
                lookup[item.key] = entry.match_value
        found: dict[str, str] = {}
        if lookup:
            try:
                found = await self.find_ids(sorted(set(lookup.values())))
            except TransientFailure as exc:
                unresolved += [_unknown(item, transient=True, attempts=exc.attempts,
                                        message=f"an earlier create of this row got no answer "
                                                f"and looking its record up failed: {exc}")
                               for item in batch if item.key in lookup]
                lookup = {}
        decided = {o.key for o in unresolved}
        items = []
        for item in batch:
            if item.key in decided:
                continue
            crm_id = found.get(lookup.get(item.key))
            if crm_id:  # the earlier create went through: update that record, never a second one
                record = {**item.record, "id": crm_id}
                item = Item(key=item.key, record=record, body=serialize(record))
                self.adopted += 1
            items.append(item)
        return items, unresolved, seen

    @property
    def filter_path(self) -> str:
        return f"/api/v1/org/objects/{path_segment(self.spec.object)}/filter"

    async def find_ids(self, values: list[str]) -> dict[str, str]:
        """Superleap ids of the records whose `external_id` is one of `values` (token()s), by
        Filter Object Data; with several records for one value, the oldest."""
        found: dict[str, str] = {}
        for start in range(0, len(values), LOOKUP_VALUES):
            chunk = values[start:start + LOOKUP_VALUES]
            conditions = [{"field": MATCH_FIELD, "operator": "eq", "value": json.loads(v)}
                          for v in chunk]
            page = 1
            while True:
                query = {"fields": ["id", MATCH_FIELD, "created_at"],
                         "filters": {"or": conditions},
                         "sort": [{"field": "created_at", "direction": "asc"}],
                         "pagination": {"page": page, "page_size": LOOKUP_PAGE_SIZE}}
                response, payload, attempts = await self.core.call(
                    "POST", self.filter_path, content=serialize({"query": query}))
                status = response.status_code
                if status in (401, 403):
                    raise FatalCrmError(f"Superleap refused the token (HTTP {status}): check "
                                        f"SUPERLEAP_TOKEN for sync {self.spec.name!r}")
                data = payload.get("data") if isinstance(payload, dict) else None
                records = data.get("records") if isinstance(data, dict) else None
                if not 200 <= status < 300 or not isinstance(records, list):
                    raise TransientFailure(
                        f"Filter Object Data by {MATCH_FIELD} answered HTTP {status} without a "
                        f"record list", status, attempts, "LOOKUP_FAILED")
                for rec in records:
                    if isinstance(rec, dict) and rec.get("id") and rec.get(MATCH_FIELD) is not None:
                        value = token(rec[MATCH_FIELD])
                        if value in found and found[value] != rec["id"]:
                            log.warning("sync %s: several Superleap records have %s %s; "
                                        "adopting the oldest, %s", self.spec.name, MATCH_FIELD,
                                        value, found[value])
                        found.setdefault(value, rec["id"])
                if len(records) < LOOKUP_PAGE_SIZE:
                    break
                page += 1
        return found

    async def describe(self) -> CrmObjectSchema:
        """The object's fields, from Superleap's Get Object (connectors/superleap_schema.py)."""
        path = f"/api/v1/appflow/objects/{path_segment(self.spec.object)}"
        response, payload, _ = await self.core.call("GET", path)
        status = response.status_code
        if status in (401, 403):
            raise FatalCrmError(f"Superleap refused the token (HTTP {status}): check "
                                f"SUPERLEAP_TOKEN for sync {self.spec.name!r}")
        try:
            if status != 200:
                raise ValueError(f"HTTP {status}")
            return parse_object(payload, self.spec.object, f"GET {path}")
        except ValueError as exc:
            raise FatalCrmError(f"Superleap's Get Object for {self.spec.object!r} (sync "
                                f"{self.spec.name!r}) gave no field list: {exc}") from None

    # -- the request --------------------------------------------------------------------------
    async def _send(self, batch: list[Item]) -> list[Outcome]:
        # A create has no idempotency key: resending it after a dropped connection could create
        # the record twice, so batches with creates are not resent on transport errors.
        creates = any("id" not in item.record for item in batch)
        response, payload, attempts = await self.core.call(
            "POST", self.path, content=self.body(batch), retry_transport_errors=not creates)
        status = response.status_code
        error = (payload or {}).get("data") if isinstance(payload, dict) else None
        error = error if isinstance(error, dict) else {}
        self.refuse_fatal(status, error)
        if not 200 <= status < 300:  # a 5xx here answered creates: their outcome is unknown
            return failed_all(batch, error.get("error_code") or f"HTTP_{status}",
                              error.get("message") or response.text[:300], status=status,
                              transient=status >= 500, attempts=attempts)
        records = error.get("records") if isinstance(error, dict) else None
        if not isinstance(records, list) or len(records) != len(batch):
            return failed_all(batch, "MALFORMED_RESPONSE",
                              "Superleap's answer does not list one result per record",
                              status=status, transient=True, attempts=attempts,
                              raw=response.text[:2000])
        return [self._outcome(item, rec, status, attempts) for item, rec in zip(batch, records)]

    def refuse_fatal(self, status: int, error: dict) -> None:
        if status in (401, 403):
            raise FatalCrmError(f"Superleap refused the token (HTTP {status}): check "
                                f"SUPERLEAP_TOKEN for sync {self.spec.name!r}")
        if status == 404:
            raise FatalCrmError(f"Superleap has no object {self.spec.object!r} (sync "
                                f"{self.spec.name!r}): {error.get('message', 'not found')}")

    def _outcome(self, item: Item, rec, status: int, attempts: int) -> Outcome:
        action = rec.get("action") if isinstance(rec, dict) else None
        sent_ext = item.record.get("external_id")
        if isinstance(rec, dict) and sent_ext is not None and "external_id" in rec \
                and rec["external_id"] != sent_ext:
            action = "MISMATCH"  # results out of order: trust none of it
        if action == "CREATED" and rec.get("id"):
            return Outcome(item.key, "created", crm_id=rec["id"], attempts=attempts)
        if action == "UPDATED":
            return Outcome(item.key, "updated", crm_id=rec.get("id") or item.record.get("id"),
                           attempts=attempts)
        if action == "FAILED":
            message = str(rec.get("error_message") or "failed")
            return Outcome(item.key, "failed", error_code=_code(message), message=message,
                           http_status=status, transient=False, attempts=attempts,
                           column=_column(message))
        return Outcome(item.key, "failed", error_code="MALFORMED_RESPONSE",
                       message=f"unexpected result for this record: {str(rec)[:200]}",
                       http_status=status, transient=True, attempts=attempts, raw=str(rec)[:2000])


def _refused(items: list[Item], refused: dict, unresolved: list[Outcome]):
    """Items whose create the write-ahead log refused: a record another run recorded is
    updated by its id; a create another run has open is not sent (a later run decides)."""
    kept, unresolved = [], list(unresolved)
    for item in items:
        entry = refused.get(item.key)
        if entry is None:
            kept.append(item)
        elif entry.crm_id is not None:
            record = {**item.record, "id": entry.crm_id}
            kept.append(Item(key=item.key, record=record, body=serialize(record)))
        else:
            unresolved.append(_unknown(
                item, transient=True, message=f"another run is creating this row right now "
                f"(batch {entry.batch_id}): not sent twice; a later run looks it up"))
    return kept, unresolved


def _unknown(item: Item, *, transient: bool, message: str, attempts: int = 1) -> Outcome:
    return Outcome(item.key, "failed", error_code=UNKNOWN_OUTCOME, message=message,
                   transient=transient, attempts=attempts)


def _code(message: str) -> str:
    lowered = message.lower()
    if lowered.startswith("invalid id detected"):
        return "INVALID_ID"
    if "required" in lowered:
        return "REQUIRED_FIELD_MISSING"
    if lowered.startswith("invalid"):
        return "PARSE_INVALID_FORMAT"
    return "FAILED"


def _column(message: str) -> str | None:
    lowered = message.lower()
    for column in ("email", "phone", "name", "id"):
        if column in lowered:
            return column
    return None


class SuperleapResource(CrmResource):
    """Superleap connection: base URL and bearer token (`SUPERLEAP_TOKEN`)."""

    batch_size: int | None = Field(default=100, ge=1, le=1000,
                                   description="records per bulk_upsert request")
    reconcile_after_seconds: float = Field(
        default=60.0, ge=0,
        description="a create that got no answer is looked up (and adopted or sent again) once "
                    "it is this old: until then Superleap may still be processing it")
    connector_class: ClassVar[type[Connector]] = SuperleapConnector
    token_variable: ClassVar[str] = "SUPERLEAP_TOKEN"

    def connector_options(self) -> dict:
        return {"reconcile_after_seconds": self.reconcile_after_seconds}


RESOURCE = SuperleapResource


def _matching_column(spec: SyncSpec) -> str | None:
    return "_crm_id"  # the record id (`matching_column`), compared exactly


PROFILE = CrmProfile(
    name="superleap", label="Superleap", resource=SuperleapResource, kind="superleap",
    # A known Superleap id is sent as `id`; Superleap issues ids like g1koYv_2lLKYVan.
    record_rules=(RecordRule(
        "superleap_id_format", "_crm_id", "matches", SUPERLEAP_ID_PATTERN, "INVALID_ID_FORMAT",
        "{value} is not a Superleap record id (<org>_<8 characters>, like g1koYv_2lLKYVan)"),),
    # Object and field slugs (`lead`, `external_id`): lowercase, digits, `_`.
    object_pattern=r"[a-z][a-z0-9_]*", field_pattern=r"[a-z][a-z0-9_]*",
    name_rule="a Superleap slug: lowercase letters, digits and _, first a letter",
    matching_keys=frozenset({"id"}),  # Superleap's own record id; no id = create
    matching_column=_matching_column, matching_column_is_record_id=True,
    mirror_unsupported="Superleap documents no API to delete records, so crm_sync could not "
                       "remove the records of rows that left the source; use mode 'upsert' "
                       "for this sync",
    # Its bulk_upsert / bulk_create pages (../shared/crm-docs/superleap-*.txt) describe name,
    # email, phone, external_id and custom fields: no relationship or lookup field.
    associations_unsupported="Superleap documents no relationship fields (its record APIs "
                             "take only field values), so crm_sync cannot link its records",
    required_fields={"*": frozenset({"name"})},  # a lead needs its name ("Name or title")
    allowance=(None, "Superleap documents no rate limit"),
)
