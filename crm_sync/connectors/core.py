"""The shared HTTP core of every CRM connector: bounded concurrency, client-side rate limiting,
retries (honouring Retry-After), the redaction of credentials, and the request counters.
(What the connectors return: connectors/model.py; request bodies and batching:
connectors/wire.py.)

Three kinds of failure, as in singer-sdk (the exceptions and their kinds: crm_sync/errors.py):
- fatal (`FatalCrmError`): the whole sync cannot work (bad token, unknown object type). The run
  fails with one readable message; nothing is marked as synced.
- retriable (429, 5xx, timeouts, dropped connections): retried here with exponential backoff and
  jitter, honouring Retry-After. If the retries run out, the batch's records end `failed` with
  `transient=True` (`TransientFailure`), so the next run sends them again.
- one bad record: the CRM's per-record error; that record ends `failed`, permanent.

Two answers are not retried and leave their rows transient: a 405/501 (the server at the base
URL is not the CRM's API; no record is at fault), and a 429 whose Retry-After is longer than
`max_retry_after_seconds`, which also stops the run's sending (`RATE_LIMITED`, naming the time
the CRM named): waiting an hour in silence helps no one, the next run sends the rows.

Every answer is redacted here, once, before a connector sees it: a gateway that repeats the
request's credentials in its body never gets them into a message, the quarantine, the run's
metadata or its log.
"""

from __future__ import annotations

import asyncio
import functools
import os
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime

import httpx
import dagster as dg
from aiolimiter import AsyncLimiter
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt
from tenacity import wait_exponential_jitter

from crm_sync.errors import (  # re-exported (__all__): their old home
    AllowanceReserveReached, BadBaseUrl, CrmUnreachable, FatalCrmError, MissingToken,
    TransientFailure,
)
from crm_sync.connectors.model import RateLimitStop, Stats
from crm_sync.connectors.oauth import OAuthSettings, TokenProvider
from crm_sync.connectors.wire import parse_json
from crm_sync.state.masking import redact_forms, secret_forms

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
# "This server does not take this method here": the base URL is not the CRM's API. No record is
# at fault: the request is not retried, its records fail transient (sent again next run).
NOT_THE_API_STATUS = frozenset({405, 501})


