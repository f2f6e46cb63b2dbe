"""HubSpot: `POST /crm/v3/objects/{objectType}/batch/upsert` with `{"inputs": [...]}`.

Each input names its record by a unique property (`idProperty` = the sync's matching_key, e.g.
`email` for contacts) and that property's value (`id`). HubSpot updates the record holding the
value or creates one, so a rerun updates the same records without crm_sync keeping HubSpot ids,
and a request may be resent after a dropped connection without creating anything twice.

Every input carries `objectWriteTraceId` = the row's source key. With it HubSpot answers a batch
with some bad inputs by 207 Multi-Status: the good ones are written, the bad ones come back in
`errors` with the trace id in their context. Results are matched by trace id, never by position
(HubSpot does not answer in input order). A whole-batch 400 (duplicate ids, or an answer that
does not say which input was bad) is narrowed to the inputs it names by property and value
(HubSpot's validation results carry `name` and `propertyValue`): those fail with HubSpot's code
and message, the others are sent again; an answer that names no input is bisected, so that
only the bad record fails.

Limits: 100 inputs per request; 100 requests per rolling 10 s on Free/Starter (190 on
Professional/Enterprise, 250 with the API limit increase pack), read back from the
`X-HubSpot-RateLimit-*` headers; a daily allowance (250,000 on Free/Starter).

Relationships (spec `associations:`) are linked after the upsert with the associations API v4,
for the records it wrote (hubspot_associations.py, `link_records`); each round of `upsert`
links its own rows, so every row is linked once.

Mirror syncs delete with `POST /crm/v3/objects/{objectType}/batch/archive` (`{"inputs":
[{"id": <HubSpot record id>}]}`, at most 100, 204 No Content), by the ids kept in the state.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import Sequence
from typing import ClassVar

import httpx
from pydantic import Field

from crm_sync.connectors.base import Connector, CrmResource
from crm_sync.connectors.fields import CrmObjectSchema
from crm_sync.connectors.hubspot_associations import AssociationLinks
from crm_sync.connectors.hubspot_results import BatchAnswer, named_values, normalize
from crm_sync.connectors.hubspot_schema import schema_from_properties
from crm_sync.connectors.model import Item, Outcome, failed_all
from crm_sync.connectors.oauth import OAuthSettings, variables_named
from crm_sync.connectors.wire import path_segment
from crm_sync.connectors.profile import CrmProfile
from crm_sync.errors import AllowanceReserveReached, FatalCrmError, TransientFailure
from crm_sync.spec import SyncSpec

HUBSPOT_MAX_INPUTS = 100  # inputs per batch request

LOCKED_PAUSE_SECONDS = 2.0  # documented: a 423 lock lasts 2 seconds
LOCKED_TRIES = 3
# Whole-batch answers that bisecting can help: one input (or the batch's size) caused them.
_SPLITTABLE_STATUS = frozenset({400, 409, 413})
# 400 messages that no smaller batch would change: the sync itself is misconfigured.
_FATAL_400 = ("Unable to infer object type from", "Unable to perform update/upsert by non-unique")


def property_value(value) -> str:
    """HubSpot property values are strings: numbers as their text, booleans as true/false."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return str(value)


