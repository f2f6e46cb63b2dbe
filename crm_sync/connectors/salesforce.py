"""Salesforce: `PATCH /services/data/vXX.X/composite/sobjects/{SObject}/{ExternalIdField}` with
`{"allOrNone": ..., "records": [{"attributes": {"type": SObject}, ...fields}]}`, up to 200 records.

Records are matched on the external id field named in the URI, never on record ids ("Only
external ids are supported. Don't use record ids."), so a rerun updates the same records and a
resent request cannot create duplicates. The answer is one UpsertResult per record, in input
order and without the external id, so results are matched to records by position.

Salesforce has no per-second limit on this API but a daily allowance of requests per org,
reported on every answer as `Sforce-Limit-Info: api-usage=N/M`. A sync stops sending once N/M
reaches `daily_allowance_share`, so the rest of the org's integrations keep their share; the
rows it did not send fail transient and go out on the next run.

Mirror syncs delete with the sObject Collections delete, `DELETE /services/data/vXX.X/composite/
sobjects?ids=<id>,<id>&allOrNone=false` (at most 200 ids, one DeleteResult per id in order), by
the record ids kept in the state.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import replace
from typing import ClassVar

from pydantic import Field, field_validator

from crm_sync.connectors.base import Connector, CrmResource
from crm_sync.connectors.core import HttpCore
from crm_sync.connectors.fields import CrmObjectSchema
from crm_sync.connectors.salesforce_schema import parse_describe
from crm_sync.connectors.model import Item, Outcome, failed_all
from crm_sync.connectors.salesforce_bulk import BulkPath
from crm_sync.connectors.salesforce_links import TARGET_MISSING, error_code, with_parents
from crm_sync.connectors.salesforce_oauth import SalesforceOAuth
from crm_sync.connectors.wire import path_segment
from crm_sync.connectors.profile import CrmProfile, RecordRule
from crm_sync.errors import (AllowanceReserveReached, FatalCrmError, SchemaUnavailable,
                             TransientFailure)
from crm_sync.spec import SyncSpec

# Salesforce record ids: 15 (case-sensitive) or 18 (case-insensitive) alphanumerics, starting
# with a 3-character key prefix. Such values must not be sent as external ids.
SALESFORCE_ID_PATTERN = r"^[a-zA-Z0-9]{15}(?:[a-zA-Z0-9]{3})?$"
SALESFORCE_MAX_RECORDS = 200  # records per sObject Collections request

MIN_API_VERSION = 46.0  # the collections upsert "is available in API version 46 and later"
ROLLED_BACK = "ALL_OR_NONE_OPERATION_ROLLED_BACK"
RESERVE_CODE = "ALLOWANCE_RESERVE_REACHED"
LIMIT_CODE = "REQUEST_LIMIT_EXCEEDED"
ALREADY_DELETED = "ENTITY_IS_DELETED"  # a delete of a record in the recycle bin
# Whole-request 400s that no record of this sync could get past: the mapping names a field the
# org does not have, or the sObject type is wrong. Bisecting would only spend the allowance.
FATAL_400 = frozenset({"INVALID_FIELD", "INVALID_TYPE", "MISSING_ARGUMENT"})
_USAGE = re.compile(r"api-usage=(\d+)/(\d+)")
class SalesforceConnector(BulkPath, Connector):  # BulkPath: partitions above bulk_threshold
    crm = "salesforce"
    max_records = SALESFORCE_MAX_RECORDS  # "The list can contain up to 200 objects."
    suffix = b"]}"

    def __init__(self, spec: SyncSpec, core: HttpCore, batch_size: int | None = None,
                 api_version: str = "62.0", daily_allowance_share: float = 0.9,
                 bulk_timeout_seconds: float = 900.0):
        super().__init__(spec, core, batch_size)
        self.api_version, self.bulk_timeout = api_version, bulk_timeout_seconds
        self.allowance_share = daily_allowance_share
        flag = b"true" if spec.all_or_none else b"false"
        self.prefix = b'{"allOrNone":' + flag + b',"records":['
        self.usage: tuple[int, int] | None = None  # the last api-usage Salesforce reported
        self.stopped: str | None = None  # why no further batch may be sent, once it is so
        self._known_ids: dict[str, str] = {}
        self._rejected: dict[str, Outcome] = {}
        # Batches wait here, not inside HttpCore, so the allowance is checked right before each
        # request is sent rather than when all batches were queued at once.
        self._gate = asyncio.Semaphore(core.settings.max_concurrency)

    @property
    def path(self) -> str:
        return (f"/services/data/v{path_segment(self.api_version)}/composite/sobjects/"
                f"{path_segment(self.spec.object)}/{path_segment(self.spec.matching_key)}")

    def build_record(self, key: str, fields: dict, crm_id: str | None) -> dict:
        # Never an Id: the external id in the fields identifies the record. A known id is only
        # kept to tell created from updated should an answer leave `created` out.
        if crm_id:
            self._known_ids[key] = crm_id
        return {"attributes": {"type": self.spec.object},
                **{k: v for k, v in fields.items() if k != "attributes"}}

    with_links = staticmethod(with_parents)  # each parent by its external id (salesforce_links)

    # -- the schema ------------------------------------------------------------------------
    async def describe(self) -> CrmObjectSchema:
        """The sObject's fields, from `GET /services/data/vXX.X/sobjects/{SObject}/describe`."""
        path = (f"/services/data/v{path_segment(self.api_version)}/sobjects/"
                f"{path_segment(self.spec.object)}/describe")
        try:
            response, payload, _ = await self.core.call("GET", path)
        except TransientFailure as exc:
            raise SchemaUnavailable(f"Salesforce's describe of {self.spec.object} did not "
                                    f"answer: {exc}", self.crm) from exc
        code, message = _first_error(payload, response.text)
        if response.status_code == 401:
            raise FatalCrmError(f"Salesforce refused the session token (HTTP 401 {code}) for "
                                f"sync {self.spec.name!r}: check SALESFORCE_TOKEN")
        if response.status_code == 404:
            raise FatalCrmError(f"Salesforce has no sObject {self.spec.object!r} (HTTP 404 "
                                f"{code}) for sync {self.spec.name!r}: {message}")
        if response.status_code != 200 or not isinstance(payload, dict) or \
                not isinstance(payload.get("fields"), list):
            raise SchemaUnavailable(f"Salesforce's describe of {self.spec.object} answered HTTP "
                                    f"{response.status_code} {code or ''}: {message[:200]}",
                                    self.crm)
        return parse_describe(payload, self.spec.object, f"GET {path}")

    # -- the daily allowance -----------------------------------------------------------------
    def on_response(self, response) -> float | None:
        match = _USAGE.search(response.headers.get("sforce-limit-info", ""))
        if match:
            used, limit = int(match.group(1)), int(match.group(2))
            self.usage = (used, limit)
            if limit > 0 and used / limit >= self.allowance_share and self.stopped is None:
                self.stopped = (
                    f"Salesforce daily API allowance reserve reached: {used:,} of {limit:,} "
                    f"requests used ({used / limit:.0%}); sync {self.spec.name!r} may use up to "
                    f"{self.allowance_share:.0%} (daily_allowance_share), so the remaining rows "
                    f"were not sent and are retried on the next run")
                self.core.stats.limit_stop = self.core.stats.limit_stop or \
                    f"Salesforce's daily API allowance reserve was reached ({used:,} of " \
                    f"{limit:,} requests used, daily_allowance_share " \
                    f"{self.allowance_share:.0%})"
        return None  # no per-second limit to adapt to

    # -- sending -----------------------------------------------------------------------------
    async def send_batch(self, batch: list[Item]) -> list[Outcome]:
        if self.stopped:
            raise AllowanceReserveReached(self.stopped)
        return await self.split_on_rejection(batch, self._send_round, self._reject)

    async def _send_round(self, batch: list[Item]) -> list[Outcome] | None:
        """Send one request; None when Salesforce refuses it as a whole (400) so that the
        caller bisects. With allOrNone, the records rolled back only because of another record
        are sent again without it."""
        outcomes = await self._send(batch)
        if outcomes is None:
            return None
        rolled = [item for item, o in zip(batch, outcomes) if o.error_code == ROLLED_BACK]
        own_failures = any(not o.ok and o.error_code != ROLLED_BACK for o in outcomes)
        if rolled and own_failures:  # each round drops at least one bad record: it ends
            resent = await self.split_on_rejection(rolled, self._send_round, self._reject)
            by_key = {o.key: o for o in resent}
            outcomes = [by_key.get(o.key, o) for o in outcomes]
        elif rolled:
            # Rolled back with no record to blame: nothing is wrong with these rows that a
            # later run could not fix, so they are not quarantined as permanent failures.
            outcomes = [replace(o, transient=True) if o.error_code == ROLLED_BACK else o
                        for o in outcomes]
        return outcomes

    async def _send(self, batch: list[Item]) -> list[Outcome] | None:
        async with self._gate:
            if self.stopped:
                return failed_all(batch, RESERVE_CODE, self.stopped, transient=True)
            try:
                # Upsert by external id is idempotent: resending a request whose answer was
                # lost (timeout, dropped connection, 5xx) updates the records it created
                # instead of creating them twice, so transport errors are retried too.
                response, payload, attempts = await self.core.call(
                    "PATCH", self.path, content=self.body(batch))
            except TransientFailure as exc:
                return failed_all(batch, exc.code, str(exc), status=exc.status, transient=True,
                                  attempts=exc.attempts, raw=exc.raw)
        status = response.status_code
        if status == 200:
            return self._results(batch, payload, response.text, attempts)
        code, message = _first_error(payload, response.text)
        if status == 401:
            raise FatalCrmError(f"Salesforce refused the session token (HTTP 401 {code}) for "
                                f"sync {self.spec.name!r}: check SALESFORCE_TOKEN")
        if status == 403 and code == LIMIT_CODE:
            # Salesforce's rate limit: no 429, a 403 REQUEST_LIMIT_EXCEEDED, for the daily
            # allowance ("TotalRequests Limit exceeded.") and for the concurrent long-running
            # requests ("ConcurrentRequests ... Limit exceeded"). No Retry-After says when it
            # passes, so the run stops sending; the rows stay transient for the next run.
            usage = f" (api-usage={self.usage[0]}/{self.usage[1]})" if self.usage else ""
            what = _limit_kind(message)
            self.stopped = self.stopped or (
                f"Salesforce's {what} is spent{usage}: sync {self.spec.name!r} sent nothing "
                f"more; the remaining rows are retried on the next run")
            self.core.stats.limit_stop = self.core.stats.limit_stop or \
                f"Salesforce refused requests: {message} (403 {LIMIT_CODE}, its {what})"
            return failed_all(batch, LIMIT_CODE, f"{message}{usage}: the org's {what} is "
                              "spent; retried on the next run", status=status,
                              transient=True, attempts=attempts)
        if status in (403, 404) or (status == 400 and code in FATAL_400):
            raise FatalCrmError(f"Salesforce cannot upsert {self.spec.object} by "
                                f"{self.spec.matching_key} for sync {self.spec.name!r} "
                                f"(HTTP {status} {code}): {message}")
        if status == 400:
            if len(batch) == 1:
                self._rejected[batch[0].key] = Outcome(
                    batch[0].key, "failed", error_code=code or "HTTP_400", message=message,
                    http_status=status, transient=False, attempts=attempts)
            return None
        return failed_all(batch, code or f"HTTP_{status}", message, status=status,
                          transient=False, attempts=attempts, raw=response.text[:2000])

    def _reject(self, item: Item) -> Outcome:
        return self._rejected.pop(item.key)

    # -- deleting (mirror) -------------------------------------------------------------------
    async def delete(self, crm_ids: list[str]) -> list[Outcome]:
        """Delete records by Salesforce id, 200 per request, allOrNone=false; one Outcome per
        id (key = the id), `deleted` or `failed`. Retries are safe: a record that a first
        attempt deleted (its answer lost) answers ENTITY_IS_DELETED the second time, which
        counts as deleted, so a resent request deletes nothing else."""
        ids = list(dict.fromkeys(crm_ids))
        size = self.max_records  # "A list of up to 200 IDs"
        results = await asyncio.gather(*(self._delete_batch(ids[i:i + size])
                                         for i in range(0, len(ids), size)))
        return [outcome for result in results for outcome in result]

    async def _delete_batch(self, ids: list[str]) -> list[Outcome]:
        def failed(code, message, transient, status=None, attempts=1, raw=None):
            return [Outcome(i, "failed", crm_id=i, error_code=code, message=message,
                            http_status=status, transient=transient, attempts=attempts, raw=raw)
                    for i in ids]

        async with self._gate:
            if self.stopped:
                return failed(RESERVE_CODE, self.stopped, True)
            try:
                response, payload, attempts = await self.core.call(
                    "DELETE",
                    f"/services/data/v{path_segment(self.api_version)}/composite/sobjects",
                    params={"ids": ",".join(ids), "allOrNone": "false"})
            except TransientFailure as exc:
                return failed(exc.code, str(exc), True, exc.status, exc.attempts)
        status = response.status_code
        if status == 200:
            if not isinstance(payload, list) or len(payload) != len(ids):
                return failed("MALFORMED_RESPONSE", f"Salesforce's answer does not list one "
                              f"result per id ({len(ids)} sent)", True, status, attempts,
                              response.text[:2000])
            return [self._deleted(i, result, attempts) for i, result in zip(ids, payload)]
        code, message = _first_error(payload, response.text)
        if status == 401:
            raise FatalCrmError(f"Salesforce refused the session token (HTTP 401 {code}) for "
                                f"sync {self.spec.name!r}: check SALESFORCE_TOKEN")
        if status == 403 and code == LIMIT_CODE:
            what = _limit_kind(message)
            self.stopped = self.stopped or (
                f"Salesforce's {what} is spent: sync {self.spec.name!r} deleted nothing more; "
                f"the remaining records are deleted on the next run")
            return failed(LIMIT_CODE, f"{message}: the org's {what} is spent", True, status,
                          attempts)
        if status in (403, 404):
            raise FatalCrmError(f"Salesforce cannot delete {self.spec.object} records for sync "
                                f"{self.spec.name!r} (HTTP {status} {code}): {message}")
        return failed(code or f"HTTP_{status}", message, False, status, attempts,
                      response.text[:2000])

    def _deleted(self, crm_id: str, result, attempts: int) -> Outcome:
        if isinstance(result, dict) and result.get("success") is True:
            return Outcome(crm_id, "deleted", crm_id=crm_id, http_status=200, attempts=attempts)
        errors = result.get("errors") if isinstance(result, dict) else None
        error = errors[0] if isinstance(errors, list) and errors and \
            isinstance(errors[0], dict) else None
        if isinstance(result, dict) and result.get("success") is False and error:
            code = str(error.get("statusCode") or "FAILED")
            if code == ALREADY_DELETED:  # gone already (e.g. a resent request): that is done
                return Outcome(crm_id, "deleted", crm_id=crm_id, http_status=200,
                               attempts=attempts, message="already deleted")
            return Outcome(crm_id, "failed", crm_id=crm_id, error_code=code,
                           message=str(error.get("message") or ""), http_status=200,
                           transient=False, attempts=attempts)
        return Outcome(crm_id, "failed", crm_id=crm_id, error_code="MALFORMED_RESPONSE",
                       message=f"unexpected result for this id: {str(result)[:200]}",
                       http_status=200, transient=True, attempts=attempts,
                       raw=str(result)[:2000])

    # -- reading the answer ------------------------------------------------------------------
    def _results(self, batch: list[Item], payload, raw: str, attempts: int) -> list[Outcome]:
        if not isinstance(payload, list) or len(payload) != len(batch):
            return failed_all(batch, "MALFORMED_RESPONSE",
                              f"Salesforce's answer does not list one result per record "
                              f"({len(batch)} sent)", status=200, transient=True,
                              attempts=attempts, raw=raw[:2000])
        return [self._outcome(item, result, attempts) for item, result in zip(batch, payload)]

    def _outcome(self, item: Item, result, attempts: int) -> Outcome:
        if isinstance(result, dict) and result.get("success") is True and result.get("id"):
            created = result.get("created")
            if not isinstance(created, bool):  # the docs' partial-failure example omits it
                created = item.key not in self._known_ids
            return Outcome(item.key, "created" if created else "updated", crm_id=result["id"],
                           attempts=attempts)
        errors = result.get("errors") if isinstance(result, dict) else None
        if isinstance(result, dict) and result.get("success") is False and errors and \
                isinstance(errors[0], dict):
            error, message = errors[0], str(errors[0].get("message") or "")
            fields = error.get("fields") or []
            code = error_code(str(error.get("statusCode") or "FAILED"), message)
            return Outcome(item.key, "failed", error_code=code, message=message, http_status=200,
                           transient=code == TARGET_MISSING, attempts=attempts,  # as the runner's
                           column=str(fields[0]) if fields else None)
        return Outcome(item.key, "failed", error_code="MALFORMED_RESPONSE",
                       message=f"unexpected result for this record: {str(result)[:200]}",
                       http_status=200, transient=True, attempts=attempts,
                       raw=str(result)[:2000])


