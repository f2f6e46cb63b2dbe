"""Brevo custom objects: `POST /v3/objects/{object_type}/batch/upsert` with `{"records": [...]}`.

Each record is `{"identifiers": {"ext_id": <matching value>}, "attributes": {...}}`. An `ext_id`
that exists updates that record, a new one creates a record. With `matching_key: id` a row whose
Brevo id is known is sent as `{"id": <int>}` instead (update only).

The upsert is asynchronous: Brevo answers 202 with a `processId` and nothing else. This
connector polls `GET /v3/processes/{id}` until the process is `completed` or `failed` (with a
timeout), and then, because Brevo reports no per-record result for object upserts, reads the
records back (`GET /v3/objects/{object_type}/records`, the only documented read: pages of up to
1000 records in creation order, `sort=asc|desc`, with the total `count`; no filter by ext_id or
id) to confirm every record:

- found with the sent values -> `created` if Brevo created it during this run, else `updated`;
  its Brevo id is the outcome's crm_id. Attributes sent but absent from the record were silently
  ignored by Brevo (not in the object's schema): the record still counts, the outcome's message
  and a warning name them.
- not found, or with other values -> failed, transient `NOT_CONFIRMED` (the next run resends
  it). A record sent by an `id` Brevo does not have -> failed, permanent `UNKNOWN_ID`.

Reading is bounded by the batch, not by the object (reading the whole object after every
batch would cost O(n^2) requests over a large sync):

- before the first batch, one read of one record (`sort=desc&limit=1`) notes the newest record
  of the object: every record above it in creation order is one this run created;
- a row whose Brevo id is known (the sync state keeps the id each confirmation returned, or the
  row is sent by `id`) is looked for on the pages that hold that id, found by bisecting the
  pages in creation order (Brevo ids grow with creation): ~1 page per page of rows;
- the other rows are looked for among the records this run created: in creation order
  (`sort=asc`, pages records created meanwhile do not shift), from the first page not yet read
  in full onwards, all those pages at once; one such read serves every batch that completed
  before it, and a full page is never read again (only the last, partly filled page is);
- only a row found by neither (a record made outside crm_sync, an id that moved because records
  were deleted meanwhile, an unknown id) costs one read of the whole object, shared by the
  batches that complete before it starts.

Mirror syncs delete with `POST /v3/objects/{object_type}/batch/delete` (`{"identifiers":
{"ids": [...]}}`, at most 1000, 202 + processId), by the Brevo record ids kept in the state:
that id is what the upsert confirmed, whatever identified the record (an ext_id, or `id` with
`matching_key: id`), and the state does not keep ext_ids. The process is polled like an
upsert's and, as Brevo reports nothing per record, a read-back confirms each deletion.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from typing import ClassVar

import httpx
from pydantic import Field

from crm_sync.connectors.base import Connector, CrmResource
from crm_sync.connectors.brevo_process import UNREAD, ProcessReadBack, Snapshot, permanent
from crm_sync.connectors.core import HttpCore, HttpSettings
from crm_sync.connectors.model import Item, Outcome, RowLinks, TargetRef, failed_all
from crm_sync.connectors.wire import path_segment
from crm_sync.connectors.profile import CrmProfile, RecordRule
from crm_sync.errors import FatalCrmError
from crm_sync.spec import SyncSpec

# Brevo custom-object limits (per record upsert request).
BREVO_MAX_RECORDS = 1000
BREVO_MAX_BODY_BYTES = 1_000_000
BREVO_MAX_ATTRIBUTES = 500
BREVO_MAX_ASSOCIATIONS = 10  # records per associated object type and action, per record
BREVO_MAX_ASSOCIATION_ENTRIES = 20  # SDK: "Maximum 20 total entries ... 10 link and 10 unlink"

log = logging.getLogger(__name__)


class BrevoConnector(ProcessReadBack, Connector):
    crm = "brevo"
    max_records = BREVO_MAX_RECORDS
    max_bytes = BREVO_MAX_BODY_BYTES  # 1 MB, read strictly as 1,000,000 bytes
    prefix = b'{"records":['
    suffix = b"]}"

    def __init__(self, spec: SyncSpec, core: HttpCore, batch_size: int | None = None, *,
                 poll_interval_seconds: float = 0.2, max_poll_interval_seconds: float = 10.0,
                 process_timeout_seconds: float = 300.0):
        super().__init__(spec, core, batch_size)
        self.poll_interval = poll_interval_seconds
        self.max_poll_interval = max_poll_interval_seconds
        self.process_timeout = process_timeout_seconds
        self._ext_field = _ext_id_field(spec)
        self._read_lock = asyncio.Lock()
        self._boundary: int | None | object = UNREAD  # newest record id before the run
        self._count = 0  # the object's record count, as the latest read reported it
        self._known_ids: dict[str, int] = {}  # source key -> Brevo id, from the sync state
        # Records this run created, seen while looking for a batch's records but not claimed yet
        # (ext_id -> id, attributes): concurrent batches complete together, one read serves all.
        self._created_seen: dict[str, tuple[int, dict]] = {}
        self._frontier = 1  # the first page (ascending) not read in full since the boundary
        self._newest_seen = 0  # the highest Brevo id noted in _created_seen so far
        self._scan_lock = asyncio.Lock()
        self._latest: Snapshot | None = None
        self._rejections: dict[str, Outcome] = {}
        self.ignored_attributes: Counter = Counter()

    # -- payload -------------------------------------------------------------------------------
    def build_record(self, key: str, fields: dict, crm_id: str | None) -> dict:
        # Missing values are left out (not cleared), as for every CRM of crm_sync.
        attributes = {k: v for k, v in fields.items() if v is not None}
        if self.spec.matching_key == "id" and crm_id:
            identifiers = {"id": int(crm_id) if str(crm_id).isdigit() else crm_id}
        else:
            if crm_id and str(crm_id).isdigit():
                self._known_ids[key] = int(crm_id)  # where to look when confirming
            ext_id = key if self._ext_field is None else fields.get(self._ext_field)
            identifiers = {"ext_id": None if ext_id is None else str(ext_id)}
        return {"identifiers": identifiers, "attributes": attributes}

    def with_links(self, record: dict, links: RowLinks) -> dict:
        """`records[].associations`: per associated object type, the targets to unlink (a
        changed or emptied source value) and to link, each by its identifiers (REFERENCE.md,
        Brevo: "Attributes, Identifiers, Associations"; both records must exist first)."""
        entries = []
        for action, refs in (("unlink", links.unlink), ("link", links.link)):
            by_type: dict[str, list] = {}
            for ref in refs:
                by_type.setdefault(ref.object, []).append({"identifiers": _target(ref)})
            entries += [{"object_type": kind, "action": action, "records": records}
                        for kind, records in by_type.items()]
        return {**record, "associations": entries} if entries else record

    @property
    def path(self) -> str:
        return f"/v3/objects/{path_segment(self.spec.object)}/batch/upsert"

    # -- sending -------------------------------------------------------------------------------
    async def upsert(self, items: Sequence[Item]) -> list[Outcome]:
        # Records Brevo would refuse for the whole request (a 400 fails all 1000 records of a
        # batch) are failed here, before any batching.
        outcomes, sendable, seen = [], [], set()
        for item in items:
            problem = self._precheck(item, seen)
            if problem is None:
                sendable.append(item)
            else:
                outcomes.append(problem)
        if sendable:
            outcomes += await super().upsert(sendable)
        self._warn_ignored()
        return outcomes

    def _precheck(self, item: Item, seen: set) -> Outcome | None:
        attributes, identifiers = item.record["attributes"], item.record["identifiers"]
        if not attributes:
            return permanent(item, "NO_ATTRIBUTES", "Brevo needs at least one attribute per "
                              "record; every mapped value of this row is empty")
        if len(attributes) > BREVO_MAX_ATTRIBUTES:
            return permanent(item, "TOO_MANY_ATTRIBUTES",
                              f"{len(attributes)} attributes; Brevo accepts at most "
                              f"{BREVO_MAX_ATTRIBUTES} per record",
                              column=self.spec.attributes_json_column)
        if "id" in identifiers and not (isinstance(identifiers["id"], int) and
                                        identifiers["id"] > 0):
            return permanent(item, "INVALID_ID", f"{identifiers['id']!r} is not a Brevo record "
                              "id (a positive integer)")
        if "ext_id" in identifiers and not (identifiers["ext_id"] or "").strip():
            return permanent(item, "REQUIRED_FIELD_MISSING", "the row has no ext_id value",
                              column=self.spec.matching_column)
        if problem := _links_problem(item.record.get("associations") or ()):
            return permanent(item, "TOO_MANY_ASSOCIATIONS", problem)
        marker = json.dumps(identifiers, sort_keys=True, default=str)
        if marker in seen:  # Brevo would reject both copies inside the process
            return permanent(item, "DUPLICATE_MATCHING_KEY", f"another row of this run has "
                              f"the same identifiers {marker}")
        seen.add(marker)
        return None

    async def send_batch(self, batch: list[Item]) -> list[Outcome]:
        await self._note_boundary()
        return await self.split_on_rejection(batch, self._send, self._rejected)

    async def _send(self, batch: list[Item]) -> list[Outcome] | None:
        # Resending after a dropped connection is safe (the core retries transport errors):
        # every record carries an ext_id or id, so a second copy of the request updates the
        # same records with the same values instead of creating duplicates.
        response, payload, attempts = await self.core.call("POST", self.path,
                                                           content=self.body(batch))
        status, body = response.status_code, payload if isinstance(payload, dict) else {}
        self._raise_if_fatal(status, body)
        if 200 <= status < 300:  # Brevo documents 202
            process_id = body.get("processId")
            if not isinstance(process_id, int) or isinstance(process_id, bool):
                return failed_all(batch, "MALFORMED_RESPONSE", "Brevo accepted the batch "
                                  "without a processId", status=status, transient=True,
                                  attempts=attempts, raw=response.text[:2000])
            return await self._finish(batch, process_id, attempts)
        message = str(body.get("message") or response.text[:300])
        if status in (400, 413):
            # One record can make Brevo refuse the whole request: bisect to find it.
            if len(batch) == 1:
                self._rejections[batch[0].key] = Outcome(
                    batch[0].key, "failed", error_code=str(body.get("code") or "BAD_REQUEST"),
                    message=message, http_status=status, attempts=attempts)
            return None
        return failed_all(batch, str(body.get("code") or f"HTTP_{status}"), message,
                          status=status, transient=False, attempts=attempts)

    def _rejected(self, item: Item) -> Outcome:
        return self._rejections.pop(item.key)

    def _raise_if_fatal(self, status: int, body: dict, about_object: bool = True) -> None:
        """Errors no retry or later run can fix: stop the sync with one readable message."""
        name = self.spec.name
        if status == 401:
            raise FatalCrmError(f"Brevo refused the API key (HTTP 401): check BREVO_API_KEY "
                                f"for sync {name!r}")
        if status == 403:  # custom objects off for the plan, or a standard object
            raise FatalCrmError(f"Brevo refused to upsert {self.spec.object!r} records (HTTP 403, "
                                f"sync {name!r}): {body.get('message', 'forbidden')}")
        message = str(body.get("message", "")).lower().replace("_", " ")
        if about_object and (status == 404 or (status == 400 and "object type" in message)):
            raise FatalCrmError(f"Brevo has no custom object {self.spec.object!r} (sync "
                                f"{name!r}): {body.get('message', 'not found')}; create the "
                                "object type in Brevo first")

    def _warn_ignored(self) -> None:
        if self.ignored_attributes:
            top = ", ".join(f"{k} ({n})" for k, n in self.ignored_attributes.most_common(20))
            log.warning("sync %s: Brevo silently ignored attributes not defined on %r "
                        "(records written without them): %s", self.spec.name, self.spec.object,
                        top)

    # -- rate limit ----------------------------------------------------------------------------
    def on_response(self, response: httpx.Response) -> float | None:
        """Pause everything until the window resets once Brevo says no request is left."""
        try:
            remaining = int(response.headers["x-sib-ratelimit-remaining"])
        except (KeyError, ValueError):
            return None
        if remaining > 0:
            return None
        try:
            reset = float(response.headers.get("x-sib-ratelimit-reset", "1"))
        except ValueError:
            reset = 1.0
        # Hourly limits can announce a long reset; never stall longer than the core's backoff.
        return min(max(reset, 0.0), self.core.settings.max_backoff_seconds) or 1.0


def _target(ref: TargetRef) -> dict:
    """A target record's identifiers: its ext_id when known, else its Brevo id."""
    if ref.key_field == "ext_id" and ref.key_value is not None:
        return {"ext_id": str(ref.key_value)}
    if str(ref.crm_id or "").isdigit():
        return {"id": int(ref.crm_id)}
    return {"ext_id": str(ref.key_value or ref.crm_id)}


