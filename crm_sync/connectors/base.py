"""The connector contract every CRM module implements, and the Dagster resource base class."""

from __future__ import annotations

import asyncio
import os
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import ClassVar
from urllib.parse import urlsplit

import dagster as dg
import httpx
from pydantic import Field

from crm_sync.connectors.core import HttpCore, HttpSettings
from crm_sync.connectors.oauth import OAuthSettings
from crm_sync.connectors.fields import CrmObjectSchema
from crm_sync.connectors.model import Item, Outcome, RowLinks, Stats, failed_all
from crm_sync.connectors.wire import make_batches, serialize
from crm_sync.errors import (AllowanceReserveReached, BadBaseUrl, MissingToken, SchemaUnavailable,
                             TransientFailure)
from crm_sync.spec import SyncSpec

SANDBOX_URL = "http://127.0.0.1:8765"


class Connector(ABC):
    """Payload building, limits and result parsing of one CRM's bulk upsert."""

    crm: ClassVar[str]
    max_records: ClassVar[int]
    max_bytes: ClassVar[int | None] = None
    prefix: ClassVar[bytes] = b"["
    suffix: ClassVar[bytes] = b"]"

    def __init__(self, spec: SyncSpec, core: HttpCore, batch_size: int | None = None):
        self.spec, self.core = spec, core
        self.batch_size = min(batch_size or spec.batch_size or self.max_records, self.max_records)

    # -- what each CRM module provides -------------------------------------------------------
    @abstractmethod
    def build_record(self, key: str, fields: dict, crm_id: str | None) -> dict:
        """The CRM payload of one record, from its mapped fields and its known CRM id."""

    @abstractmethod
    async def send_batch(self, batch: list[Item]) -> list[Outcome]:
        """Send one batch; return exactly one Outcome per item."""

    def on_response(self, response: httpx.Response) -> float | None:
        """Adapt to the server's rate-limit headers; return seconds to pause, if any."""
        return None

    async def describe(self) -> CrmObjectSchema:
        """The field schema of the sync's object, as the CRM describes it (its schema endpoint).
        A CRM that documents no schema endpoint raises SchemaUnavailable."""
        raise SchemaUnavailable(f"{self.crm} documents no schema endpoint for objects; list "
                                f"the fields in the sync spec instead", self.crm)

    def bind_store(self, store) -> None:
        """The sync store of the run (the runner, load/runner.py, calls this). Connectors whose creates are not
        idempotent keep their write-ahead log in it (crm_sync/state/writeahead.py); others ignore it."""

    def chunk_rows(self, total: int, chunk_rows: int) -> int:
        """Rows per chunk of a run of `total` rows (the runner's default: `chunk_rows`).
        Salesforce's Bulk API path takes a large partition as one chunk: one ingest job."""
        return chunk_rows

    def with_links(self, record: dict, links: RowLinks) -> dict:
        """The record with its associations in the upsert body (Brevo `associations`,
        Salesforce's parent by external id). CRMs that link in separate calls after the upsert
        (HubSpot's associations API, `link_records`) keep the record as it is."""
        return record

    async def link_records(self, items: Sequence[Item],
                           outcomes: list[Outcome]) -> list[Outcome]:
        """After the upsert: create and remove the associations of the records that
        succeeded, in a CRM that links in separate calls; a record whose links fail gets a
        failed outcome instead. The default (links in the upsert body): outcomes unchanged."""
        return outcomes

    # -- shared ------------------------------------------------------------------------------
    def item(self, key: str, fields: dict, crm_id: str | None,
             links: RowLinks | None = None) -> Item:
        record = self.build_record(key, fields, crm_id)
        if links:
            record = self.with_links(record, links)
        return Item(key=key, record=record, body=serialize(record), links=links)

    def body(self, batch: Sequence[Item]) -> bytes:
        return self.prefix + b",".join(i.body for i in batch) + self.suffix

    async def send(self, rows: Sequence[tuple[str, dict, str | None]]) -> list[Outcome]:
        """Upsert (source_key, mapped fields, known CRM id) rows; one Outcome per row."""
        return await self.upsert([self.item(key, fields, crm_id) for key, fields, crm_id in rows])

    async def upsert(self, items: Sequence[Item]) -> list[Outcome]:
        batches, too_large = make_batches(items, self.batch_size, self.max_bytes,
                                          len(self.prefix) + len(self.suffix))
        outcomes = [
            Outcome(key=i.key, status="failed", error_code="RECORD_TOO_LARGE",
                    message=f"the record takes {len(i.body)} bytes; {self.crm} accepts at most "
                            f"{self.max_bytes} bytes per request", transient=False)
            for i in too_large
        ]
        for result in await asyncio.gather(*(self._guarded(b) for b in batches)):
            outcomes.extend(result)
        if any(i.links for i in items):
            outcomes = await self.link_records(items, outcomes)
        self.core.stats.count(outcomes)  # the CRM stage's tally (a failed run names its cause)
        return outcomes

    async def _guarded(self, batch: list[Item]) -> list[Outcome]:
        self.core.stats.batches += 1
        try:
            outcomes = await self.send_batch(batch)
        except TransientFailure as exc:
            return failed_all(batch, exc.code, str(exc), status=exc.status, transient=True,
                              attempts=exc.attempts, raw=exc.raw)
        except AllowanceReserveReached as exc:
            return failed_all(batch, "ALLOWANCE_RESERVE_REACHED", str(exc), transient=True)
        if sorted(o.key for o in outcomes) != sorted(i.key for i in batch):
            # The CRM's answer does not account for this batch record by record: count none of
            # it as synced; the next run sends it again.
            return failed_all(batch, "MALFORMED_RESPONSE",
                              "the CRM's answer did not account for every record of the batch",
                              transient=True)
        return outcomes

    async def split_on_rejection(
        self, batch: list[Item],
        send: Callable[[list[Item]], Awaitable[list[Outcome] | None]],
        reject: Callable[[Item], Awaitable[Outcome] | Outcome],
    ) -> list[Outcome]:
        """Send a batch; when the CRM rejects it as a whole (send returns None), bisect it so
        that good records still go through and only the bad one fails."""
        result = await send(batch)
        if result is not None:
            return result
        if len(batch) == 1:
            outcome = reject(batch[0])
            return [await outcome if asyncio.iscoroutine(outcome) else outcome]
        self.core.stats.splits += 1
        middle = len(batch) // 2
        left = await self.split_on_rejection(batch[:middle], send, reject)
        right = await self.split_on_rejection(batch[middle:], send, reject)
        return left + right


