"""Access tokens that expire: fetched from the CRM's OAuth 2.0 token endpoint when first needed,
cached, fetched again shortly before they expire and once when the CRM answers 401 (the HTTP
core, connectors/core.py, resends that request once with the new token).

The grants are Authlib's (`authlib.integrations.httpx_client.AsyncOAuth2Client`), not written
by hand:
- Salesforce client credentials: `grant_type=client_credentials` with the connected app's
  consumer key and secret; refresh token: `grant_type=refresh_token`; JWT bearer:
  `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer` with an RS256 assertion signed by the
  connected app's private key (iss = consumer key, sub = username, aud = login URL, exp within
  3 minutes). Salesforce's answer has `access_token`, `instance_url`, `id`, `token_type`,
  `issued_at` (ms) and `signature`, but no `expires_in`: the session lasts the org's session
  timeout (2 hours by default), so `session_lifetime_seconds` says how long a token is used
  before it is fetched again, and a 401 INVALID_SESSION_ID fetches one at once.
  (help.salesforce.com "OAuth 2.0 Client Credentials Flow for Server-to-Server Integration",
  "OAuth 2.0 JWT Bearer Flow", "OAuth 2.0 Refresh Token Flow"; jsforce's TokenResponse type.)
- HubSpot: `POST /oauth/v1/token` with `grant_type=refresh_token`, client_id, client_secret
  and refresh_token in a form body; the answer has `access_token`, `refresh_token`,
  `expires_in` (seconds; 30 minutes) and `token_type` (developers.hubspot.com "Refresh an
  access token", api-reference auth-oauth-v1 tokens post-oauth-v1-token).

A token endpoint that refuses (invalid_client, invalid_grant, BAD_REFRESH_TOKEN) makes the run
fail at once with one TokenRefreshFailed naming the CRM and the variables to check, never their
values; one that is down or unreachable (5xx, 429, a dropped connection) is asked again with
backoff (tenacity), TOKEN_ATTEMPTS times in all, before the run fails the same way.
"""

from __future__ import annotations

import asyncio
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import httpx
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt
from tenacity import wait_exponential_jitter

from crm_sync.errors import TokenRefreshFailed

from authlib.deprecate import AuthlibDeprecationWarning  # noqa: E402  (installs its filter)

with warnings.catch_warnings():  # recent Authlib prefers httpx2 and warns when it finds httpx
    warnings.simplefilter("ignore", AuthlibDeprecationWarning)
    from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuthError

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
JWT_LIFETIME_SECONDS = 180  # Salesforce: "exp ... within 3 minutes"
# Fetch a new token this long before the one in use expires (a tenth of its life when shorter).
LEEWAY_SECONDS = 60.0
# A token endpoint that is down for a moment is asked this many times in all, waiting up to
# TOKEN_MAX_WAIT_SECONDS between tries (about 10 s in all), before the run fails.
TOKEN_ATTEMPTS = 4
TOKEN_MAX_WAIT_SECONDS = 5.0
_TRIED = f" ({TOKEN_ATTEMPTS} attempts)"  # said of a failure that was retried


@dataclass(frozen=True)
class OAuthSettings:
    """How one CRM resource gets its access tokens."""

    label: str  # "Salesforce"
    token_url: str
    grant: str  # "client_credentials" | "refresh_token" | "jwt_bearer"
    client_id: str
    client_secret: str = ""
    refresh_token: str = ""
    private_key: str = ""  # PEM, for the JWT bearer grant
    username: str = ""  # the JWT's sub
    audience: str = ""  # the JWT's aud
    lifetime_seconds: float | None = None  # when the answer names no expires_in
    check: str = ""  # the environment variables named when the token endpoint refuses

    def __repr__(self) -> str:  # never show the secrets
        return f"OAuthSettings({self.label}, {self.grant}, {self.token_url})"

    __str__ = __repr__

    @property
    def secrets(self) -> tuple[str, ...]:
        return tuple(s for s in (self.client_secret, self.refresh_token, self.private_key) if s)


