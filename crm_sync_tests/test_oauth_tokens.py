"""Tokens that expire (connectors/oauth.py, sandbox/oauth.py), over HTTP to the sandbox: a
Salesforce sync (client credentials) and a HubSpot OAuth sync (refresh token) cross a token
expiry in the middle of the sync without failing a row; a refused secret or refresh token
fails the run with one readable message that repeats no secret; a token whose expires_in is
known is replaced before it expires."""

from __future__ import annotations

import asyncio
import logging

import dagster as dg
import pytest
from dagster._serdes import serialize_value

from crm_sync.connectors.core import HttpCore
from crm_sync.connectors.hubspot import HubSpotResource
from crm_sync.connectors.oauth import OAuthSettings, TokenProvider
from crm_sync.connectors.salesforce import SalesforceResource
from crm_sync.definitions import build_resources
from crm_sync.errors import FatalCrmError, TokenRefreshFailed
from crm_sync.extract.sources import SourceResource
from crm_sync.pipeline.assets import build_assets
from crm_sync.sandbox.oauth import default_clients
from crm_sync_tests import test_connector_hubspot as hubspot_tests
from crm_sync_tests import test_connector_salesforce as salesforce_tests
from crm_sync_tests.conftest import stored
from crm_sync_tests.test_security import DAY, _data, _files_bytes, _spec

CLIENTS = default_clients()
SF, HS = CLIENTS["salesforce"], CLIENTS["hubspot"]
CANARY = "canary-Secret-7f3a9c2e1b"


def oauth(sandbox, **settings) -> dict:
    response = sandbox.post("/_sandbox/oauth", json=settings)
    response.raise_for_status()
    return response.json()


@pytest.fixture
def lifetimes(sandbox):
    yield lambda seconds: oauth(sandbox, token_lifetime=seconds)
    oauth(sandbox, token_lifetime={"salesforce": 7200, "hubspot": 1800})


def test_salesforce_client_credentials_sync_crosses_a_token_expiry(sandbox, sandbox_url,
                                                                   lifetimes):
    lifetimes(1.0)
    # No expires_in from Salesforce and a 2-hour session lifetime: the expired token is only
    # noticed by the 401 INVALID_SESSION_ID, after which the request is sent again.
    resource = SalesforceResource(base_url=sandbox_url, client_id=SF["client_id"],
                                  client_secret=SF["client_secret"], batch_size=5,
                                  max_concurrency=2, requests_per_window=10)
    rows = salesforce_tests.rows(150)
    outcomes, stats = resource.run(salesforce_tests.SPEC, rows)

    assert [o for o in outcomes if o.status not in ("created", "updated")] == []
    assert len(outcomes) == 150
    assert len(salesforce_tests.accounts(sandbox)) == 150
    issued = oauth(sandbox)["issued"]["salesforce"]
    assert issued >= 2, "the sync did not outlast a token"
    # Every refused request was sent once more: 30 batches, plus one resend per 401.
    assert stats.requests >= 30 + 1


def test_hubspot_refresh_token_sync_crosses_a_token_expiry(sandbox, sandbox_url, lifetimes):
    lifetimes(1.0)
    resource = HubSpotResource(base_url=sandbox_url, token="", client_id=HS["client_id"],
                               client_secret=HS["client_secret"],
                               refresh_token=HS["refresh_token"], batch_size=5,
                               max_concurrency=2, requests_per_window=10, window_seconds=1.0)
    outcomes, _ = resource.run(hubspot_tests.SPEC, hubspot_tests.rows(120))

    assert [o for o in outcomes if o.status not in ("created", "updated")] == []
    assert len(outcomes) == 120
    assert len(stored(sandbox, "hubspot", "contacts")) == 120
    assert oauth(sandbox)["issued"]["hubspot"] >= 2


def test_an_expired_token_is_answered_in_each_crms_shape(sandbox, sandbox_url, lifetimes):
    lifetimes(0.5)
    hs = sandbox.post("/oauth/v1/token", data={
        "grant_type": "refresh_token", **HS}).json()
    assert set(hs) == {"token_type", "refresh_token", "access_token", "expires_in"}
    sf = sandbox.post("/services/oauth2/token", data={
        "grant_type": "client_credentials", "client_id": SF["client_id"],
        "client_secret": SF["client_secret"]}).json()
    assert {"access_token", "instance_url", "id", "token_type", "issued_at",
            "signature"} <= set(sf) and "expires_in" not in sf
    sf_path = "/services/data/v62.0/limits"
    hs_path = "/crm/v3/properties/contacts"
    auth = lambda token: {"authorization": f"Bearer {token}"}  # noqa: E731
    assert sandbox.get(sf_path, headers=auth(sf["access_token"])).status_code == 200
    assert sandbox.get(hs_path, headers=auth(hs["access_token"])).status_code == 200
    oauth(sandbox, expire_all=True)
    expired = sandbox.get(sf_path, headers=auth(sf["access_token"]))
    assert expired.status_code == 401
    assert expired.json() == [{"message": "Session expired or invalid",
                               "errorCode": "INVALID_SESSION_ID"}]
    expired = sandbox.get(hs_path, headers=auth(hs["access_token"]))
    assert expired.status_code == 401 and expired.json()["category"] == "EXPIRED_AUTHENTICATION"
    # A HubSpot token is not a Salesforce session, and a bad secret is refused as documented.
    assert sandbox.get(sf_path, headers=auth(hs["access_token"])).status_code == 401
    refused = sandbox.post("/services/oauth2/token", data={
        "grant_type": "client_credentials", "client_id": SF["client_id"],
        "client_secret": "wrong"})
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_client"


