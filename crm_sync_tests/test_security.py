"""No secret leaks, and the sandbox is locked to its tokens and to this machine.

- Syncs into all four CRMs run with recognisable tokens, on a persistent Dagster instance,
  through success paths and failing ones (a token the CRM refuses, an object it does not have);
  then everything crm_sync and Dagster wrote (every file of DAGSTER_HOME, every event of the
  runs, the sync store's SQLite files, log records, captured output, exception texts, the
  repository snapshot the UI displays) is searched for the tokens: they are nowhere.
- Fields marked `sensitive: true` are masked wherever a person sees the quarantine: previews
  in Dagster metadata, the quarantine table (payload, value, message), logs.
- The sandbox answers 401 to requests without the CRM's token or with another one, and binds to
  127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import inspect
import logging
import subprocess
import sys
from pathlib import Path

import dagster as dg
import httpx
import pytest
import yaml
from dagster._core.remote_representation.external_data import RepositorySnap
from dagster._serdes import serialize_value

from crm_sync import cli
from crm_sync.pipeline.assets import build_assets
from crm_sync.connectors import RESOURCE_CLASSES
from crm_sync.definitions import build_definitions, build_resources
from crm_sync.sandbox import server
from crm_sync.sandbox.app import TOKEN_ENV
from crm_sync.sandbox.server import sandbox_process
from crm_sync.extract.sources import SourceResource
from crm_sync.state.quarantine import QuarantineEntry
from crm_sync.spec import PROJECT_ROOT, load_spec
from crm_sync.state.store import SyncStore
from crm_sync_tests.conftest import stored
from crm_sync_tests.test_hostile_input import _table
from crm_sync_tests.bundled_spec import bundled_raw

DAY = "2026-11-04"
UPDATED = f"{DAY}T12:00:00Z"
CANARY = "tok-SECRET-canary"
TOKENS = {crm: f"{CANARY}-{crm}-1234" for crm in TOKEN_ENV}
WRONG = f"{CANARY}-wrong-5678"

# Sensitive values: emails of rows that are synced, and of rows that are quarantined.
GOOD_EMAILS = ["ada.secret@example.com", "grace.secret@example.com"]
BAD_EMAILS = ["alan secret@example.com", "=HYPERLINK(\"katherine.secret@example.com\")"]
BAD_PHONE = "+1-555-SECRET-PHONE"


def _spec(tmp_path: Path):
    """syncs.yaml with emails (and HubSpot phones) sensitive, plus a sync into an object
    Superleap does not have."""
    raw = bundled_raw()
    for sync in raw["syncs"]:
        sync["schedule"] = None
        if sync["name"] == "leads_to_superleap":
            sync["fields"]["email"]["sensitive"] = True
            nowhere = {**sync, "name": "leads_to_nowhere", "object": "no_such_object"}
        if sync["name"] == "contacts_to_hubspot":
            sync["fields"]["email"]["sensitive"] = True
            sync["fields"]["phone"]["sensitive"] = True
    raw["syncs"].append(nowhere)
    path = tmp_path / "syncs.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_spec(path)


def _data(folder: Path) -> None:
    folder.mkdir()
    lead = {"superleap_id": "", "phone": "", "status": "new", "source": "web",
            "updated_at": UPDATED}
    _table("leads", [
        {**lead, "lead_id": "L-1", "name": "Ada", "email": GOOD_EMAILS[0]},
        {**lead, "lead_id": "L-2", "name": "Grace", "email": GOOD_EMAILS[1]},
        {**lead, "lead_id": "L-3", "name": "Alan", "email": BAD_EMAILS[0]},  # validation
        {**lead, "lead_id": "L-4", "name": "Kat", "email": BAD_EMAILS[1]},  # validation
        {**lead, "lead_id": "L-5", "name": "Unknown id", "email": "x.secret@example.com",
         "superleap_id": "g1koYv_ZZZZZZZZ"},  # Superleap refuses it: a CRM failure
        {**lead, "lead_id": "L-6", "name": "Ok", "email": "ok@example.com"},
        {**lead, "lead_id": "L-7", "name": "Ok", "email": "ok7@example.com"},
    ]).to_csv(folder / "leads.csv", index=False)
    contact = {"first_name": "Ada", "last_name": "Lovelace", "phone": "+1-555-123-4567",
               "job_title": "CTO", "lifecycle_stage": "lead", "company_id": "CO-1",
               "updated_at": UPDATED}
    _table("contacts", [
        {**contact, "contact_id": "C-1", "email": "c1.secret@example.com"},
        {**contact, "contact_id": "C-2", "email": "c2.secret@example.com"},
        {**contact, "contact_id": "C-3", "email": "c3.secret@example.com", "phone": BAD_PHONE},
    ]).to_csv(folder / "contacts.csv", index=False)
    _table("companies", [
        {"company_id": "CO-1", "name": "Acme", "employees": "3", "updated_at": UPDATED},
    ]).to_csv(folder / "companies.csv", index=False)
    _table("projects", [
        {"project_id": "P-1", "name": "Apollo", "budget": "10", "updated_at": UPDATED},
    ]).to_csv(folder / "projects.csv", index=False)


def _files_bytes(folder: Path, io_manager_files: bool = True) -> dict[Path, bytes]:
    """Every file under `folder`; without the IO manager's (DAGSTER_HOME/storage/<asset>/...),
    which hold the assets' DataFrames, but with the compute logs stored next to them."""
    def wanted(path: Path) -> bool:
        parts = path.relative_to(folder).parts
        return io_manager_files or parts[0] != "storage" or "compute_logs" in parts
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file() and wanted(p)}


