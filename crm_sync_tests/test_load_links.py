"""The runner's associations (crm_sync/load/links.py), over HTTP to the Brevo sandbox: a row whose
target is not in the CRM is not sent and is quarantined as ASSOCIATION_TARGET_MISSING, naming
the target sync and key, until the target is synced; the links of confirmed rows are recorded
in the store with their state; a change of only the association column sends the row again."""

from __future__ import annotations

import time

import pandas as pd
import pytest

from crm_sync.connectors.brevo import BrevoResource
from crm_sync.extract.sources import SourceResource
from crm_sync.load.links import TARGET_MISSING
from crm_sync.load.runner import run_upsert
from crm_sync.load.replay import retry_transient
from crm_sync.sandbox.app import DEFAULT_TOKENS
from crm_sync.transform.validate import validate_partition
from crm_sync_tests.conftest import stored
from crm_sync_tests.links_specs import COMPANIES, PROJECTS, brevo, load_syncs  # noqa: F401

DAY = "2026-11-03T10:00:00Z"


@pytest.fixture
def spec(tmp_path):
    return load_syncs(tmp_path, COMPANIES, PROJECTS)


def resource(url: str) -> BrevoResource:
    return BrevoResource(base_url=url, token=DEFAULT_TOKENS["brevo"], poll_interval_seconds=0.01,
                         max_poll_interval_seconds=0.05, requests_per_window=200)


def companies(*keys: str) -> pd.DataFrame:
    return pd.DataFrame([{"company_id": k, "name": f"Company {k}", "domain": f"{k}.example",
                          "updated_at": DAY} for k in keys])


def projects(links: dict[str, str | None]) -> pd.DataFrame:
    return pd.DataFrame([{"project_id": k, "name": f"Project {k}", "status": "active",
                          "company_id": v, "updated_at": DAY} for k, v in links.items()])


def run(spec, name: str, frame: pd.DataFrame, store, url: str, **options):
    sync = spec.sync(name)
    result = validate_partition(sync, frame)
    assert result.failures == []
    return run_upsert(sync, result.valid, resource(url), store, partition=DAY[:10], **options)


def links(store) -> dict[str, str]:
    frame = store.links_frame("projects_to_brevo")
    return dict(zip(frame["source_key"], frame["target_key"]))


def test_a_row_whose_target_is_not_synced_waits_in_the_quarantine_until_it_is(
        brevo, sandbox_url, store, spec):
    run(spec, "companies_to_brevo", companies("CO-1"), store, sandbox_url)
    rows = projects({"PR-1": "CO-1", "PR-2": "CO-2", "PR-3": None})
    report = run(spec, "projects_to_brevo", rows, store, sandbox_url)
    assert (report.created, report.failed, report.targets_missing) == (2, 1, 1)
    assert report.failed_by_code == {TARGET_MISSING: 1} and report.links_created == 1
    assert {r["identifiers"]["ext_id"] for r in stored(brevo, "brevo", "project")} == \
        {"PR-1", "PR-3"}  # PR-2 was not sent
    [entry] = store.quarantine_frame("projects_to_brevo").to_dict("records")
    assert (entry["source_key"], entry["error_code"], entry["transient"], entry["value"],
            entry["column_name"]) == ("PR-2", TARGET_MISSING, 1, "CO-2", "company_id")
    assert "'companies_to_brevo'" in entry["message"] and "'CO-2'" in entry["message"]
    assert set(store.state_frame("projects_to_brevo")["source_key"]) == {"PR-1", "PR-3"}
    assert links(store) == {"PR-1": "CO-1"}

    # the target not synced yet: the next run of the partition leaves it waiting, sends nothing
    again = run(spec, "projects_to_brevo", rows, store, sandbox_url)
    assert (again.unchanged, again.targets_missing, again.requests) == (2, 1, 0)

    run(spec, "companies_to_brevo", companies("CO-2"), store, sandbox_url)
    after = run(spec, "projects_to_brevo", rows, store, sandbox_url)
    assert (after.created, after.unchanged, after.failed, after.links_created) == (1, 2, 0, 1)
    assert store.quarantine_frame("projects_to_brevo").empty
    assert links(store) == {"PR-1": "CO-1", "PR-2": "CO-2"}
    client = {r["identifiers"]["ext_id"]: str(r["identifiers"]["id"])
              for r in stored(brevo, "brevo", "client")}
    frame = store.links_frame("projects_to_brevo")
    assert dict(zip(frame["source_key"], frame["target_crm_id"])) == \
        {"PR-1": client["CO-1"], "PR-2": client["CO-2"]}


def test_a_change_of_only_the_association_column_sends_the_row_again(
        brevo, sandbox_url, store, spec):
    run(spec, "companies_to_brevo", companies("CO-1", "CO-2"), store, sandbox_url)
    run(spec, "projects_to_brevo", projects({"PR-1": "CO-1"}), store, sandbox_url)
    moved = run(spec, "projects_to_brevo", projects({"PR-1": "CO-2"}), store, sandbox_url)
    assert (moved.updated, moved.links_created, moved.links_removed) == (1, 1, 1)
    assert links(store) == {"PR-1": "CO-2"}
    emptied = run(spec, "projects_to_brevo", projects({"PR-1": None}), store, sandbox_url)
    assert (emptied.updated, emptied.links_created, emptied.links_removed) == (1, 0, 1)
    assert links(store) == {}


def test_the_replay_of_transient_failures_sends_it_once_the_target_is_synced(
        brevo, sandbox_url, store, spec, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    projects({"PR-1": "CO-1"}).to_csv(data / "projects.csv", index=False)
    run(spec, "projects_to_brevo", projects({"PR-1": "CO-1"}), store, sandbox_url)
    assert store.quarantine_frame("projects_to_brevo")["error_code"].tolist() == [TARGET_MISSING]
    # the company is synced in another partition's run; the projects' replay step picks it up
    run(spec, "companies_to_brevo", companies("CO-1"), store, sandbox_url)
    report = retry_transient(spec.sync("projects_to_brevo"), SourceResource(data_dir=str(data)),
                             resource(sandbox_url), store, before=time.time() + 1)
    assert report.resent.created == 1 and report.resent.links_created == 1
    assert store.quarantine_frame("projects_to_brevo").empty
    assert links(store) == {"PR-1": "CO-1"}