def test_a_token_with_expires_in_is_replaced_before_it_expires(sandbox, sandbox_url, lifetimes):
    lifetimes(600)
    now = [1000.0]
    settings = OAuthSettings(label="HubSpot", grant="refresh_token", client_id=HS["client_id"],
                             client_secret=HS["client_secret"],
                             refresh_token=HS["refresh_token"],
                             token_url=f"{sandbox_url}/oauth/v1/token", check="HUBSPOT_*")
    learned = []
    provider = TokenProvider(settings, timeout=10, verify=True, on_token=learned.append,
                             clock=lambda: now[0])

    async def scenario():
        first = await provider.token()
        now[0] += 500  # well inside its 600 s: the same token, nothing fetched
        assert await provider.token() == first
        now[0] += 45  # 545 s: within a minute of its expiry, so a new one, before any 401
        second = await provider.token()
        return first, second

    first, second = asyncio.run(scenario())
    assert first != second and learned == [first, second]
    assert provider.issued == 2 and oauth(sandbox)["issued"]["hubspot"] == 2


def test_a_refused_refresh_token_is_fatal_and_names_the_variable(sandbox, sandbox_url):
    oauth(sandbox, revoke_refresh_tokens=[HS["refresh_token"]])
    resource = HubSpotResource(base_url=sandbox_url, token="", client_id=HS["client_id"],
                               client_secret=HS["client_secret"],
                               refresh_token=HS["refresh_token"])
    with pytest.raises(TokenRefreshFailed) as caught:
        resource.run(hubspot_tests.SPEC, hubspot_tests.rows(3))
    message = str(caught.value)
    assert "HubSpot" in message and "HUBSPOT_REFRESH_TOKEN" in message
    assert "BAD_REFRESH_TOKEN" in message
    assert HS["refresh_token"] not in message and HS["client_secret"] not in message
    assert isinstance(caught.value, FatalCrmError)
    assert stored(sandbox, "hubspot", "contacts") == []


def test_a_wrong_client_secret_fails_the_run_and_appears_nowhere(sandbox, sandbox_url,
                                                                 tmp_path, monkeypatch,
                                                                 caplog, capfd):
    caplog.set_level(logging.DEBUG)
    spec = _spec(tmp_path)
    _data(tmp_path / "data")
    store_path = tmp_path / "store" / "crm_sync.sqlite"
    monkeypatch.setenv("CRM_SYNC_STORE", str(store_path))
    monkeypatch.setenv("SALESFORCE_CLIENT_ID", SF["client_id"])
    monkeypatch.setenv("SALESFORCE_CLIENT_SECRET", CANARY)
    home = tmp_path / "dagster_home"
    home.mkdir()
    wanted = ("source_companies", "validated_companies_to_salesforce", "companies_to_salesforce")
    assets = [a for a in build_assets(spec)
              if a.partitions_def is not None and a.key.path[-1] in wanted]
    resources = {**build_resources(), "source": SourceResource(data_dir=str(tmp_path / "data"))}
    assert type(resources["salesforce"].client_secret).__name__ == "EnvVar"

    with dg.instance_for_test(temp_dir=str(home)) as instance:
        result = dg.materialize(assets, partition_key=DAY, resources=resources,
                                instance=instance, raise_on_error=False)
        failures = result.get_step_failure_events()
        assert [e.step_key for e in failures] == ["companies_to_salesforce"]
        error = failures[0].step_failure_data.error.to_string()
        texts = [serialize_value(e) for e in instance.all_logs(result.run_id)]
        texts.append(serialize_value(instance.get_run_by_id(result.run_id)))
    assert "Salesforce" in error and "SALESFORCE_CLIENT_SECRET" in error
    assert "invalid_client" in error
    assert stored(sandbox, "salesforce", "Account") == []

    captured = capfd.readouterr()
    texts += [error, caplog.text, captured.out, captured.err,
              "\n".join(str(r.__dict__) for r in caplog.records)]
    files = {**_files_bytes(home), **_files_bytes(store_path.parent)}
    assert not [t for t in texts if CANARY in t]
    assert not [p for p, data in files.items() if CANARY.encode() in data]


