"""The sandbox's OAuth 2.0 token endpoints, and the access tokens they issue, which expire.

Salesforce `POST /services/oauth2/token` (form body): grant_type `client_credentials` (client
id and secret in the body or HTTP Basic), `refresh_token`, and
`urn:ietf:params:oauth:grant-type:jwt-bearer` (an `assertion` JWT: iss = client id, sub = user,
exp in the future; its RS256 signature is checked when a certificate's public key is registered
with `POST /_sandbox/oauth {"salesforce_jwt_public_key": PEM}`). The answer is
`{access_token, signature, instance_url, id, token_type: "Bearer", issued_at (ms, a string)}`
and names no expiry, as Salesforce's; errors are 400 `{"error", "error_description"}`
(invalid_client_id, invalid_client, invalid_grant, unsupported_grant_type). (Salesforce help:
"OAuth 2.0 Client Credentials Flow for Server-to-Server Integration", "OAuth 2.0 JWT Bearer
Flow", "OAuth 2.0 Refresh Token Flow"; jsforce's TokenResponse type lists the same fields.)

HubSpot `POST /oauth/v1/token` (form body): grant_type `refresh_token` with client_id,
client_secret and refresh_token; the answer is `{token_type: "bearer", refresh_token,
access_token, expires_in}` (developers.hubspot.com, "Refresh an access token",
auth-oauth-v1/tokens/post-oauth-v1-token). A refresh token that is unknown or revoked is a 400
`{"status": "BAD_REFRESH_TOKEN", "message": "missing or invalid refresh token"}` (as HubSpot
answers it, quoted by Nango's "HubSpot OAuth BAD_REFRESH_TOKEN"); a wrong client id or secret
answers `BAD_CLIENT_ID` / `BAD_CLIENT_SECRET` the same way (GUESS: HubSpot documents no list).

Issued tokens are accepted until `token_lifetime` seconds after issue (per CRM; settable with
`crm-sync sandbox --token-lifetime`, `create_app(token_lifetime=...)` or
`POST /_sandbox/oauth {"token_lifetime": 2}`); then each CRM answers its 401: Salesforce
`[{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]`, HubSpot
`{"status": "error", "message": "The OAuth token used to make this call expired N second(s)
ago.", "category": "EXPIRED_AUTHENTICATION"}`. The fixed tokens (state.tokens) keep working.

`POST /_sandbox/oauth {"unavailable": {"salesforce": 2}}` makes the next 2 token requests of
that CRM answer 503 (plain text, Retry-After: 1): a token endpoint briefly down.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
import uuid
from dataclasses import dataclass, field
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

CRMS = ("salesforce", "hubspot")
# Session lifetimes by default: Salesforce's default session timeout (2 hours), HubSpot's
# expires_in (30 minutes).
DEFAULT_LIFETIMES = {"salesforce": 7200.0, "hubspot": 1800.0}
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
SALESFORCE_TYPE, HUBSPOT_TYPE = "Bearer", "bearer"  # token_type as each CRM spells it


def UNAVAILABLE() -> PlainTextResponse:  # noqa: N802 - a canned answer
    return PlainTextResponse("Service Unavailable", 503, headers={"Retry-After": "1"})


def default_clients() -> dict[str, dict[str, str]]:
    """The connected app / public app the sandbox knows, per CRM."""
    return {crm: {"client_id": f"sandbox-{crm}-client-id",
                  "client_secret": f"sandbox-{crm}-client-secret",
                  "refresh_token": f"sandbox-{crm}-refresh-token"} for crm in CRMS}


@dataclass
class SandboxOAuth:
    lifetimes: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_LIFETIMES))
    clients: dict[str, dict[str, str]] = field(default_factory=default_clients)
    revoked: set[str] = field(default_factory=set)  # refresh tokens no longer honoured
    jwt_public_key: str | None = None  # Salesforce: the connected app's certificate key
    issued: dict[str, tuple[str, float]] = field(default_factory=dict)  # token: (crm, expiry)
    counts: dict[str, int] = field(default_factory=lambda: {crm: 0 for crm in CRMS})
    # The next N token requests of a CRM answer 503 (a token endpoint that is briefly down;
    # GUESS: neither vendor documents that answer's body, so it is a plain-text page).
    unavailable: dict[str, int] = field(default_factory=lambda: {crm: 0 for crm in CRMS})
    unavailable_served: dict[str, int] = field(default_factory=lambda: {crm: 0 for crm in CRMS})

    def down(self, crm: str) -> bool:
        """Whether this token request is one of the configured 503s (and count it)."""
        if self.unavailable[crm] <= 0:
            return False
        self.unavailable[crm] -= 1
        self.unavailable_served[crm] += 1
        return True

    def issue(self, crm: str, prefix: str) -> tuple[str, float]:
        token = prefix + secrets.token_urlsafe(24)
        lifetime = self.lifetimes[crm]
        self.issued[token] = (crm, time.monotonic() + lifetime)
        self.counts[crm] += 1
        return token, lifetime

    def check(self, request: Request, crm: str) -> tuple[str, float]:
        """("valid" | "expired" | "unknown", seconds since it expired) for the request's
        bearer token among the tokens issued for `crm`."""
        header = request.headers.get("authorization", "")
        token = header[7:] if header[:7].lower() == "bearer " else ""
        crm_of, expiry = self.issued.get(token, (None, 0.0))
        if crm_of != crm:
            return "unknown", 0.0
        late = time.monotonic() - expiry
        return ("expired", late) if late >= 0 else ("valid", 0.0)

    def reset(self) -> None:
        self.issued.clear()
        self.revoked.clear()
        self.counts = {crm: 0 for crm in CRMS}
        self.unavailable = {crm: 0 for crm in CRMS}
        self.unavailable_served = {crm: 0 for crm in CRMS}

    def describe(self) -> dict:
        return {"token_lifetime": self.lifetimes, "issued": self.counts,
                "revoked_refresh_tokens": len(self.revoked),
                "unavailable": self.unavailable, "unavailable_served": self.unavailable_served}

    def configure(self, body: dict) -> None:
        lifetime = body.get("token_lifetime")
        if isinstance(lifetime, dict):
            self.lifetimes.update({crm: float(v) for crm, v in lifetime.items() if crm in CRMS})
        elif lifetime is not None:
            self.lifetimes = {crm: float(lifetime) for crm in CRMS}
        for crm, client in (body.get("clients") or {}).items():
            if crm in CRMS:
                self.clients[crm].update({k: str(v) for k, v in client.items()})
        for token in body.get("revoke_refresh_tokens") or ():
            self.revoked.add(str(token))
        if "salesforce_jwt_public_key" in body:
            self.jwt_public_key = body["salesforce_jwt_public_key"]
        for crm, count in (body.get("unavailable") or {}).items():
            if crm in CRMS:
                self.unavailable[crm] = int(count)
        if body.get("expire_all"):
            self.issued = {t: (crm, 0.0) for t, (crm, _) in self.issued.items()}


async def _form(request: Request) -> dict[str, str]:
    raw = (await request.body()).decode("utf-8", "replace")
    return {k: v[0] for k, v in parse_qs(raw, keep_blank_values=True).items()}


def _basic(request: Request) -> tuple[str | None, str | None]:
    header = request.headers.get("authorization", "")
    if header[:6].lower() != "basic ":
        return None, None
    try:
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None, None
    return user, password


class TokenHandlers:
    def __init__(self, state):
        self.state = state

    @property
    def oauth(self) -> SandboxOAuth:
        return self.state.oauth

    def routes(self) -> list[Route]:
        return [Route("/services/oauth2/token", self.salesforce, methods=["POST"]),
                Route("/oauth/v1/token", self.hubspot, methods=["POST"]),
                Route("/_sandbox/oauth", self.admin, methods=["GET", "POST"])]

    async def admin(self, request: Request):
        if request.method == "POST":
            try:
                body = json.loads(await request.body())
            except (ValueError, UnicodeDecodeError):
                body = None
            if not isinstance(body, dict):
                return JSONResponse({"message": "expected a JSON object"}, 400)
            self.oauth.configure(body)
        return JSONResponse(self.oauth.describe())

    # -- Salesforce ----------------------------------------------------------------------------
    async def salesforce(self, request: Request):
        if self.oauth.down("salesforce"):
            return UNAVAILABLE()
        form = await _form(request)
        client = self.oauth.clients["salesforce"]
        user, password = _basic(request)
        client_id = form.get("client_id") or user
        client_secret = form.get("client_secret") or password
        grant = form.get("grant_type")

        def refuse(error: str, description: str):
            return JSONResponse({"error": error, "error_description": description}, 400)

        if not grant:
            return refuse("invalid_request", "grant type is missing")
        if grant == JWT_BEARER:
            problem = self._jwt_problem(form.get("assertion", ""), client["client_id"])
            if problem:
                return refuse("invalid_grant", problem)
        else:
            if grant not in ("client_credentials", "refresh_token"):
                return refuse("unsupported_grant_type", "grant type not supported")
            if client_id != client["client_id"]:
                return refuse("invalid_client_id", "client identifier invalid")
            if client_secret != client["client_secret"]:
                return refuse("invalid_client", "invalid client credentials")
            if grant == "refresh_token" and (form.get("refresh_token") != client["refresh_token"]
                                             or form.get("refresh_token") in self.oauth.revoked):
                return refuse("invalid_grant", "expired access/refresh token")
        org = self.state.org
        token, _ = self.oauth.issue("salesforce", f"00D{org}!")
        base = str(request.base_url).rstrip("/")
        return JSONResponse({
            "access_token": token,
            "signature": base64.b64encode(secrets.token_bytes(32)).decode(),
            "instance_url": base,
            "id": f"{base}/id/00D{org}AAA/005{org}AAA",
            "token_type": SALESFORCE_TYPE,
            "issued_at": str(int(time.time() * 1000)),
        })

    def _jwt_problem(self, assertion: str, client_id: str) -> str | None:
        try:
            import jwt  # PyJWT
        except ImportError:  # pragma: no cover - installed with crm_sync
            return "the sandbox cannot read JWTs (PyJWT is not installed)"
        key = self.oauth.jwt_public_key
        try:
            claims = jwt.decode(assertion, key, algorithms=["RS256"],
                                options={"verify_signature": key is not None,
                                         "verify_aud": False, "require": ["exp"]})
        except jwt.ExpiredSignatureError:
            return "expired authorization code"
        except jwt.PyJWTError:
            return "invalid assertion"
        if claims.get("iss") != client_id:
            return "invalid assertion"
        if not claims.get("sub"):
            return "user hasn't approved this consumer"
        return None

    # -- HubSpot -------------------------------------------------------------------------------
    async def hubspot(self, request: Request):
        if self.oauth.down("hubspot"):
            return UNAVAILABLE()
        form = await _form(request)
        client = self.oauth.clients["hubspot"]

        def refuse(status: str, message: str):
            return JSONResponse({"status": status, "message": message,
                                 "correlationId": str(uuid.uuid4())}, 400)

        if form.get("grant_type") != "refresh_token":
            return refuse("BAD_GRANT_TYPE", "grant_type must be refresh_token or "
                                            "authorization_code")
        if form.get("client_id") != client["client_id"]:
            return refuse("BAD_CLIENT_ID", "missing or unknown client id")
        if form.get("client_secret") != client["client_secret"]:
            return refuse("BAD_CLIENT_SECRET", "missing or invalid client secret")
        refresh = form.get("refresh_token")
        if refresh != client["refresh_token"] or refresh in self.oauth.revoked:
            return refuse("BAD_REFRESH_TOKEN", "missing or invalid refresh token")
        token, lifetime = self.oauth.issue("hubspot", "CN")
        return JSONResponse({"token_type": HUBSPOT_TYPE, "refresh_token": refresh,
                             "access_token": token, "expires_in": int(lifetime)
                             if float(lifetime).is_integer() else lifetime})


def routes(state) -> list[Route]:
    return TokenHandlers(state).routes()
