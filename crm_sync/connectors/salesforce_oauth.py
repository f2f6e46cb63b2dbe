"""Salesforce's OAuth 2.0 settings on its resource (the flows are connectors/oauth.py): JWT
bearer with a private key, refresh token with a refresh token, else client credentials with a
client id and secret; none of them: the fixed `SALESFORCE_TOKEN`."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from crm_sync.connectors.base import CrmResource
from crm_sync.connectors.oauth import OAuthSettings, variables_named


class SalesforceOAuth(CrmResource):
    """The OAuth fields of SalesforceResource, besides client_id, client_secret, refresh_token
    and token_url (CrmResource)."""

    # the JWT bearer flow signs with `private_key` for `username`
    private_key: str = Field(default="", description="PEM private key of the connected app's "
                             "certificate (JWT bearer flow)", repr=False)
    username: str = Field(default="", description="the Salesforce user the JWT bearer flow "
                          "acts as (the JWT's sub)")
    jwt_audience: str = Field(default="https://login.salesforce.com",
                              description="the JWT's aud: https://login.salesforce.com, "
                              "https://test.salesforce.com for sandboxes, or the site URL")
    session_lifetime_seconds: float = Field(
        default=7200, gt=0, description="how long an OAuth access token is used before a new "
        "one is fetched: the org's session timeout (Salesforce's token answer names none). A "
        "token refused earlier (401 INVALID_SESSION_ID) is replaced at once")

    oauth_variables: ClassVar[dict[str, str]] = variables_named(  # SALESFORCE_CLIENT_ID, ...
        "SALESFORCE", "client_id", "client_secret", "refresh_token", "token_url", "private_key",
        "username")

    def oauth_settings(self) -> OAuthSettings | None:
        """JWT bearer with a private key, refresh token with a refresh token, else client
        credentials with a client id and secret; none of them: the fixed token."""
        if not self.client_id:
            return None
        if self.private_key:
            grant, check = "jwt_bearer", self._variables("client_id", "private_key", "username")
        elif self.refresh_token:
            grant, check = "refresh_token", self._variables("client_id", "client_secret",
                                                            "refresh_token")
        else:
            grant, check = "client_credentials", self._variables("client_id", "client_secret")
        return OAuthSettings(
            label="Salesforce", grant=grant, client_id=self.client_id,
            token_url=self.token_url or f"{self.base_url.rstrip('/')}/services/oauth2/token",
            client_secret=self.client_secret, refresh_token=self.refresh_token,
            private_key=self.private_key, username=self.username, audience=self.jwt_audience,
            lifetime_seconds=self.session_lifetime_seconds, check=check)