def test_the_http_core_redacts_oauth_secrets_and_the_access_token(sandbox_url):
    resource = SalesforceResource(base_url=sandbox_url, client_id=SF["client_id"],
                                  client_secret=SF["client_secret"],
                                  refresh_token="refresh-" + CANARY)
    settings = resource.http_settings()
    assert "authorization" not in {k.lower() for k in settings.headers}
    assert settings.oauth.grant == "refresh_token"
    assert CANARY not in repr(resource) and CANARY not in repr(settings.oauth)
    core = HttpCore(settings)
    assert CANARY not in core.redact(f"echoed refresh-{CANARY} and {SF['client_secret']}")
    assert SF["client_secret"] not in core.redact(f"echoed {SF['client_secret']}")
    core._learn_secret("00Dabc!issued-access-token")
    assert "issued-access-token" not in core.redact("token 00Dabc!issued-access-token")
    asyncio.run(core.__aexit__(None, None, None))


def test_salesforce_jwt_bearer_flow_signs_with_the_private_key(sandbox, sandbox_url):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    oauth(sandbox, salesforce_jwt_public_key=public.decode())
    try:
        resource = SalesforceResource(base_url=sandbox_url, client_id=SF["client_id"],
                                      private_key=private, username="sync@example.com")
        assert resource.oauth_settings().grant == "jwt_bearer"
        outcomes, _ = resource.run(salesforce_tests.SPEC, salesforce_tests.rows(3))
        assert [o.status for o in outcomes] == ["created"] * 3
        assert oauth(sandbox)["issued"]["salesforce"] == 1

        # Signed by another key: the sandbox refuses the assertion, the run fails readably.
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()).decode()
        wrong = SalesforceResource(base_url=sandbox_url, client_id=SF["client_id"],
                                   private_key=other, username="sync@example.com")
        with pytest.raises(TokenRefreshFailed) as caught:
            wrong.run(salesforce_tests.SPEC, salesforce_tests.rows(3, start=10))
        message = str(caught.value)
        assert "invalid_grant" in message and "SALESFORCE_PRIVATE_KEY" in message
        assert "PRIVATE KEY" not in message
    finally:
        oauth(sandbox, salesforce_jwt_public_key=None)


def test_a_token_endpoint_down_for_a_moment_is_asked_again(sandbox, sandbox_url, lifetimes):
    # Regression: a 503 from the token endpoint used to fail the run at once, on the first try.
    lifetimes(1.0)
    oauth(sandbox, unavailable={"salesforce": 2, "hubspot": 3})
    salesforce = SalesforceResource(base_url=sandbox_url, client_id=SF["client_id"],
                                    client_secret=SF["client_secret"], batch_size=10,
                                    max_concurrency=2, requests_per_window=20)
    hubspot = HubSpotResource(base_url=sandbox_url, token="", client_id=HS["client_id"],
                              client_secret=HS["client_secret"],
                              refresh_token=HS["refresh_token"], batch_size=10,
                              max_concurrency=2, requests_per_window=20, window_seconds=1.0)
    sf_outcomes, _ = salesforce.run(salesforce_tests.SPEC, salesforce_tests.rows(60))
    hs_outcomes, _ = hubspot.run(hubspot_tests.SPEC, hubspot_tests.rows(60))

    assert [o for o in [*sf_outcomes, *hs_outcomes] if o.status != "created"] == []
    assert len(salesforce_tests.accounts(sandbox)) == 60
    assert len(stored(sandbox, "hubspot", "contacts")) == 60
    seen = oauth(sandbox)
    assert seen["unavailable_served"] == {"salesforce": 2, "hubspot": 3}
    assert seen["issued"]["salesforce"] >= 1 and seen["issued"]["hubspot"] >= 1


def test_a_token_endpoint_that_stays_down_fails_the_run_after_a_few_tries(sandbox, sandbox_url):
    oauth(sandbox, unavailable={"salesforce": 100})
    resource = SalesforceResource(base_url=sandbox_url, client_id=SF["client_id"],
                                  client_secret=SF["client_secret"])
    with pytest.raises(TokenRefreshFailed) as caught:
        resource.run(salesforce_tests.SPEC, salesforce_tests.rows(3))
    message = str(caught.value)
    assert "HTTP 503" in message and "4 attempts" in message
    assert "SALESFORCE_CLIENT_SECRET" in message and SF["client_secret"] not in message
    assert oauth(sandbox)["unavailable_served"]["salesforce"] == 4
    assert len(salesforce_tests.accounts(sandbox)) == 0
