"""Real data: runs that fail loudly, long waits, secrets in answers (issue 13, items 7, 8, 13).

Every test materializes a sync through Dagster (source -> validated -> upsert) against a real
HTTP server on 127.0.0.1: the CRM sandbox (with its fault injection), or a tiny server that is
not a CRM at all (405 to every request).

- A CRM stage that fails more rows than the sync's `quarantine_threshold`, or fails every
  request the same way, fails the run with one message naming the sync, the cause and what to
  check; the rows stay in the quarantine as transient. A base URL without http(s):// is refused
  before anything is sent, naming the variable to fix.
- A 429 asking to wait longer than `max_retry_after_seconds` stops the sending: the run ends in
  seconds, its remaining rows transient `RATE_LIMITED` naming the time the CRM named; shorter
  waits are logged.
- Credentials a gateway repeats in its answer reach none of: the quarantine, the materialization
  metadata, the Dagster event log, the exception text.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import yaml
from dagster._serdes import serialize_value

from crm_sync.pipeline.assets import build_assets
from crm_sync.definitions import build_resources
from crm_sync.sandbox.app import DEFAULT_TOKENS
from crm_sync.extract.sources import SourceResource
from crm_sync.spec import PROJECT_ROOT, load_spec
from crm_sync_tests import invariant as inv
from crm_sync_tests.bundled_spec import bundled_raw, bundled_unlinked

DAY = "2026-11-04"
ROWS = 6
CRMS = inv.CRMS
LABEL = {"superleap": "Superleap", "hubspot": "HubSpot", "salesforce": "Salesforce",
         "brevo": "Brevo"}


# -- harness ---------------------------------------------------------------------------------
def _data(tmp_path: Path, crm: str, rows: int = ROWS) -> Path:
    """The first `rows` rows of DAY of the bundled table of the CRM's sync."""
    table = inv.spec_for(crm).source
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    frame = pd.read_csv(PROJECT_ROOT / "data" / f"{table}.csv", dtype=str, keep_default_na=False)
    frame[frame["updated_at"].str.startswith(DAY)].head(rows).to_csv(data / f"{table}.csv",
                                                                     index=False)
    return data


def _spec(tmp_path: Path, **changes):
    """The bundled spec, with `changes` applied to every sync."""
    base = bundled_raw()
    base["syncs"] = [{**s, **changes} for s in base["syncs"]]
    path = tmp_path / "syncs.yaml"
    path.write_text(yaml.safe_dump(base))
    return load_spec(path)


def _materialize(crm: str, data: Path, resource, spec=None, instance=None):
    spec = spec or bundled_unlinked()
    sync = spec.sync(inv.SYNC_OF[crm])
    names = {f"source_{sync.source}", f"validated_{sync.name}", sync.name}
    assets = [a for a in build_assets(spec) if a.key.path[-1] in names]
    resources = {**build_resources(), "source": SourceResource(data_dir=str(data)), crm: resource}
    return dg.materialize(assets, partition_key=DAY, resources=resources, instance=instance,
                          raise_on_error=False)


def _upsert_failure(result, crm: str):
    """The upsert step's failure event (there must be one)."""
    events = [e for e in result.get_step_failure_events() if e.step_key == inv.SYNC_OF[crm]]
    assert events, f"{crm}: the upsert step did not fail"
    return events[0].step_failure_data


def _crm_rows(store, crm: str) -> pd.DataFrame:
    frame = store.quarantine_frame(inv.SYNC_OF[crm])
    return frame[frame["stage"] == "crm"]


def _valid_keys(store, crm: str, data: Path) -> set[str]:
    """The rows of the day that passed validation (those the CRM stage had to send)."""
    table = pd.read_csv(data / f"{inv.spec_for(crm).source}.csv", dtype=str)
    keys = set(table[inv.spec_for(crm).source_key])
    frame = store.quarantine_frame(inv.SYNC_OF[crm])
    return keys - set(frame[frame["stage"] == "validation"]["source_key"])