def _limit_kind(message: str) -> str:
    """Which of Salesforce's limits a REQUEST_LIMIT_EXCEEDED names (by its message)."""
    if "concurrent" in message.lower():
        return "concurrent long-running API request limit"
    return "daily API request limit"


def _first_error(payload, text: str) -> tuple[str | None, str]:
    """(errorCode, message) of a whole-request error: `[{"message", "errorCode"}]`."""
    if isinstance(payload, list) and payload and isinstance(payload[0], dict):
        return payload[0].get("errorCode"), str(payload[0].get("message") or "")
    return None, text[:300]


class SalesforceResource(SalesforceOAuth):
    """Salesforce connection: instance URL (`SALESFORCE_BASE_URL`) and a session token
    (`SALESFORCE_TOKEN`, an OAuth access token)."""

    api_version: str = Field(default="62.0", description="REST API version, 46.0 or later")
    daily_allowance_share: float = Field(
        default=0.9, gt=0, le=1,
        description="stop sending once this share of the org's daily API allowance is used")
    # Salesforce documents no per-second limit, only the daily allowance and at most 25
    # concurrent long-running (20 s+) requests per org. 4 requests in flight and 20 a second
    # keep well inside both; one request carries 200 records, so that is 4,000 records/s.
    max_concurrency: int = Field(default=4, ge=1, le=25, description="requests in flight")
    requests_per_window: int = Field(default=20, ge=1, description="client-side rate limit")
    batch_size: int | None = Field(default=200, ge=1, le=200,
                                   description="records per collections request (max 200)")
    bulk_timeout_seconds: float = Field(default=900.0, gt=0, description="longest wait for a "
                                        "Bulk API 2.0 job; then the next run collects it")

    connector_class: ClassVar[type[Connector]] = SalesforceConnector
    token_variable: ClassVar[str] = "SALESFORCE_TOKEN"
    @field_validator("api_version")
    @classmethod
    def _version(cls, value: str) -> str:
        if not re.fullmatch(r"\d{2}\.0", value) or float(value) < MIN_API_VERSION:
            raise ValueError(f"must look like '62.0' and be {MIN_API_VERSION} or later (the "
                             f"collections upsert needs it), got {value!r}")
        return value

    def connector_options(self) -> dict:
        return {"api_version": self.api_version, "bulk_timeout_seconds": self.bulk_timeout_seconds,
                "daily_allowance_share": self.daily_allowance_share}