class HubSpotConnector(AssociationLinks, BatchAnswer, Connector):
    crm = "hubspot"
    max_records = HUBSPOT_MAX_INPUTS
    prefix = b'{"inputs":['
    suffix = b"]}"

    def __init__(self, spec: SyncSpec, core, batch_size: int | None = None):
        super().__init__(spec, core, batch_size)
        self._rejections: dict[str, Outcome] = {}  # source key -> why its lone input was refused
        self._daily_spent = False

    @property
    def path(self) -> str:
        return f"/crm/v3/objects/{path_segment(self.spec.object)}/batch/upsert"

    def build_record(self, key: str, fields: dict, crm_id: str | None) -> dict:
        # crm_id is not needed: HubSpot finds the record by the unique property's value.
        properties = {name: property_value(v) for name, v in fields.items() if v is not None}
        return {"id": properties.get(self.spec.matching_key, ""),
                "idProperty": self.spec.matching_key,
                "properties": properties,
                "objectWriteTraceId": key}

    def identity(self, item: Item) -> tuple[str, str]:
        """Which HubSpot record an input addresses. Emails are matched case-insensitively
        (HubSpot stores them lowercased)."""
        prop = item.record["idProperty"]
        return prop, normalize(prop, item.record["id"])

    # -- sending ---------------------------------------------------------------------------------
    async def upsert(self, items: Sequence[Item]) -> list[Outcome]:
        """Inputs without a matching-key value fail here; inputs addressing the same record go
        out in successive rounds (HubSpot rejects a batch holding one id twice), in source
        order, so the last row wins as it would have had they been sent one by one."""
        outcomes = [
            Outcome(i.key, "failed", error_code="MISSING_MATCHING_KEY", transient=False,
                    column=self._source_column(self.spec.matching_key),
                    message=f"no value for {self.spec.matching_key!r}, the unique property "
                            f"HubSpot matches {self.spec.object} on")
            for i in items if not i.record["id"]]
        for round_items in self._rounds([i for i in items if i.record["id"]]):
            outcomes.extend(await super().upsert(round_items))
        return outcomes

    def _rounds(self, items: list[Item]) -> list[list[Item]]:
        identities = [self.identity(item) for item in items]
        if len(set(identities)) == len(identities):
            return [items] if items else []  # the usual case: every input its own record
        rounds: list[list[Item]] = []
        seen: dict[tuple[str, str], int] = defaultdict(int)
        for item, identity in zip(items, identities):
            n = seen[identity]
            seen[identity] += 1
            if n == len(rounds):
                rounds.append([])
            rounds[n].append(item)
        return rounds

    async def send_batch(self, batch: list[Item]) -> list[Outcome]:
        return await self.split_on_rejection(batch, self._send, self._rejected)

    async def _send(self, batch: list[Item]) -> list[Outcome] | None:
        """One request; the outcomes, or None when HubSpot refused the batch as a whole."""
        if self._daily_spent:
            return failed_all(batch, "ALLOWANCE_RESERVE_REACHED", "HubSpot's daily API "
                              "allowance is spent; the rows go out on the next run",
                              transient=True)
        try:
            response, payload, attempts = await self._post(batch)
        except TransientFailure as exc:  # only this part of a bisected batch failed
            return failed_all(batch, exc.code, str(exc), status=exc.status, transient=True,
                              attempts=exc.attempts, raw=exc.raw)
        except AllowanceReserveReached as exc:
            return failed_all(batch, "ALLOWANCE_RESERVE_REACHED", str(exc), transient=True)
        status = response.status_code
        body = payload if isinstance(payload, dict) else {}
        message = str(body.get("message") or response.text[:300])
        self._raise_if_fatal(status, message)
        if status in _SPLITTABLE_STATUS:
            if len(batch) == 1:
                self._rejections[batch[0].key] = self._failure(batch[0].key, body, message,
                                                               status, attempts)
                return None
            culprits = self._culprits(batch, body)
            if not culprits:
                return None  # split_on_rejection bisects
            self.core.stats.splits += 1  # the batch is split: the named inputs, and the rest
            failed = [self._failure(i.key, body, message, status, attempts) for i in culprits]
            named = {i.key for i in culprits}
            rest = [i for i in batch if i.key not in named]
            return failed + await self.split_on_rejection(rest, self._send, self._rejected)
        if status == 423:
            return failed_all(batch, "LOCKED", message, status=status, transient=True,
                              attempts=attempts)
        if status == 477:  # account migrating between data centres; Retry-After is ~hours
            return failed_all(batch, "MIGRATION_IN_PROGRESS", message, status=status,
                              transient=True, attempts=attempts)
        if not 200 <= status < 300:
            return failed_all(batch, f"HTTP_{status}", message, status=status, transient=False,
                              attempts=attempts)
        return self._outcomes(batch, payload, response, attempts)

    def _culprits(self, batch: list[Item], body: dict) -> list[Item]:
        """The inputs a whole-batch refusal names by property and value; [] when it names none
        of them, or all of them (then bisecting says more)."""
        pairs = [(name, normalize(name, value)) for name, value in named_values(body)]
        culprits = [item for item in batch if any(
            isinstance(item.record["properties"].get(name), str)
            and normalize(name, item.record["properties"][name]) == value
            for name, value in pairs)]
        return culprits if len(culprits) < len(batch) else []

    async def _post(self, batch: list[Item]) -> tuple[httpx.Response, object, int]:
        # Upserts by a unique property are idempotent: resending after a dropped connection
        # updates the record the first attempt may have written, so transport errors retry.
        total = 0
        for _ in range(LOCKED_TRIES):
            response, payload, attempts = await self.core.call("POST", self.path,
                                                               content=self.body(batch))
            total += attempts
            if response.status_code != 423:
                break
            self.core.pause(LOCKED_PAUSE_SECONDS)
        return response, payload, total

    def _rejected(self, item: Item) -> Outcome:
        return self._rejections.pop(item.key, None) or Outcome(
            item.key, "failed", error_code="REJECTED", transient=False,
            message="HubSpot refused this record")

    def _raise_if_fatal(self, status: int, message: str) -> None:
        sync = self.spec.name
        if status == 401:
            raise FatalCrmError(f"HubSpot refused the token (HTTP 401: {message}): check "
                                f"HUBSPOT_TOKEN for sync {sync!r}")
        if status == 403:
            raise FatalCrmError(f"HubSpot denied access (HTTP 403: {message}): the token in "
                                f"HUBSPOT_TOKEN lacks a scope for {self.spec.object} (sync "
                                f"{sync!r})")
        if status == 404:
            raise FatalCrmError(f"HubSpot has no endpoint {self.path} (HTTP 404, sync {sync!r}):"
                                f" check HUBSPOT_BASE_URL and the object type")
        if status == 400 and message.startswith(_FATAL_400):
            raise FatalCrmError(
                f"HubSpot cannot upsert {self.spec.object!r} by {self.spec.matching_key!r} "
                f"(sync {sync!r}): {message}. The object must exist and matching_key must be "
                f"a property with unique values (email for contacts, or a custom property "
                f"created with hasUniqueValue)")

    # -- schema ----------------------------------------------------------------------------------
    async def describe(self) -> CrmObjectSchema:
        """The object's properties: `GET /crm/v3/properties/{objectType}` (hubspot_schema.py)."""
        path = f"/crm/v3/properties/{path_segment(self.spec.object)}"
        response, payload, _ = await self.core.call("GET", path)
        status = response.status_code
        if status != 200:
            body = payload if isinstance(payload, dict) else {}
            message = str(body.get("message") or response.text[:300])
            raise FatalCrmError(f"HubSpot did not describe {self.spec.object!r} (HTTP {status} "
                                f"on GET {path}, sync {self.spec.name!r}): {message}")
        try:
            return schema_from_properties(self.spec.object, payload)
        except ValueError as exc:
            raise FatalCrmError(f"{exc} (GET {path}, sync {self.spec.name!r})") from None

    # -- deleting (mirror) -----------------------------------------------------------------------
    async def delete(self, crm_ids: list[str]) -> list[Outcome]:
        """Archive records by HubSpot id, 100 per request; one Outcome per id (key = the id),
        `deleted` or `failed`. Retries are safe: HubSpot answers 204 for an id that is already
        archived or was never there, so a request resent after a lost answer (the core retries
        transport errors, 429 and 5xx) changes nothing more."""
        ids = list(dict.fromkeys(crm_ids))
        batches = [ids[i:i + HUBSPOT_MAX_INPUTS] for i in range(0, len(ids), HUBSPOT_MAX_INPUTS)]
        results = await asyncio.gather(*(self._archive(batch) for batch in batches))
        return [outcome for result in results for outcome in result]

    async def _archive(self, ids: list[str]) -> list[Outcome]:
        def failed(code: str, message: str, transient: bool, status=None, attempts=1):
            return [Outcome(i, "failed", crm_id=i, error_code=code, message=message,
                            http_status=status, transient=transient, attempts=attempts)
                    for i in ids]

        if self._daily_spent:
            return failed("ALLOWANCE_RESERVE_REACHED", "HubSpot's daily API allowance is spent; "
                          "the records are deleted on the next run", True)
        path = f"/crm/v3/objects/{path_segment(self.spec.object)}/batch/archive"
        content = json.dumps({"inputs": [{"id": i} for i in ids]}).encode()
        try:
            response, payload, attempts = await self.core.call("POST", path, content=content)
        except TransientFailure as exc:
            return failed(exc.code, str(exc), True, exc.status, exc.attempts)
        except AllowanceReserveReached as exc:
            return failed("ALLOWANCE_RESERVE_REACHED", str(exc), True)
        status = response.status_code
        if 200 <= status < 300:  # documented: 204 No Content
            return [Outcome(i, "deleted", crm_id=i, http_status=status, attempts=attempts)
                    for i in ids]
        body = payload if isinstance(payload, dict) else {}
        message = str(body.get("message") or response.text[:300])
        sync = self.spec.name
        if status in (401, 403):
            raise FatalCrmError(f"HubSpot refused to archive {self.spec.object} records (HTTP "
                                f"{status}: {message}): check HUBSPOT_TOKEN and its scopes for "
                                f"sync {sync!r}")
        if status == 404 or (status == 400 and message.startswith(_FATAL_400[0])):
            raise FatalCrmError(f"HubSpot cannot archive {self.spec.object!r} records (HTTP "
                                f"{status}, sync {sync!r}): {message}")
        # 423 (locked) and 477 (account migrating) pass: the next run deletes these records.
        code = {423: "LOCKED", 477: "MIGRATION_IN_PROGRESS"}.get(status) or \
            str(body.get("category") or f"HTTP_{status}")
        return failed(code, message, status in (423, 477), status, attempts)

    # -- rate limits -----------------------------------------------------------------------------
    def on_response(self, response: httpx.Response) -> float | None:
        """Read HubSpot's limit headers. A spent daily allowance stops the run's sending; a
        spent ten-secondly window pauses all requests for about one slot."""
        headers = response.headers
        if _int(headers.get("x-hubspot-ratelimit-daily-remaining")) == 0:
            self._daily_spent = True  # this answer still counts; the next batches wait
        if response.status_code == 429 and _policy(response) == "DAILY":
            self._daily_spent = True
            raise AllowanceReserveReached(
                f"HubSpot's daily API allowance is spent (429, policy DAILY; sync "
                f"{self.spec.name!r}); it resets at midnight in the account's time zone")
        remaining = _int(headers.get("x-hubspot-ratelimit-remaining"))
        interval_ms = _int(headers.get("x-hubspot-ratelimit-interval-milliseconds"))
        if remaining is not None and remaining <= 0 and interval_ms:
            allowance = _int(headers.get("x-hubspot-ratelimit-max")) or 1
            return interval_ms / 1000 / max(allowance, 1)
        return None


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _policy(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("policyName") if isinstance(body, dict) else None


class HubSpotResource(CrmResource):
    """HubSpot connection: base URL and private-app token (`HUBSPOT_TOKEN`).

    The client-side limit defaults to HubSpot's TEN_SECONDLY_ROLLING allowance of Free and
    Starter accounts (and of public OAuth apps): 100 requests per 10 s. Professional and
    Enterprise accounts allow 190 per 10 s (250 with the API limit increase pack): set
    requests_per_window accordingly. The allowance is per account, shared by every app and run
    using it, so parallel runs should share it (Dagster pool `crm_hubspot`).
    """

    requests_per_window: int = Field(default=100, ge=1,
                                     description="requests per rolling window (HubSpot: 100 "
                                                 "per 10 s on Free/Starter, 190 on Pro/Ent.)")
    window_seconds: float = Field(default=10.0, gt=0, description="rolling window, seconds")
    batch_size: int | None = Field(default=HUBSPOT_MAX_INPUTS, ge=1, le=HUBSPOT_MAX_INPUTS,
                                   description="inputs per batch/upsert request (max 100)")
    connector_class: ClassVar[type[Connector]] = HubSpotConnector
    token_variable: ClassVar[str] = "HUBSPOT_TOKEN"
    oauth_variables: ClassVar[dict[str, str]] = variables_named(  # HUBSPOT_CLIENT_ID, ...
        "HUBSPOT", "client_id", "client_secret", "refresh_token", "token_url")

    def oauth_settings(self) -> OAuthSettings | None:
        """A public app's refresh token (with its client id and secret) instead of the
        private-app `token`: access tokens expire after `expires_in` (30 minutes)."""
        if not self.refresh_token:
            return None
        return OAuthSettings(
            label="HubSpot", grant="refresh_token", client_id=self.client_id,
            token_url=self.token_url or f"{self.base_url.rstrip('/')}/oauth/v1/token",
            client_secret=self.client_secret, refresh_token=self.refresh_token,
            check=self._variables("client_id", "client_secret", "refresh_token"))


RESOURCE = HubSpotResource


def _ignores_case(spec: SyncSpec) -> bool:
    return spec.matching_key == "email"  # HubSpot stores email addresses lowercased


PROFILE = CrmProfile(
    name="hubspot", label="HubSpot", resource=HubSpotResource, kind="hubspot",
    # An object's name (`contacts`, `p_cars`: letters, digits, `_`, first a letter) or its
    # objectTypeId (`0-1`, `2-3508482`); property internal names alike.
    object_pattern=r"[A-Za-z][A-Za-z0-9_]*|[0-9]+-[0-9]+", field_pattern=r"[A-Za-z][A-Za-z0-9_]*",
    name_rule="a HubSpot name: letters, digits and _, first a letter (or an objectTypeId like "
              "2-3508482)",
    matching_key_is_field=True,  # the idProperty, sent as a property
    matching_ignores_case=_ignores_case,
    allowance=(100 * 190 / 10, "190 requests / 10 s (Professional/Enterprise) x 100 inputs"),
    # idProperty: "a property with hasUniqueValue=true, or email for contacts"
    # (../shared/crm-docs/REFERENCE.md, HubSpot identifier rules; hubspot-api-nodejs#548).
    always_matchable=frozenset({("contacts", "email")}),
    # HubSpot documents a create-only batch (POST /crm/v3/objects/{objectType}/batch/create,
    # developers.hubspot.com/docs/api/crm/contacts); crm_sync does not call it.
    append_unsupported="crm_sync writes HubSpot only through batch/upsert by the matching key, "
                       "which updates a record that already has the key instead of creating "
                       "one; HubSpot's batch/create is not used by crm_sync (no write-ahead log "
                       "of its creates), so each row could not be promised to create one record "
                       "once. Use mode 'create_only'",
    # associations v4: the type of each link (associationTypeId, associationCategory)
    association_options=("type_id", "category"),
)