@pytest.fixture
def not_a_crm():
    """A server on 127.0.0.1 that answers 405 Method Not Allowed to every request."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def _refuse(self):
            self.rfile.read(int(self.headers.get("content-length") or 0))
            seen.append(f"{self.command} {self.path}")
            body = b'{"message": "Method Not Allowed"}'
            self.send_response(405)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _refuse

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", seen
    server.shutdown()
    server.server_close()


def _requests(sandbox) -> int:
    return sandbox.get("/_sandbox/stats").json()["counters"].get("requests total", 0)


# -- item 7: a CRM that fails every row is a failed run ------------------------------------------
@pytest.mark.parametrize("crm", CRMS)
def test_a_server_that_answers_405_to_everything_fails_the_run(crm, store, tmp_path, not_a_crm):
    url, seen = not_a_crm
    data = _data(tmp_path, crm)
    result = _materialize(crm, data, inv.resource(crm, url))

    assert not result.success and seen, "the run must fail, after really asking the server"
    failure = _upsert_failure(result, crm)
    text = failure.error.message
    sync = inv.SYNC_OF[crm]
    assert text.count(f"{sync}:") == 1 and "405" in text, text
    assert f"{crm.upper()}_BASE_URL" in text and url in text, text  # what to check
    assert "Traceback" not in text
    rows = _crm_rows(store, crm)
    assert set(rows["source_key"]) == _valid_keys(store, crm, data) != set()
    assert rows["transient"].astype(bool).all(), rows[["source_key", "error_code", "transient"]]
    assert store.state_frame(sync).empty


@pytest.mark.parametrize("crm", ["hubspot", "superleap"])
def test_a_base_url_without_scheme_is_refused_naming_the_variable(crm, sandbox, sandbox_url,
                                                                  store, tmp_path):
    hostport = sandbox_url.split("://", 1)[1]  # e.g. 127.0.0.1:8765
    data = _data(tmp_path, crm)
    result = _materialize(crm, data, inv.resource(crm, hostport))

    assert not result.success
    text = _upsert_failure(result, crm).error.message
    assert f"{crm.upper()}_BASE_URL" in text and repr(hostport) in text and "http://" in text, text
    assert _requests(sandbox) == 0
    assert store.state_frame(inv.SYNC_OF[crm]).empty
    assert not _crm_rows(store, crm)["transient"].eq(0).any()  # no row condemned for good


def test_crm_failures_over_the_threshold_fail_the_run(sandbox, sandbox_url, store, tmp_path):
    crm = "hubspot"
    data = _data(tmp_path, crm, rows=8)
    spec = _spec(tmp_path, quarantine_threshold=0.2)
    # Half the requests answer 500 (not retried: one attempt per request), one row a request.
    sandbox.post("/_sandbox/faults", json={"seed": 3, "rate_500": 0.5}).raise_for_status()
    resource = inv.resource(crm, sandbox_url, batch_size=1, max_attempts=1, max_concurrency=1)
    result = _materialize(crm, data, resource, spec=spec)

    rows = _crm_rows(store, crm)
    synced = store.state_frame(inv.SYNC_OF[crm])
    assert len(synced) > 0 and len(rows) > 0, "the seed must give a partial failure"
    assert len(rows) / (len(rows) + len(synced)) > 0.2
    assert not result.success
    text = _upsert_failure(result, crm).error.message
    sync = inv.SYNC_OF[crm]
    assert f"{sync}:" in text and "quarantine_threshold" in text and "20%" in text, text
    assert f"{len(rows)} of {len(rows) + len(synced)}" in text, text
    assert rows["transient"].astype(bool).all()


# -- item 8: a long Retry-After ends the run in seconds ------------------------------------------
def _run_with_deadline(seconds: float, fn):
    """fn() in a daemon thread; (finished, its result, elapsed seconds)."""
    box: dict = {}
    started = time.monotonic()
    thread = threading.Thread(target=lambda: box.setdefault("result", fn()), daemon=True)
    thread.start()
    thread.join(seconds)
    return not thread.is_alive(), box.get("result"), time.monotonic() - started


def _log_text(instance: dg.DagsterInstance, run_id: str) -> str:
    return "\n".join(serialize_value(entry) for entry in instance.all_logs(run_id))


# Brevo sends no Retry-After: its 429's x-sib-ratelimit-reset (3600 here) is the wait.
@pytest.mark.parametrize("crm", ["hubspot", "superleap", "brevo"])
def test_a_retry_after_of_an_hour_stops_sending_and_ends_the_run(crm, sandbox, sandbox_url,
                                                                 store, tmp_path):
    data = _data(tmp_path, crm)
    sandbox.post("/_sandbox/faults", json={"rate_429": 1.0, "retry_after_seconds": 3600})
    resource = inv.resource(crm, sandbox_url, batch_size=1, max_concurrency=2)
    instance = dg.DagsterInstance.ephemeral()
    finished, result, elapsed = _run_with_deadline(
        90, lambda: _materialize(crm, data, resource, instance=instance))

    assert finished, "the run still waits on the CRM's Retry-After of an hour"
    assert elapsed < 60
    assert _requests(sandbox) <= 2  # the slots in flight; then nothing more was sent
    failure = _upsert_failure(result, crm)
    text = failure.error.message
    assert f"{inv.SYNC_OF[crm]}:" in text and f"{LABEL[crm]} asked to wait 3600 s (until" in text
    assert "max_retry_after_seconds" in text, text
    assert failure.user_failure_data.metadata["rate_limit_stopped"].value is True
    assert failure.user_failure_data.metadata["retry_after_seconds"].value == 3600
    rows = _crm_rows(store, crm)
    assert set(rows["source_key"]) == _valid_keys(store, crm, data)
    assert set(rows["error_code"]) == {"RATE_LIMITED"}
    assert rows["transient"].astype(bool).all()
    assert rows["message"].str.contains(r"asked to wait 3600 s \(until .* UTC\)").all()
    assert "asked to wait 3600 s" in _log_text(instance, result.run_id)


def test_shorter_waits_are_logged(sandbox, sandbox_url, store, tmp_path):
    crm = "hubspot"
    data = _data(tmp_path, crm)
    sandbox.post("/_sandbox/faults", json={"seed": 1, "rate_429": 0.5,
                                           "retry_after_seconds": 1})
    resource = inv.resource(crm, sandbox_url, batch_size=2, max_concurrency=1)
    instance = dg.DagsterInstance.ephemeral()
    result = _materialize(crm, data, resource, instance=instance)

    assert result.success
    assert "waiting 1 s as HubSpot asked" in _log_text(instance, result.run_id)


# -- item 13: credentials echoed by a gateway are nowhere ----------------------------------------
# The upsert request of each CRM: the one whose answer the connector reads record by record.
UPSERT_PATH = {"superleap": "/record/bulk_upsert", "hubspot": "/batch/upsert",
               "salesforce": "/composite/sobjects/", "brevo": "/batch/upsert"}


def _everything_stored(store, result, instance) -> str:
    """The quarantine (every column), every materialization's metadata, the run's event log and
    its failures' text, as one text."""
    texts = [store.quarantine_frame().to_csv(index=False)]
    for event in result.get_asset_materialization_events():
        texts.append(serialize_value(event.event_specific_data.materialization))
    for event in result.get_step_failure_events():
        error = event.step_failure_data.error
        while error is not None:
            texts.append(error.to_string())
            error = error.cause
    texts.append(_log_text(instance, result.run_id))
    return "\n".join(texts)