RESOURCE = SalesforceResource


def _ignores_case(spec: SyncSpec) -> bool:
    # Text external ids match ignoring case unless marked "Unique, case sensitive".
    return not spec.matching_key_case_sensitive


PROFILE = CrmProfile(
    name="salesforce", label="Salesforce", resource=SalesforceResource, kind="salesforce",
    # API names (`Account`, `My_Object__c`, `ns__Field__c`): letters, digits, `_`, first a letter.
    object_pattern=r"[A-Za-z][A-Za-z0-9_]*", field_pattern=r"[A-Za-z][A-Za-z0-9_]*",
    name_rule="a Salesforce API name: letters, digits and _, first a letter (like Account, "
              "My_Object__c, External_Id__c)",
    matching_key_is_field=True,  # the external id field, sent as a field
    matching_ignores_case=_ignores_case,
    # A record id may not be sent as an external id: 15 or 18 alphanumerics (a negative
    # look-ahead, so validation's str_matches check can express "must not look like").
    matching_value_refused=RecordRule(
        "salesforce_record_id_as_external_id", None, "matches",
        rf"^(?!{SALESFORCE_ID_PATTERN[1:-1]}$)", "MALFORMED_ID",
        "{value} looks like a Salesforce record id; the external id field {column} must hold "
        "your own id (Salesforce: \"Only external ids are supported. Don't use record ids.\")"),
    required_fields={"Account": frozenset({"Name"}), "Contact": frozenset({"LastName"}),
                     "Lead": frozenset({"LastName", "Company"})},
    # Salesforce sets no per-second rate, only an allocation over a rolling 24 h (100,000 calls
    # + 1,000 per licence on Enterprise, REFERENCE.md §4): 10 calls/s is 864,000 calls a day,
    # the allocation of an Enterprise org with ~760 licences.
    allowance=(200 * 10, "200 records per call x 10 calls/s (assumed; see BENCHMARKS.md)"),
    # Pulled schemas: a restricted picklist refuses other values with this code; the upsert
    # matches by an external id field (crm_sync/schema_files.py).
    option_error_code="INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
    matching_key_needs=("external_id", "an external id field"),
    # Salesforce documents a create-only sObject Collections POST (composite/sobjects,
    # resources-composite-sobjects-collections-create); crm_sync does not call it.
    append_unsupported="crm_sync writes Salesforce only through the sObject Collections upsert "
                       "by external id, which updates a record that already has the id instead "
                       "of creating one; the create-only sObject Collections POST is not used "
                       "by crm_sync (no write-ahead log of its creates), so each row could not "
                       "be promised to create one record once. Use mode 'create_only'",
)