class TokenProvider:
    """The current access token of one sync run, fetched again before it expires."""

    def __init__(self, settings: OAuthSettings, *, timeout: float, verify,
                 on_token: Callable[[str], None] = lambda token: None,
                 redact: Callable[[str], str] = lambda text: text,
                 clock: Callable[[], float] = time.monotonic):
        self.settings = settings
        self.issued = 0  # tokens fetched in this run
        self._timeout, self._verify = timeout, verify
        self._on_token, self._redact = on_token, redact
        self._token: str | None = None
        self._expires_at: float | None = None  # monotonic
        self._refresh_token = settings.refresh_token
        self._lock = asyncio.Lock()
        self._clock = clock

    def _fresh(self) -> bool:
        if self._token is None:
            return False
        return self._expires_at is None or self._clock() < self._expires_at

    async def token(self) -> str:
        """The access token to send now (fetched if there is none or it is about to expire)."""
        if not self._fresh():
            async with self._lock:
                if not self._fresh():  # another request may have fetched it meanwhile
                    await self._fetch()
        return self._token

    async def refresh(self, stale: str) -> str:
        """A new token after the CRM refused `stale` (once: requests that were refused with
        the same token together share the new one)."""
        async with self._lock:
            if self._token == stale:
                await self._fetch()
        return self._token

    async def _fetch(self) -> None:
        """One token from the endpoint. A refusal is fatal at once; an endpoint that is down or
        unreachable for a moment (5xx, 429, a dropped connection, a body that is not JSON) is
        asked again, TOKEN_ATTEMPTS times in all, before the run fails."""
        try:
            async for attempt in AsyncRetrying(
                    stop=stop_after_attempt(TOKEN_ATTEMPTS), reraise=True,
                    wait=wait_exponential_jitter(initial=0.5, max=TOKEN_MAX_WAIT_SECONDS),
                    retry=retry_if_exception(_transient)):
                with attempt:
                    answer = await self._grant()
        except OAuthError as exc:
            reason = exc.error + (f" ({exc.description})" if exc.description else "")
            self._fail(f"refused: {reason}")
        except httpx.HTTPStatusError as exc:
            self._fail(f"answered HTTP {exc.response.status_code}{_TRIED}")
        except (httpx.HTTPError, ValueError) as exc:
            self._fail(f"could not be used: {type(exc).__name__}{_TRIED}")
        self._accept(answer)

    async def _grant(self):
        s = self.settings
        client = AsyncOAuth2Client(client_id=s.client_id, client_secret=s.client_secret or None,
                                   token_endpoint_auth_method="client_secret_post"
                                   if s.client_secret else "none",
                                   timeout=self._timeout, verify=self._verify)
        async with client:
            if s.grant == "refresh_token":
                return await client.refresh_token(s.token_url, refresh_token=self._refresh_token)
            if s.grant == "jwt_bearer":
                return await client.fetch_token(s.token_url, grant_type=JWT_BEARER,
                                                assertion=self._assertion())
            return await client.fetch_token(s.token_url, grant_type="client_credentials")

    def _accept(self, answer) -> None:
        s = self.settings
        token = answer.get("access_token") if isinstance(answer, dict) else None
        if not token:
            # HubSpot refuses with {"status": "BAD_REFRESH_TOKEN", "message": ...}, not OAuth's
            # {"error": ...}: only those two fields are repeated (the answer also holds ours).
            status = answer.get("status") if isinstance(answer, dict) else None
            detail = answer.get("message") if isinstance(answer, dict) else None
            if status:
                self._fail(f"refused: {status}" + (f" ({detail})" if detail else ""))
            self._fail("answered without an access_token")
        self._token = str(token)
        self._refresh_token = answer.get("refresh_token") or self._refresh_token
        self._on_token(self._token)  # the core redacts it from now on
        self.issued += 1
        lifetime = _seconds(answer.get("expires_in"))
        if lifetime is None:
            lifetime = s.lifetime_seconds
        if lifetime is None:
            self._expires_at = None  # used until the CRM refuses it (401)
        else:
            self._expires_at = self._clock() + lifetime - min(LEEWAY_SECONDS, lifetime / 10)

    def _assertion(self) -> str:
        import jwt  # PyJWT (with cryptography for RS256)

        s = self.settings
        claims = {"iss": s.client_id, "sub": s.username, "aud": s.audience,
                  "exp": int(time.time()) + JWT_LIFETIME_SECONDS}
        try:
            return jwt.encode(claims, s.private_key, algorithm="RS256")
        except (ValueError, TypeError, jwt.PyJWTError) as exc:
            self._fail(f"could not be asked: the private key is not a usable RSA key "
                       f"({type(exc).__name__})", where="the token request")

    def _fail(self, what: str, where: str | None = None):
        s = self.settings
        where = where or f"the token endpoint {s.token_url}"
        message = self._redact(f"{s.label} OAuth ({s.grant.replace('_', ' ')}): {where} {what}; "
                               f"check {s.check}")
        raise TokenRefreshFailed(message, s.label, s.check) from None


def _transient(exc: BaseException) -> bool:
    """A token request worth sending again: the endpoint is down, overloaded or unreachable,
    or its answer was cut off. A refusal (OAuthError: 4xx with an OAuth error) never is."""
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code >= 500 or exc.response.status_code == 429
    return isinstance(exc, (httpx.TransportError, ValueError)) and \
        not isinstance(exc, OAuthError)


def variables_named(prefix: str, *fields: str) -> dict[str, str]:
    """Resource field -> its environment variable: client_secret -> <PREFIX>_CLIENT_SECRET."""
    return {name: f"{prefix}_{name.upper()}" for name in fields}


def _seconds(value) -> float | None:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