def _links_problem(entries) -> str | None:
    """Why Brevo would refuse a record's associations for the whole request, or None."""
    if len(entries) > BREVO_MAX_ASSOCIATION_ENTRIES:
        return (f"{len(entries)} association entries; Brevo accepts at most "
                f"{BREVO_MAX_ASSOCIATION_ENTRIES} per record")
    for entry in entries:
        if len(entry["records"]) > BREVO_MAX_ASSOCIATIONS:
            return (f"{len(entry['records'])} {entry['object_type']} records to "
                    f"{entry['action']}; Brevo accepts at most {BREVO_MAX_ASSOCIATIONS} per "
                    f"associated object type")
    return None


def _ext_id_field(spec: SyncSpec) -> str | None:
    """None when the ext_id is the row's source key, else the mapped field that holds it.
    (Connectors receive the source key and the mapped fields, not the raw row.)"""
    if spec.matching_column in (None, spec.source_key):
        return None
    for name, mapping in spec.fields.items():
        if mapping.column == spec.matching_column:
            return name
    raise ValueError(f"sync {spec.name!r}: Brevo's ext_id comes from matching_column "
                     f"{spec.matching_column!r}, which must be the source key or a mapped column")


class BrevoResource(CrmResource):
    """Brevo connection: base URL (`BREVO_BASE_URL`, without `/v3`; https://api.brevo.com in
    production) and API key (`BREVO_API_KEY`, sent as the `api-key` header).

    Brevo's rate limits depend on the plan (General, Advanced for Professional/Enterprise,
    Extended for Enterprise; per second and per hour, per endpoint group) and /v3/objects is not
    listed separately, so the client-side default is a conservative 10 requests per second;
    set `requests_per_window`/`window_seconds` to your plan. Polls and read-backs count too.
    """

    batch_size: int | None = Field(default=BREVO_MAX_RECORDS, ge=1, le=BREVO_MAX_RECORDS,
                                   description="records per batch upsert request")
    poll_interval_seconds: float = Field(default=0.2, gt=0,
                                         description="first wait before polling a process")
    max_poll_interval_seconds: float = Field(default=10.0, gt=0,
                                             description="longest wait between two polls")
    process_timeout_seconds: float = Field(default=300.0, gt=0,
                                           description="give up on a process after this long")
    connector_class: ClassVar[type[Connector]] = BrevoConnector
    token_variable: ClassVar[str] = "BREVO_API_KEY"

    def http_settings(self) -> HttpSettings:
        # Brevo's 429 carries no Retry-After; its wait is x-sib-ratelimit-reset ("time remaining
        # until the rate limit resets ... typically seconds",
        # https://developers.brevo.com/docs/limit-headers). A long one (an hourly limit) stops
        # the run's sending like a long Retry-After (max_retry_after_seconds).
        return replace(super().http_settings(), rate_limit_reset_header="x-sib-ratelimit-reset")

    def auth_headers(self) -> dict[str, str]:
        return {"api-key": self.token}

    def connector_options(self) -> dict:
        return {"poll_interval_seconds": self.poll_interval_seconds,
                "max_poll_interval_seconds": self.max_poll_interval_seconds,
                "process_timeout_seconds": self.process_timeout_seconds}