class CrmResource(dg.ConfigurableResource):
    """Connection settings of one CRM. Base URL defaults to the local sandbox; the token comes
    from the environment (`dg.EnvVar`)."""

    base_url: str = Field(default=SANDBOX_URL, description="CRM API base URL")
    token: str = Field(default="", description="API token (set with dg.EnvVar; never logged)",
                       repr=False)
    token_env: str | None = Field(default=None, description="the environment variable the "
                                  "token comes from (named when it is missing)")
    max_concurrency: int = Field(default=4, ge=1, description="requests in flight at once")
    requests_per_window: int = Field(default=10, ge=1, description="client-side rate limit")
    window_seconds: float = Field(default=1.0, gt=0, description="rate limit window")
    timeout_seconds: float = Field(default=30.0, gt=0)
    max_attempts: int = Field(default=5, ge=1, description="tries per request (429/5xx/timeouts)")
    max_backoff_seconds: float = Field(default=30.0, gt=0)
    max_retry_after_seconds: float = Field(
        default=60.0, ge=0, description="longest wait a 429's Retry-After may impose; a longer "
        "one stops the run's sending (its rows stay transient, RATE_LIMITED, for the next run)")
    batch_size: int | None = Field(default=None, ge=1, description="records per request")
    # OAuth 2.0 instead of a fixed token (connectors/oauth.py): set with dg.EnvVar, never logged.
    client_id: str = Field(default="", description="OAuth client id (consumer key)", repr=False)
    client_secret: str = Field(default="", description="OAuth client secret", repr=False)
    refresh_token: str = Field(default="", description="OAuth refresh token", repr=False)
    token_url: str = Field(default="", description="OAuth token endpoint (default: the CRM's "
                           "endpoint under base_url)")

    connector_class: ClassVar[type[Connector]]
    # The environment variable the CRM's token is read from (crm_sync.connectors.TOKEN_ENV).
    token_variable: ClassVar[str]
    # The OAuth fields of this CRM -> the environment variables they are read from.
    oauth_variables: ClassVar[dict[str, str]] = {}

    def __repr__(self) -> str:  # never show the token
        return f"{type(self).__name__}(base_url={self.base_url!r}, token='***')"

    __str__ = __repr__

    def auth_headers(self) -> dict[str, str]:
        if self.oauth_settings() is not None:
            return {}  # the core sends the current access token (HttpSettings.oauth)
        return {"Authorization": f"Bearer {self.token}"}

    def oauth_settings(self) -> OAuthSettings | None:
        """How this resource gets expiring access tokens, or None for the fixed `token`."""
        return None

    @classmethod
    def oauth_from_env(cls) -> dict:
        """dg.EnvVar for each of this CRM's OAuth variables set in the environment."""
        return {name: dg.EnvVar(var) for name, var in cls.oauth_variables.items()
                if os.environ.get(var)}

    def _variables(self, *names: str) -> str:
        return " and ".join(self.oauth_variables.get(n, n) for n in names)

    def http_settings(self) -> HttpSettings:
        return HttpSettings(
            base_url=self.base_url.rstrip("/"),
            headers={**self.auth_headers(), "user-agent": "crm_sync/0.1"},
            max_concurrency=self.max_concurrency,
            requests_per_window=self.requests_per_window,
            window_seconds=self.window_seconds,
            timeout_seconds=self.timeout_seconds,
            max_attempts=self.max_attempts,
            max_backoff_seconds=self.max_backoff_seconds,
            max_retry_after_seconds=self.max_retry_after_seconds,
            secrets=(self.token, *(oauth.secrets if (oauth := self.oauth_settings()) else ())),
            label=self.label,
            oauth=self.oauth_settings(),
        )

    @property
    def label(self) -> str:
        from crm_sync.connectors import crm_label  # late: the package imports this module

        return crm_label(self.connector_class.crm)

    def connector_options(self) -> dict:
        return {}

    @asynccontextmanager
    async def open(self, spec: SyncSpec) -> AsyncIterator[Connector]:
        """A connector for one sync run: one HTTP client, limiter and set of counters."""
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise BadBaseUrl(f"{self.label}'s base URL {self.base_url!r} is not an http:// or "
                             f"https:// URL", self.base_url)
        if not self.token and self.oauth_settings() is None:
            where = f"the environment variable {self.token_env} is not set" if self.token_env \
                else "the resource has no token"
            raise MissingToken(f"no {self.connector_class.crm} API token: {where}",
                               self.token_env)
        connector_holder: list[Connector] = []

        def on_response(response):
            return connector_holder[0].on_response(response) if connector_holder else None

        async with HttpCore(self.http_settings(), on_response=on_response) as core:
            connector = self.connector_class(spec, core, self.batch_size,
                                             **self.connector_options())
            connector_holder.append(connector)
            yield connector

    async def run_async(self, spec: SyncSpec,
                        rows: Sequence[tuple[str, dict, str | None]]) -> tuple[list[Outcome], Stats]:
        """Upsert (source_key, mapped fields, known CRM id) rows; one Outcome per row."""
        async with self.open(spec) as connector:
            outcomes = await connector.send(rows)
            return outcomes, connector.core.stats

    def run(self, spec: SyncSpec, rows) -> tuple[list[Outcome], Stats]:
        return asyncio.run(self.run_async(spec, rows))