def __getattr__(name: str):
    if name == "CRM_LABELS":  # old name: each CRM's label, now in its profile
        from crm_sync.connectors import PROFILES  # late: the package imports this module

        return {crm: profile.label for crm, profile in PROFILES.items()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# Messages reach the Dagster event log (get_dagster_logger) when a run is under way.
log = dg.get_dagster_logger("crm_sync")


class _GiveUp(Exception):
    """A failure after which the request must not be resent (it may have been applied, or the
    answer says resending cannot help)."""

    def __init__(self, message: str, code: str, status: int | None = None):
        super().__init__(message)
        self.code, self.status = code, status


def _transport_failure(message: str, code: str, retry: bool) -> Exception:
    return _Retryable(message, None, code) if retry else _GiveUp(message, code)


class _Retryable(Exception):
    def __init__(self, message: str, status: int | None, code: str,
                 retry_after: float | None = None, raw: str | None = None):
        super().__init__(message)
        self.status, self.code, self.retry_after = status, code, retry_after
        self.raw = raw


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: either delta-seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


@dataclass
class HttpSettings:
    base_url: str
    headers: dict[str, str]
    max_concurrency: int = 4
    requests_per_window: int = 10
    window_seconds: float = 1.0
    timeout_seconds: float = 30.0
    max_attempts: int = 5
    max_backoff_seconds: float = 30.0
    max_retry_after_seconds: float = 60.0  # a longer Retry-After stops the run's sending
    secrets: tuple[str, ...] = field(default=())  # strings never to repeat in messages
    label: str = "the CRM"  # the CRM's name in messages ("HubSpot")
    # Where a 429 without Retry-After names its wait, in seconds (Brevo: x-sib-ratelimit-reset).
    rate_limit_reset_header: str | None = None
    # Access tokens from an OAuth token endpoint (connectors/oauth.py) instead of a fixed token
    # in `headers`: sent as `Authorization: Bearer`, fetched again before they expire and once
    # on a 401, after which the refused request is sent again.
    oauth: OAuthSettings | None = None


@functools.lru_cache(maxsize=4)
def _tls_context(cert_file: str | None, cert_dir: str | None) -> ssl.SSLContext:
    """httpx's default certificate verification (certifi, or $SSL_CERT_FILE / $SSL_CERT_DIR),
    built once per process: building it parses the whole CA bundle (~0.1 s), and every sync
    run opens a client."""
    return httpx.create_ssl_context()


class HttpCore:
    """An httpx AsyncClient with bounded concurrency, a client-side rate limit that adapts to
    what the server says, retries, and counters. One per sync run."""

    def __init__(self, settings: HttpSettings,
                 on_response: Callable[[httpx.Response], float | None] | None = None):
        self.settings = settings
        self.stats = Stats()
        self.reached = False  # did any request get an HTTP answer (whatever its status)?
        self._on_response = on_response
        self._client = httpx.AsyncClient(
            base_url=settings.base_url,
            headers=settings.headers,
            verify=_tls_context(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR")),
            timeout=settings.timeout_seconds,
            limits=httpx.Limits(max_connections=settings.max_concurrency,
                                max_keepalive_connections=settings.max_concurrency),
        )
        self._semaphore = asyncio.Semaphore(settings.max_concurrency)
        # A leaky bucket of capacity 1 spaces requests evenly: never more than the allowance
        # in any window, which a rolling-window server (HubSpot) needs. 1% margin for jitter.
        spacing = settings.window_seconds * 1.01 / max(settings.requests_per_window, 1)
        self._limiter = AsyncLimiter(1, spacing)
        self._resume_at = 0.0  # monotonic time before which nothing is sent (server said wait)
        self._secrets = secret_forms(settings.secrets, MIN_SECRET_LENGTH)
        self.tokens = None if settings.oauth is None else TokenProvider(
            settings.oauth, timeout=settings.timeout_seconds,
            verify=_tls_context(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR")),
            on_token=self._learn_secret, redact=self.redact)

    def _learn_secret(self, secret: str) -> None:
        """Redact `secret` (a newly issued access token) like the credentials given."""
        forms = secret_forms((secret,), MIN_SECRET_LENGTH)
        self._secrets = [*self._secrets, *(f for f in forms if f not in self._secrets)]

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self._client.aclose()

    def pause(self, seconds: float) -> None:
        now = time.monotonic()
        # A new wait, or one that outlasts the wait under way by more than half a second (a
        # HubSpot 429 carries X-HubSpot-RateLimit-Remaining: 0, a short pause, before its
        # Retry-After): not the same wait again from requests that were in flight together.
        if seconds >= 1 and self._resume_at < now + seconds - 0.5:
            log.info(f"waiting {seconds:.0f} s as {self.settings.label} asked")
        self._resume_at = max(self._resume_at, now + seconds)

    def redact(self, text: str) -> str:
        return redact_forms(text, self._secrets)

    def _redacted(self, response: httpx.Response) -> tuple[httpx.Response, bool]:
        """The answer with every credential of the request replaced by *** in its text, and
        whether its body held one: the one place where what a CRM (or a gateway before it)
        repeats of them is removed, before anything else reads the answer. (Headers are read
        for rate limits only, never stored or shown.)"""
        content = response.content
        if not any(secret.encode() in content for secret in self._secrets):
            return response, False
        content = self.redact(content.decode("utf-8", "replace")).encode()
        # content-encoding/-length described the original bytes, not these.
        kept = [(k, v) for k, v in response.headers.multi_items()
                if k.lower() not in ("content-encoding", "content-length")]
        return httpx.Response(response.status_code, headers=kept, content=content,
                              request=response.request), True

    def _redact_values(self, value):
        """A parsed answer with the credentials replaced in its string values. (Parsed from
        the original bytes and redacted value by value, so that a short token that also
        occurs in the JSON syntax or the keys cannot spoil the answer's structure.)"""
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, list):
            return [self._redact_values(v) for v in value]
        if isinstance(value, dict):
            return {k: self._redact_values(v) for k, v in value.items()}
        return value

    def _stop_for(self, seconds: float) -> RateLimitStop:
        """Stop sending: the CRM asked to wait longer than max_retry_after_seconds."""
        if self.stats.rate_limit_stop is None:
            until = datetime.now(timezone.utc) + timedelta(seconds=seconds)
            message = (f"{self.settings.label} asked to wait {seconds:.0f} s (until "
                       f"{until:%Y-%m-%d %H:%M:%S} UTC)")
            self.stats.rate_limit_stop = RateLimitStop(seconds, until, message)
            log.warning(f"{message}, longer than max_retry_after_seconds "
                        f"({self.settings.max_retry_after_seconds:g} s): nothing more is sent in "
                        f"this run; the remaining rows stay transient (RATE_LIMITED) for the "
                        f"next run")
        return self.stats.rate_limit_stop

    def _refuse_if_stopped(self) -> None:
        stop = self.stats.rate_limit_stop
        if stop is not None:
            raise _GiveUp(f"not sent: {stop.message}", "RATE_LIMITED", 429)

    async def call(self, method: str, path: str, *, content: bytes | None = None,
                   params: dict | None = None, retry_transport_errors: bool = True,
                   content_type: str = "application/json", json_answer: bool = True
                   ) -> tuple[httpx.Response, object, int]:
        """Send one request with retries; return (response, parsed JSON or None, attempts).

        Non-retryable statuses (2xx, 4xx) are returned for the connector to interpret.
        `retry_transport_errors=False` is for requests that are not idempotent (a create that
        may have been applied before the connection dropped): those are not resent blind. Only
        a 429 is retried (the CRM refused the request before processing it); a 5xx is returned
        to the connector, since a gateway may answer it after the CRM applied the request.
        `content_type`: of the body sent (Salesforce's Bulk API uploads text/csv);
        `json_answer=False`: a 2xx answer is not JSON (a CSV), its payload is None.
        """
        attempts = 0
        retryable = (_Retryable,)
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(self.settings.max_attempts),
                wait=self._wait,
                retry=retry_if_exception_type(retryable),
                reraise=True,
            ):
                with attempt:
                    attempts += 1
                    if attempts > 1:
                        self.stats.retries += 1
                    return (*await self._send_once(method, path, content, params,
                                                   retry_transport_errors,
                                                   (content_type, json_answer)), attempts)
        except _Retryable as exc:
            if exc.code == "CONNECTION_ERROR" and not self.reached:
                raise CrmUnreachable(f"cannot reach {self.settings.base_url}: {exc}",
                                     self.settings.base_url, str(exc)) from None
            raise TransientFailure(str(exc), exc.status, attempts, exc.code,
                                   raw=exc.raw) from None
        except _GiveUp as exc:
            raise TransientFailure(str(exc), exc.status, attempts, exc.code) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _wait(self, retry_state) -> float:
        exc = retry_state.outcome.exception()
        backoff = wait_exponential_jitter(initial=0.2, max=self.settings.max_backoff_seconds)
        if isinstance(exc, _Retryable) and exc.retry_after is not None:
            return min(exc.retry_after, self.settings.max_backoff_seconds)
        return backoff(retry_state)

    async def _send_once(self, method, path, content, params, retry_transport_errors,
                         kinds=("application/json", True)):
        async with self._semaphore:
            self._refuse_if_stopped()
            delay = self._resume_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await self._limiter.acquire()
            self._refuse_if_stopped()  # another slot may have been told to stop meanwhile
            headers = {"content-type": kinds[0]} if content is not None else {}
            if self.tokens is None:
                response = await self._request(method, path, content, params, headers,
                                               retry_transport_errors)
            else:
                token = await self.tokens.token()
                response = await self._request(method, path, content, params,
                                               {**headers, "authorization": f"Bearer {token}"},
                                               retry_transport_errors)
                if response.status_code == 401:
                    # Expired or revoked (Salesforce INVALID_SESSION_ID, HubSpot
                    # EXPIRED_AUTHENTICATION): a 401 is answered before anything is applied,
                    # so the request is sent once more with a new token. A second 401 goes to
                    # the connector, which fails the run.
                    token = await self.tokens.refresh(token)
                    response = await self._request(method, path, content, params,
                                                   {**headers, "authorization": f"Bearer {token}"},
                                                   retry_transport_errors)
        return await self._answer(method, path, response, retry_transport_errors, kinds[1])

    async def _request(self, method, path, content, params, headers, retry_transport_errors):
        self.stats.requests += 1
        try:
            response = await self._client.request(
                method, path, content=content, params=params, headers=headers or None,
            )
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            # Never reached the server: always safe to resend.
            raise _Retryable(f"could not connect: {type(exc).__name__}", None,
                             "CONNECTION_ERROR") from None
        except httpx.TimeoutException as exc:
            raise _transport_failure(f"request timed out ({type(exc).__name__})", "TIMEOUT",
                                     retry_transport_errors) from None
        except httpx.TransportError as exc:
            raise _transport_failure(f"connection dropped ({type(exc).__name__})",
                                     "CONNECTION_DROPPED", retry_transport_errors) from None
        self.reached = True
        return response

    async def _answer(self, method, path, response, retry_transport_errors, json_answer=True):
        original = response.content
        response, echoed = self._redacted(response)
        if self._on_response is not None:
            pause = self._on_response(response)
            if pause:
                self.pause(pause)
        status = response.status_code
        if status in RETRYABLE_STATUS and (status == 429 or retry_transport_errors):
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            if status == 429 and retry_after is None and self.settings.rate_limit_reset_header:
                retry_after = parse_retry_after(
                    response.headers.get(self.settings.rate_limit_reset_header))
            if status == 429:
                self.stats.rate_limited += 1
                if retry_after is not None and retry_after > self.settings.max_retry_after_seconds:
                    raise _GiveUp(self._stop_for(retry_after).message, "RATE_LIMITED", 429)
                self.pause(retry_after if retry_after is not None else 1.0)
            raise _Retryable(f"HTTP {status}: {_snippet(response)}", status,
                             "RATE_LIMITED" if status == 429 else f"HTTP_{status}", retry_after)
        if status in NOT_THE_API_STATUS:
            raise _GiveUp(f"HTTP {status} from {method} {self.settings.base_url}{path}: "
                          f"{_snippet(response)}", f"HTTP_{status}", status)
        if not json_answer and 200 <= status < 300:
            return response, None  # (a CSV: the connector reads response.text)
        try:
            payload = parse_json(original) if original else None
            if echoed:
                payload = self._redact_values(payload)
        except ValueError:
            if 200 <= status < 300 and retry_transport_errors:
                raise _Retryable(f"HTTP {status} with a body that is not JSON: "
                                 f"{_snippet(response)}", status, "MALFORMED_RESPONSE",
                                 raw=response.text[:RAW_LIMIT]) from None
            payload = None
        return response, payload


RAW_LIMIT = 2000  # characters of an answer that could not be understood kept for the quarantine


def _snippet(response: httpx.Response, limit: int = 300) -> str:
    text = response.text[:limit]
    return text.replace("\n", " ")


# A credential shorter than this cannot be told from ordinary text ("t" is in "status"): it is
# not searched for, so that the answers' values stay intact. No CRM issues tokens that short.
MIN_SECRET_LENGTH = 8


__all__ = [  # with the errors, whose old home this is
    "FatalCrmError", "CrmUnreachable", "MissingToken", "BadBaseUrl", "TransientFailure",
    "AllowanceReserveReached", "HttpCore", "HttpSettings", "parse_retry_after",
]