RESOURCE = BrevoResource


def _matching_column(spec: SyncSpec) -> str | None:
    """`ext_id` is compared exactly (Brevo documents no case folding); `matching_key: id` rows
    carry no matching value (the id comes from the state)."""
    if spec.matching_key != "ext_id":
        return None
    if spec.matching_column in (None, spec.source_key):
        return "_key"  # the ext_id is the source key
    return next((n for n, m in spec.fields.items() if m.column == spec.matching_column), None)


PROFILE = CrmProfile(
    name="brevo", label="Brevo", resource=BrevoResource, kind="brevo",
    # Object types: "Only lowercase alphanumeric characters and underscores are allowed (max 32
    # characters)"; attribute keys: letters, digits, `_`.
    object_pattern=r"[a-z0-9_]{1,32}", field_pattern=r"[A-Za-z0-9_]+",
    name_rule="a Brevo name: lowercase letters, digits and _, at most 32 (attribute keys: "
              "letters, digits and _)",
    matching_keys=frozenset({"ext_id", "id"}),  # records[].identifiers
    matching_column=_matching_column,
    # for scale in the benchmark's report: the tier Brevo's contacts API is under
    scale_tier=(1000 * 10, "contacts' 10 requests/s"),
    measures_attributes=True,  # at most BREVO_MAX_ATTRIBUTES and BREVO_MAX_BODY_BYTES a record
    record_rules=(
        # -1 marks an attributes column that is not a JSON object.
        RecordRule("attributes_json", "_attribute_count", "at_least", 0, "PARSE_INVALID_FORMAT",
                   "{column} must hold a JSON object of attribute name -> value"),
        RecordRule("max_attributes", "_attribute_count", "at_most", BREVO_MAX_ATTRIBUTES,
                   "TOO_MANY_ATTRIBUTES", f"the record has {{value}} attributes; Brevo accepts "
                   f"at most {BREVO_MAX_ATTRIBUTES}"),
        RecordRule("max_record_bytes", "_record_bytes", "at_most", BREVO_MAX_BODY_BYTES,
                   "RECORD_TOO_LARGE", f"the record takes at least {{value}} bytes; a Brevo "
                   f"request may carry {BREVO_MAX_BODY_BYTES} bytes"),
    ),
    # Brevo lists no separate limit for /v3/objects: it falls under "all other endpoints",
    # 100 requests per hour (200 on Enterprise, the plan custom objects need; REFERENCE.md §2).
    allowance=(1000 * 200 / 3600, "1000 records per call x 200 requests/hour (Enterprise)"),
    append_unsupported="Brevo documents only 'Create/Update object records in bulk' for custom "
                       "objects (batch/upsert: a known ext_id updates its record), no "
                       "create-only endpoint, so each row could not be promised to create one "
                       "record. Use mode 'create_only'",
)