@pytest.mark.parametrize("status", [200, 400, 401])
@pytest.mark.parametrize("crm", CRMS)
def test_credentials_echoed_in_an_answer_are_stored_nowhere(crm, status, sandbox, sandbox_url,
                                                            store, tmp_path):
    data = _data(tmp_path, crm)
    sandbox.post("/_sandbox/faults", json={"rate_echo_credentials": 1.0,
                                           "echo_credentials_status": status,
                                           "echo_credentials_path": UPSERT_PATH[crm]})
    instance = dg.DagsterInstance.ephemeral()
    result = _materialize(crm, data, inv.resource(crm, sandbox_url, batch_size=2),
                          instance=instance)

    everything = _everything_stored(store, result, instance)
    if status == 401:  # the CRM refused the credentials: the run fails
        assert not result.success
    else:  # the gateway's answer did reach the quarantine (or the run's failure)
        assert "gateway refused the request" in everything
    token = DEFAULT_TOKENS[crm]
    assert token not in everything, [line for line in everything.splitlines() if token in line][:3]


# -- issue 15: Salesforce's request limits (403 REQUEST_LIMIT_EXCEEDED, no Retry-After) ----------
@pytest.mark.parametrize("how", ["allowance", "concurrent"])
def test_salesforce_request_limit_stops_sending_and_fails_the_run(how, sandbox, sandbox_url,
                                                                   store, tmp_path):
    crm = "salesforce"
    data = _data(tmp_path, crm, rows=20)
    resource = inv.resource(crm, sandbox_url, batch_size=1, max_concurrency=1)
    try:
        if how == "allowance":  # the org's allowance runs out after 16 requests: few rows held
            sandbox.post("/_sandbox/limits", json={"salesforce_daily_limit": 16})
        else:  # every request meets the concurrent long-running request limit
            sandbox.post("/_sandbox/faults", json={"rate_429": 1.0}).raise_for_status()
        result = _materialize(crm, data, resource)
        sent = _requests(sandbox)
    finally:
        sandbox.post("/_sandbox/limits", json={"salesforce_daily_limit": 100_000})
        sandbox.post("/_sandbox/faults", json={}).raise_for_status()

    failure = _upsert_failure(result, crm)
    text = failure.error.message
    if how == "allowance":  # the client stops itself at the reserve (daily_allowance_share)
        assert "Salesforce's daily API allowance reserve was reached (16 of 16 requests" in text
    else:
        assert "Salesforce refused requests: ConcurrentRequests (Concurrent API Requests) " \
               "Limit exceeded. (403 REQUEST_LIMIT_EXCEEDED" in text, text
    assert "sending stopped after" in text and "launch the run again" in text
    assert failure.user_failure_data.metadata["rate_limit_stopped"].value is True
    rows = _crm_rows(store, crm)
    assert len(rows) > 0 and rows["transient"].astype(bool).all()
    assert set(rows["error_code"]) <= {"REQUEST_LIMIT_EXCEEDED", "ALLOWANCE_RESERVE_REACHED"}
    if how == "allowance":
        # Below the quarantine threshold: the stop alone fails the run.
        assert len(rows) / len(_valid_keys(store, crm, data)) <= 0.5
        assert sent == 16  # 16 admitted; nothing after the reserve was reached
    else:
        assert sent == 1 and set(rows["source_key"]) == _valid_keys(store, crm, data)