@pytest.fixture
def canary_sandbox(tmp_path, monkeypatch):
    args = [a for crm, token in TOKENS.items() for a in ("--token", f"{crm}={token}")]
    with sandbox_process(tmp_path / "sandbox.sqlite", extra_args=args) as url:
        for crm, env in TOKEN_ENV.items():
            monkeypatch.setenv(env, TOKENS[crm])
            monkeypatch.setenv(f"{crm.upper()}_BASE_URL", url)
        yield url


def test_tokens_appear_nowhere_and_sensitive_values_are_masked(canary_sandbox, tmp_path,
                                                              monkeypatch, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    spec = _spec(tmp_path)
    _data(tmp_path / "data")
    store_path = tmp_path / "store" / "crm_sync.sqlite"
    monkeypatch.setenv("CRM_SYNC_STORE", str(store_path))
    home = tmp_path / "dagster_home"
    home.mkdir()
    assets = build_assets(spec)
    partitioned = [a for a in assets if a.partitions_def is not None]
    quarantine = [a for a in assets if a.key.path[-1] == "quarantine"]

    def resources():  # read the environment as it is now (tokens come from dg.EnvVar)
        return {**build_resources(),
                "source": SourceResource(data_dir=str(tmp_path / "data"))}

    texts: list[str] = []
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        first = dg.materialize(partitioned, partition_key=DAY, resources=resources(),
                               instance=instance, raise_on_error=False)
        failed = {e.step_key for e in first.get_step_failure_events()}
        assert failed == {"leads_to_nowhere"}  # 404: Superleap has no such object
        summary = dg.materialize(quarantine, resources=resources(), instance=instance)

        # Failing paths: tokens the CRMs refuse (401).
        monkeypatch.setenv(TOKEN_ENV["salesforce"], WRONG)
        monkeypatch.setenv(TOKEN_ENV["hubspot"], WRONG)
        second = dg.materialize(
            [a for a in partitioned if a.key.path[-1] in (
                "source_companies", "validated_companies_to_salesforce",
                "companies_to_salesforce", "source_contacts", "validated_contacts_to_hubspot",
                "contacts_to_hubspot")],
            partition_key=DAY, resources=resources(), instance=instance,
            raise_on_error=False, run_config={"ops": {  # send again: the rows are synced
                name: {"config": {"full_resync": True}}
                for name in ("contacts_to_hubspot", "companies_to_salesforce")}})
        assert {e.step_key for e in second.get_step_failure_events()} == {
            "companies_to_salesforce", "contacts_to_hubspot"}

        for result in (first, summary, second):
            for event in instance.all_logs(result.run_id):
                texts.append(serialize_value(event))
                texts.append(str(event))
            for event in result.get_step_failure_events():
                texts.append(event.step_failure_data.error.to_string())
            texts.append(serialize_value(instance.get_run_by_id(result.run_id)))
        errors = "\n".join(e.step_failure_data.error.to_string()
                           for r in (first, second) for e in r.get_step_failure_events())
        # The failures are readable and say what to check, without the token.
        assert "no_such_object" in errors
        assert "SALESFORCE_TOKEN" in errors and "HUBSPOT_TOKEN" in errors

        upsert_meta = first.asset_materializations_for_node("leads_to_superleap")[0].metadata
        hubspot_meta = first.asset_materializations_for_node("contacts_to_hubspot")[0].metadata
        quarantine_meta = summary.asset_materializations_for_node("quarantine")[0].metadata

    # The syncs did their work: valid rows are in the CRMs with their values verbatim.
    with httpx.Client(base_url=canary_sandbox) as client:
        emails = {r["email"] for r in stored(client, "superleap", "lead")}
    assert set(GOOD_EMAILS) <= emails

    captured = capfd.readouterr()
    texts += [caplog.text, captured.out, captured.err,
              "\n".join(str(r.__dict__) for r in caplog.records)]
    everything = _files_bytes(home)
    everything.update(_files_bytes(store_path.parent))

    # -- tokens: nowhere --------------------------------------------------------------------
    assert CANARY.encode() not in b"".join(everything.values()), [
        p for p, data in everything.items() if CANARY.encode() in data]
    assert not [t for t in texts if CANARY in t]

    # -- the repository as the UI shows it: tokens as environment variable names ------------
    snap = RepositorySnap.from_def(build_definitions(str(tmp_path / "syncs.yaml"))
                                   .get_repository_def())
    shown = serialize_value(snap)
    assert CANARY not in shown and "SALESFORCE_TOKEN" in shown
    for resource in snap.resources:
        if resource.name in TOKEN_ENV:
            assert type(resource.configured_values["token"]).__name__ == \
                "ResourceConfigEnvVarSnap"

    # -- sensitive values: masked in previews, metadata, store, logs ------------------------
    previews = [upsert_meta["quarantine_preview"].value, hubspot_meta["quarantine_preview"].value,
                quarantine_meta["preview"].value, quarantine_meta["by_error_code"].value]
    store_bytes = b"".join(data for p, data in everything.items() if store_path.parent in p.parents)
    # Dagster's IO manager keeps the source frames themselves (data, like the source tables):
    # every other file of DAGSTER_HOME is searched.
    dagster_files = b"".join(_files_bytes(home, io_manager_files=False).values())
    logs = "\n".join(texts)
    # The search reads what it should: the event log holds the metadata, the IO manager's files
    # hold the data (a leak would be found).
    assert b"quarantine_preview" in dagster_files and b"INVALID_ID" in store_bytes
    assert GOOD_EMAILS[0].encode() in b"".join(everything.values())
    secrets = GOOD_EMAILS + BAD_EMAILS + [BAD_PHONE, "x.secret@example.com",
                                          "c3.secret@example.com"]
    for secret in secrets:
        for variant in {secret, secret.replace('"', '\\"')}:
            assert variant.encode() not in store_bytes, variant
            assert variant.encode() not in dagster_files, variant
            assert variant not in logs, variant
            assert all(variant not in p for p in previews), variant
    q = SyncStore(store_path).quarantine_frame("leads_to_superleap").set_index("source_key")
    assert set(q.loc[["L-3", "L-4"], "error_code"]) == {"PARSE_INVALID_FORMAT"}
    assert q.loc["L-5", "error_code"] == "INVALID_ID" and q.loc["L-5", "stage"] == "crm"
    contacts = SyncStore(store_path).quarantine_frame("contacts_to_hubspot")
    assert list(contacts["source_key"]) == ["C-3"]  # the bad phone
    assert q.loc["L-3", "value"] == "***" and "***" in q.loc["L-3", "message"]
    assert '"email": "***"' in q.loc["L-5", "payload"]
    assert "L-3" in upsert_meta["quarantine_preview"].value or \
        "L-3" in quarantine_meta["preview"].value


def test_resources_never_show_their_token():
    for crm, cls in RESOURCE_CLASSES.items():
        resource = cls(base_url="http://127.0.0.1:9", token=TOKENS[crm])
        for shown in (repr(resource), str(resource), f"{resource}", f"{resource!r}"):
            assert CANARY not in shown and "***" in shown
        settings = resource.http_settings()
        assert TOKENS[crm] in settings.secrets  # what the core redacts from messages
    for crm, resource in build_resources().items():
        if crm in TOKEN_ENV:  # the one Definitions reads tokens from the environment
            assert isinstance(resource.token, dg.EnvVar), crm


def test_a_connector_message_that_echoes_the_token_is_redacted():
    from crm_sync.connectors.core import HttpCore, HttpSettings

    core = HttpCore(HttpSettings(base_url="http://127.0.0.1:9", headers={},
                                 secrets=(TOKENS["hubspot"],)))
    assert core.redact(f"bad token {TOKENS['hubspot']}!") == "bad token ***!"


# -- the sandbox -------------------------------------------------------------------------------
ENDPOINTS = {
    "superleap": [("POST", "/api/v1/org/objects/lead/record/bulk_upsert", {"values": []}),
                  ("POST", "/api/v1/org/objects/lead/filter", {})],
    "brevo": [("POST", "/v3/objects/project/batch/upsert", {"records": []}),
              ("POST", "/v3/objects/project/batch/delete", {"identifiers": {"ids": [1]}}),
              ("GET", "/v3/objects/project/records", None),
              ("GET", "/v3/processes/1", None)],
    "hubspot": [("POST", "/crm/v3/objects/contacts/batch/upsert", {"inputs": []}),
                ("POST", "/crm/v3/objects/contacts/batch/archive", {"inputs": []}),
                ("GET", "/crm/v3/objects/contacts/1", None)],
    "salesforce": [("PATCH", "/services/data/v62.0/composite/sobjects/Account/External_Id__c",
                    {"allOrNone": False, "records": []}),
                   ("DELETE", "/services/data/v62.0/composite/sobjects?ids=001", None),
                   ("GET", "/services/data/v62.0/limits", None)],
}


def _auth(crm: str, token: str) -> dict[str, str]:
    return {"api-key": token} if crm == "brevo" else {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("crm", list(ENDPOINTS))
def test_the_sandbox_refuses_requests_without_the_right_token(crm, sandbox):
    for method, path, body in ENDPOINTS[crm]:
        another_crms_token = f"sandbox-{'hubspot' if crm != 'hubspot' else 'brevo'}-token"
        empty = {"api-key": ""} if crm == "brevo" else {"Authorization": "Bearer"}
        for headers in ({}, empty, _auth(crm, WRONG), _auth(crm, another_crms_token),
                        {"Authorization": f"Basic {WRONG}"},
                        {"api-key": WRONG, "Authorization": WRONG}):
            response = sandbox.request(method, path, json=body, headers=headers)
            assert response.status_code == 401, (method, path, headers, response.text)
            assert WRONG not in response.text
        right = sandbox.request(method, path, json=body, headers=_auth(crm, f"sandbox-{crm}-token"))
        assert right.status_code != 401, (method, path)


def test_the_sandbox_binds_to_this_machine_by_default(monkeypatch):
    seen = {}
    real_serve = server.serve
    monkeypatch.setattr(server, "serve", lambda host, port, db, **kw: seen.update(host=host))
    assert cli.main(["sandbox"]) == 0
    assert seen["host"] == "127.0.0.1"
    assert cli.main(["sandbox", "--host", "0.0.0.0"]) == 0  # nosec B104: only when told so
    assert seen["host"] == "0.0.0.0"  # nosec B104
    assert inspect.signature(real_serve).parameters["host"].default == "127.0.0.1"
    assert inspect.signature(server.sandbox_process).parameters["host"].default == "127.0.0.1"
    assert inspect.signature(server.free_port).parameters["host"].default == "127.0.0.1"


def test_previews_mask_a_sensitive_source_key(tmp_path):
    from crm_sync.pipeline.assets import _masked_preview_columns
    from crm_sync.pipeline.resources import StoreResource

    raw = bundled_raw()
    for sync in raw["syncs"]:
        if sync["name"] == "leads_to_superleap":
            sync["fields"]["external_id"] = {"column": "lead_id", "sensitive": True}
    (tmp_path / "syncs.yaml").write_text(yaml.safe_dump(raw))
    spec = load_spec(tmp_path / "syncs.yaml")
    assert "source_key" in _masked_preview_columns(spec.sync("leads_to_superleap"))
    assert "source_key" not in _masked_preview_columns(spec.sync("contacts_to_hubspot"))
    store = SyncStore(tmp_path / "store.sqlite")
    for sync, key in (("leads_to_superleap", "L-SECRET-KEY"), ("contacts_to_hubspot", "C-PUBLIC")):
        store.record_results(sync, [], [QuarantineEntry(key, "validation", "X", "m")])
    [asset] = [a for a in build_assets(spec) if a.key.path[-1] == "quarantine"]
    result = dg.materialize([asset], resources={"store": StoreResource(path=str(store.path))})
    preview = result.asset_materializations_for_node("quarantine")[0].metadata["preview"].value
    assert "L-SECRET-KEY" not in preview and "***" in preview and "C-PUBLIC" in preview


def test_masking_finds_a_value_however_an_answer_spells_it():
    from crm_sync.state.masking import mask_entry

    entry = {"source_key": "K", "column_name": "email", "value": "Ada\"Secret@Example.com",
             "payload": {"email": "Ada\"Secret@Example.com", "name": "Ada"},
             "message": "invalid email format: ada\"secret@example.com",
             "raw": '{"email": "Ada\\"Secret@Example.com", "other": "b.secret@example.com"}'}
    masked = mask_entry(entry, {"email"}, extra_secrets=["b.secret@example.com"])
    assert masked["payload"] == {"email": "***", "name": "Ada"} and masked["value"] == "***"
    assert "ecret" not in masked["message"] + masked["raw"]
    assert entry["value"] == "Ada\"Secret@Example.com"  # the caller's entry is left alone
    assert mask_entry(entry, set()) is entry  # no sensitive field: nothing to do


def test_the_static_security_check_ci_runs_finds_nothing():
    # The same command as .ci/run's last step: a finding there fails CI after the whole suite
    # has run, so the default suite fails on it first (a `# nosec` must sit on the line bandit
    # reports, which for a multi-line call is the string's line, not the call's).
    bandit = Path(sys.executable).with_name("bandit")
    found = subprocess.run([str(bandit), "-c", "pyproject.toml", "-r", "crm_sync", "-q"],
                           cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    findings = [line for line in found.stdout.splitlines() if "Issue:" in line or
                "Location:" in line]
    assert found.returncode == 0, "\n".join(findings) or found.stdout[-2000:] + found.stderr[-2000:]
