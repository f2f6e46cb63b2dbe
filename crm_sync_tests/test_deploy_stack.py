"""Dagster's production stack (deploy/dagster.yaml), as a deployment runs it.

A DAGSTER_HOME with deploy/dagster.yaml (run, event-log and schedule storage in a fresh
PostgreSQL database, the QueuedRunCoordinator, one slot per CRM pool), the real
`dagster-daemon run` and `dagster-webserver` processes on deploy/workspace.yaml, the steps'
frames on $CRM_SYNC_IO_PATH, every CRM at the sandbox. Through Dagster's GraphQL API (over
HTTP, as a script or the UI does it) the test launches a backfill of every partition of two
syncs into two CRMs; the daemon starts the queued runs, each a run worker with one process per
step. Then: every run succeeded; every source row is in the CRM or the quarantine, once; the
steps that write to one CRM (its pool: upsert, replay) never overlapped in time, from the
runs' STEP_START / STEP_SUCCESS events read back from the instance; runs of the two CRMs did
overlap (the runs went in parallel); the frames went through the shared IO path.
"""

from __future__ import annotations

import os
import shutil
import subprocess  # nosec B404
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pandas as pd
import pytest
import yaml

from crm_sync.sandbox.server import free_port
from crm_sync.spec import PROJECT_ROOT
from crm_sync_tests.conftest import stored
from crm_sync_tests.processes import stop_process_group
from crm_sync_tests.bundled_spec import bundled_raw, bundled_unlinked

DEPLOY = PROJECT_ROOT / "deploy"
BIN = Path(sys.executable).parent  # the environment's dagster-webserver and dagster-daemon
# (sync, source table, its key column, CRM, object, the CRM field holding the source key;
# HubSpot's under the record's `properties`)
SYNCS = [("leads_to_superleap", "leads", "lead_id", "superleap", "lead", "external_id"),
         ("contacts_to_hubspot", "contacts", "contact_id", "hubspot", "contacts", "crm_sync_id")]
DAYS = 2  # partitions per sync: today and yesterday (runs: DAYS per sync)
START_SECONDS = 180  # webserver and daemon up, the code location loaded, on 2 shared cores
RUN_SECONDS = 420  # every run of both backfills finished


def sync_store(tmp_path: Path, postgres, pg_database) -> str:
    """The crm_sync sync store every run worker shares ($CRM_SYNC_STORE): a database of the
    PostgreSQL server, as in production (run workers on other machines share no disk)."""
    return postgres.url(pg_database("store"))


def _days() -> list[str]:
    today = datetime.now(timezone.utc).date()
    return [(today - timedelta(days=n)).isoformat() for n in range(DAYS - 1, -1, -1)]


def _project(tmp_path: Path, days: list[str]) -> tuple[Path, Path]:
    """(spec, data dir): the two syncs of the project's syncs.yaml, partitioned from
    days[0]; the bundled tables' first DAYS days of rows, moved to `days`."""
    spec = bundled_raw()
    syncs = [s for s in spec["syncs"] if s["name"] in {name for name, *_ in SYNCS}]
    for sync in syncs:
        sync.pop("schedule", None)
    spec_path = tmp_path / "syncs.yaml"
    spec_path.write_text(yaml.safe_dump({"start_date": days[0], "syncs": syncs}))
    data = tmp_path / "data"
    data.mkdir()
    for _, table, *_ in SYNCS:
        frame = pd.read_csv(PROJECT_ROOT / "data" / f"{table}.csv", dtype=str,
                            keep_default_na=False)
        bundled = sorted(frame["updated_at"].str[:10].unique())[:DAYS]
        frame = frame[frame["updated_at"].str[:10].isin(bundled)].copy()
        moved = dict(zip(bundled, days))
        frame["updated_at"] = frame["updated_at"].map(lambda v: moved[v[:10]] + v[10:])
        frame.to_csv(data / f"{table}.csv", index=False)
    return spec_path, data


def _start(cmd: list[str], env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=PROJECT_ROOT, env=env,  # nosec B603: fixed arguments
                            stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def _logs(*logs: Path) -> str:
    return "\n".join(f"--- {log.name} ---\n{log.read_text(errors='replace')[-3000:]}"
                     for log in logs if log.exists())


LAUNCH = """
mutation Launch($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on Error { message }
  }
}"""

LOCATIONS = """
{ workspaceOrError { __typename ... on Workspace { locationEntries {
    name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }"""


def _graphql(url: str, query: str, variables: dict | None = None) -> dict:
    response = httpx.post(f"{url}/graphql", json={"query": query, "variables": variables or {}},
                          timeout=60)
    assert response.status_code == 200, response.text[:3000]
    body = response.json()
    assert "errors" not in body, body["errors"]
    return body["data"]


def _poll(check, seconds: float, failure):
    """check() every second until it returns something; after `seconds`, fail with failure()."""
    deadline = time.monotonic() + seconds
    while (value := check()) is None:
        if time.monotonic() > deadline:
            pytest.fail(failure())
        time.sleep(1)
    return value


def _wait_for_location(url: str, procs: list[subprocess.Popen], logs: list[Path]) -> None:
    def loaded():
        for proc in procs:
            if proc.poll() is not None:
                pytest.fail(f"{Path(proc.args[0]).name} exited with {proc.returncode}\n"
                            f"{_logs(*logs)}")
        try:
            entries = _graphql(url, LOCATIONS)["workspaceOrError"]["locationEntries"]
        except httpx.HTTPError:  # not listening yet
            return None
        entry = next((e for e in entries if e["name"] == "crm_sync"), None)
        if entry is None or entry["loadStatus"] != "LOADED":
            return None
        assert entry["locationOrLoadError"]["__typename"] == "RepositoryLocation", entry
        return entry

    _poll(loaded, START_SECONDS,
          lambda: f"the code location did not load within {START_SECONDS} s\n{_logs(*logs)}")


def _launch_backfill(url: str, sync: str) -> str:
    """A backfill of every partition of the sync's job, launched as the UI launches one."""
    result = _graphql(url, LAUNCH, {"params": {
        "selector": {"partitionSetName": f"sync_{sync}_partition_set",
                     "repositorySelector": {"repositoryLocationName": "crm_sync",
                                            "repositoryName": "__repository__"}},
        "allPartitions": True,
    }})["launchPartitionBackfill"]
    assert result["__typename"] == "LaunchBackfillSuccess", result
    return result["backfillId"]


def _wait_for_runs(instance, backfills: dict[str, str], days: list[str],
                   logs: list[Path]) -> dict[str, list]:
    """{sync: its backfill's run records}, once every partition's run has finished."""
    from dagster import RunsFilter

    def runs():
        return {sync: instance.get_run_records(RunsFilter.for_backfill(backfill))
                for sync, backfill in backfills.items()}

    def finished():
        found = runs()
        done = all(len(records) == len(days) and all(r.dagster_run.is_finished for r in records)
                   for records in found.values())
        return found if done else None

    def failure():
        states = {sync: sorted(str(r.dagster_run.status) for r in records)
                  for sync, records in runs().items()}
        return f"the backfills' runs did not finish within {RUN_SECONDS} s: {states}\n" \
               f"{_logs(*logs)}"

    return _poll(finished, RUN_SECONDS, failure)


def _pool_steps(instance, run_id: str, sync: str) -> list[tuple[float, float]]:
    """(STEP_START, STEP_SUCCESS) times of the run's steps in the CRM's pool."""
    from dagster import DagsterEventType

    pool_steps = {sync, f"{sync}_replay"}  # crm_sync/pipeline/assets.py, sync_steps.py
    times: dict[str, dict[str, float]] = {}
    for entry in instance.all_logs(run_id, of_type={DagsterEventType.STEP_START,
                                                    DagsterEventType.STEP_SUCCESS}):
        if entry.step_key in pool_steps:
            times.setdefault(entry.step_key, {})[entry.dagster_event.event_type_value] = \
                entry.timestamp
    assert set(times) == pool_steps, (run_id, times)
    return [(t["STEP_START"], t["STEP_SUCCESS"]) for t in times.values()]


def _overlapping(spans: list[tuple[float, float]]) -> list:
    spans = sorted(spans)
    return [(a, b) for a, b in zip(spans, spans[1:]) if b[0] < a[1]]


def test_frames_go_to_the_io_path_when_it_is_set(sandbox, sandbox_url, tmp_path, monkeypatch):
    """$CRM_SYNC_IO_PATH: the steps' frames are files there, which a step on another machine
    loads; unset, the resources name no IO manager (Dagster's default, as before)."""
    import pickle  # nosec B403: what Dagster's FilesystemIOManager writes, read back

    from crm_sync.project import build_defs, build_resources, sandbox_resources
    from crm_sync.sandbox.app import DEFAULT_TOKENS
    from crm_sync.spec import load_spec

    monkeypatch.delenv("CRM_SYNC_IO_PATH", raising=False)
    assert "io_manager" not in build_resources() and "io_manager" not in \
        sandbox_resources(sandbox_url, tokens=DEFAULT_TOKENS)
    io_path = tmp_path / "io"
    monkeypatch.setenv("CRM_SYNC_IO_PATH", str(io_path))
    day, sync = "2026-11-02", "leads_to_superleap"
    defs = build_defs(bundled_unlinked(), resources=sandbox_resources(
        sandbox_url, tmp_path / "crm_sync.sqlite", tokens=DEFAULT_TOKENS))
    assert defs.resolve_job_def(f"sync_{sync}").execute_in_process(partition_key=day).success
    frames = {}
    for asset in ("source_leads", f"validated_{sync}"):
        with (io_path / asset / day).open("rb") as file:
            frames[asset] = pickle.load(file)  # nosec B301: our own test's file
    assert len(frames["source_leads"]) > len(frames[f"validated_{sync}"]) > 0
    assert {r["external_id"] for r in stored(sandbox, "superleap", "lead")} == \
        set(frames[f"validated_{sync}"]["_key"])


@pytest.mark.slow  # 2-3 min on 2 shared cores: `make test-slow`, run by CI
@pytest.mark.timeout(START_SECONDS + RUN_SECONDS + 120)
def test_backfills_of_two_crms_on_the_production_stack(postgres, pg_database, sandbox,
                                                       sandbox_url, tmp_path, monkeypatch):
    from dagster import DagsterInstance, DagsterRunStatus

    server, database = postgres, pg_database("dagster")
    # Every CRM answer 1 s late (processed, then answered: a slow CRM, well within the
    # client's timeout), so each upsert lasts seconds: two of one CRM at once would overlap.
    sandbox.post("/_sandbox/faults", json={"seed": 1, "rate_delay_after_commit": 1.0,
                                           "delay_seconds": 1.0}).raise_for_status()
    days = _days()
    spec_path, data = _project(tmp_path, days)
    home, io_path = tmp_path / "dagster_home", tmp_path / "shared" / "io"
    home.mkdir()
    io_path.mkdir(parents=True)
    shutil.copy(DEPLOY / "dagster.yaml", home / "dagster.yaml")
    store = sync_store(tmp_path, postgres, pg_database)
    env = {
        "DAGSTER_HOME": str(home),
        "DAGSTER_PG_HOST": server.host, "DAGSTER_PG_PORT": str(server.port),
        "DAGSTER_PG_USERNAME": server.user, "DAGSTER_PG_PASSWORD": "",  # trust auth
        "DAGSTER_PG_DB": database,
        "CRM_SYNC_SPEC": str(spec_path), "CRM_SYNC_DATA_DIR": str(data),
        "CRM_SYNC_STORE": store, "CRM_SYNC_IO_PATH": str(io_path),
    }
    for name, value in env.items():  # the test reads the same instance and store
        monkeypatch.setenv(name, value)
    # the tokens and <CRM>_BASE_URL (the sandbox) come from the session's environment
    proc_env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    logs = [tmp_path / "webserver.log", tmp_path / "daemon.log"]
    workspace = str(DEPLOY / "workspace.yaml")
    procs = [
        _start([str(BIN / "dagster-webserver"), "-w", workspace, "-h", "127.0.0.1",
                "-p", str(port)], proc_env, logs[0]),
        _start([str(BIN / "dagster-daemon"), "run", "-w", workspace], proc_env, logs[1]),
    ]
    instance = None
    try:
        _wait_for_location(url, procs, logs)
        backfills = {sync: _launch_backfill(url, sync) for sync, *_ in SYNCS}
        instance = DagsterInstance.get()
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        runs = _wait_for_runs(instance, backfills, days, logs)

        # every partition's run succeeded
        for sync, records in runs.items():
            assert sorted(r.dagster_run.tags["dagster/partition"] for r in records) == days
            failed = [r.dagster_run.run_id for r in records
                      if r.dagster_run.status != DagsterRunStatus.SUCCESS]
            assert not failed, f"{sync}: runs {failed} failed\n{_logs(*logs)}"

        # one CRM: its pool's steps one at a time, across runs; two CRMs: runs side by side
        for sync, records in runs.items():
            spans = [s for r in records for s in _pool_steps(instance, r.dagster_run.run_id, sync)]
            assert len(spans) == 2 * DAYS
            overlapping = _overlapping(spans)
            assert not overlapping, f"{sync}: steps of one CRM's pool overlapped: {overlapping}"
        for sync, _, _, crm, *_ in SYNCS:  # the steps took the CRM's one slot
            pool = instance.event_log_storage.get_concurrency_info(f"crm_{crm}")
            assert (pool.slot_count, pool.active_slot_count) == (1, 0), pool
        first, second = ([(r.start_time, r.end_time) for r in records]
                         for records in runs.values())
        assert any(max(a[0], b[0]) < min(a[1], b[1]) for a in first for b in second), \
            "no run of one CRM ran while a run of the other did"

        assert sandbox.get("/_sandbox/stats").json()["counters"].get(
            "faults delay_after_commit", 0) > 0  # the CRMs were slow, as configured

        # every source row in the CRM or the quarantine, once
        from crm_sync.pipeline.resources import StoreResource

        sync_store_ = StoreResource(path=store).get()
        for sync, table, key, crm, obj, key_field in SYNCS:
            source = set(pd.read_csv(data / f"{table}.csv", dtype=str)[key])
            in_crm = [r.get("properties", r)[key_field] for r in stored(sandbox, crm, obj)]
            quarantined = list(sync_store_.quarantine_frame(sync)["source_key"])
            assert len(in_crm) == len(set(in_crm)), f"{sync}: a row twice in {crm}"
            assert len(quarantined) == len(set(quarantined)), f"{sync}: a row quarantined twice"
            assert not set(in_crm) & set(quarantined), f"{sync}: rows in {crm} and quarantined"
            assert set(in_crm) | set(quarantined) == source, sync
            assert len(in_crm) > len(quarantined) > 0  # the bundled tables' bad rows too

        # the frames between steps went through the shared IO path, not DAGSTER_HOME/storage
        for sync, table, *_ in SYNCS:
            for asset in (f"source_{table}", f"validated_{sync}"):
                assert sorted(p.name for p in (io_path / asset).iterdir()) == days, asset
        local = home / "storage"
        assert not any((local / f"source_{table}").exists() for _, table, *_ in SYNCS)
    finally:
        for proc in procs:
            stop_process_group(proc)
        if instance is not None:
            instance.dispose()
