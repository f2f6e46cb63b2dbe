"""The alert webhook sensor (crm_sync/pipeline/alert_sensor.py) on a real instance (SQLite,
run-sharded, as `dagster dev` keeps it) whose runs really ran against the sandbox, posting to
a real HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import pytest

from crm_sync.pipeline.alert_sensor import MAX_ATTEMPTS, SENSOR_NAME, WEBHOOK_ENV, alert_sensor
from crm_sync.pipeline.alerts import ALERT_CHECK, QUARANTINE_CHECK
from crm_sync.project import build_defs
from crm_sync_tests.bundled_spec import bundled_unlinked
from crm_sync_tests.test_alert_check import DAY, SYNC, leads, leads_assets

SECRET = "SECRET123"
HOOK_PATH = f"/hooks/T000/{SECRET}"


class Receiver:
    """A webhook on 127.0.0.1: every POST body it got, answered with `status`."""

    def __init__(self):
        self.bodies: list[dict] = []
        self.status = 200
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                length = int(self.headers.get("Content-Length", 0))
                receiver.bodies.append(
                    {"path": self.path, **json.loads(self.rfile.read(length))})
                self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}{HOOK_PATH}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver(monkeypatch):
    hook = Receiver()
    monkeypatch.setenv(WEBHOOK_ENV, hook.url)
    monkeypatch.setenv("DAGSTER_WEBSERVER_URL", "http://127.0.0.1:3000/")
    yield hook
    hook.close()


@pytest.fixture
def instance(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.DagsterInstance.local_temp(str(home)) as inst:
        yield inst


def logged(caplog, capfd) -> str:
    """Everything logged so far: Python logging (httpx, dagster) and the sensor's own log,
    which Dagster's console handler writes to stderr."""
    out, err = capfd.readouterr()
    return caplog.text + out + err


def evaluate(instance, cursor, prefix=()):
    """One tick of the sensor (of the syncs under `prefix`); its cursor."""
    sensor = alert_sensor([SYNC], prefix)
    with dg.build_sensor_context(instance=instance, cursor=cursor) as context:
        data = sensor.evaluate_tick(context)
    return data.cursor


def over_quarantine_threshold(tmp_path, instance):
    """A run that fails: 11 of 20 leads fail validation (threshold 50%): ERROR check."""
    resources = leads(tmp_path, rows=20, unknown=0, bad_emails=11)
    return dg.materialize(leads_assets(), partition_key=DAY, resources=resources,
                          instance=instance, raise_on_error=False)


def rejected_by_crm(tmp_path, instance):
    """A run that succeeds with 3 of 20 rows rejected by the CRM: WARN check."""
    return dg.materialize(leads_assets(), partition_key=DAY, instance=instance,
                          resources=leads(tmp_path, rows=20, unknown=3))


def test_failed_runs_and_failed_checks_are_posted_once(sandbox, store, tmp_path, instance,
                                                      receiver, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    cursor = evaluate(instance, None)  # starts at the instance's latest run event
    failed = over_quarantine_threshold(tmp_path, instance)
    assert not failed.success
    warned = rejected_by_crm(tmp_path, instance)
    assert warned.success
    # The sensor of another Component's syncs (key_prefix "other") posts none of these.
    evaluate(instance, cursor, prefix=("other",))
    assert receiver.bodies == []
    cursor = evaluate(instance, cursor)

    assert [(b["kind"], b["severity"], b["run_id"]) for b in receiver.bodies] == [
        ("run_failure", "ERROR", failed.run_id),
        ("check_failed", "ERROR", failed.run_id),
        ("check_failed", "WARN", warned.run_id)]
    run_failure, error_check, warn_check = receiver.bodies
    for body in receiver.bodies:
        assert (body["sync"], body["partition"], body["path"]) == (SYNC, DAY, HOOK_PATH)
        assert body["url"] == f"http://127.0.0.1:3000/runs/{body['run_id']}"
        assert isinstance(body["text"], str) and "\n" not in body["text"]
    assert run_failure["text"].startswith(f"crm_sync run {failed.run_id[:8]} (")
    assert "failed leads_to_superleap [2026-11-03]" in run_failure["text"]
    assert error_check["check"] == QUARANTINE_CHECK and "55%" in error_check["text"]
    assert warn_check["check"] == ALERT_CHECK
    assert "3 of 20 rows (15%) were rejected by Superleap" in warn_check["text"]

    again = evaluate(instance, cursor)  # nothing new: nothing posted
    assert len(receiver.bodies) == 3 and json.loads(again)["after"] == json.loads(cursor)["after"]
    assert SECRET not in again and SECRET not in cursor
    assert SECRET not in logged(caplog, capfd)


def test_a_webhook_that_answers_500_gets_the_message_again_next_tick(
        sandbox, store, tmp_path, instance, receiver, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    cursor = evaluate(instance, None)
    warned = rejected_by_crm(tmp_path, instance)
    receiver.status = 500
    held = evaluate(instance, cursor)
    assert len(receiver.bodies) == 1  # tried once
    assert json.loads(held) == {**json.loads(cursor), "attempts": 1}  # not moved past it
    logs = logged(caplog, capfd)
    assert "HTTP 500" in logs and SECRET not in logs and SECRET not in held

    receiver.status = 200
    done = evaluate(instance, held)
    assert [b["run_id"] for b in receiver.bodies] == [warned.run_id] * 2  # sent again
    assert json.loads(done)["attempts"] == 0
    evaluate(instance, done)
    assert len(receiver.bodies) == 2


def test_retries_are_bounded_and_a_dead_webhook_leaks_no_url(
        sandbox, store, tmp_path, instance, monkeypatch, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    cursor = evaluate(instance, None)
    rejected_by_crm(tmp_path, instance)
    dead = Receiver()
    dead.close()  # nothing listens at its port any more
    monkeypatch.setenv(WEBHOOK_ENV, dead.url)
    for attempt in range(1, MAX_ATTEMPTS):
        cursor = evaluate(instance, cursor)
        assert json.loads(cursor)["attempts"] == attempt
    cursor = evaluate(instance, cursor)  # the last attempt: given up, the cursor moves on
    assert json.loads(cursor)["attempts"] == 0 and json.loads(cursor)["after"] > 0
    logs = logged(caplog, capfd)
    assert "ConnectionRefusedError" in logs and "given up" in logs
    assert SECRET not in logs and SECRET not in cursor


def test_without_the_webhook_nothing_is_posted_and_the_cursor_waits(
        sandbox, store, tmp_path, instance, monkeypatch):
    monkeypatch.delenv(WEBHOOK_ENV, raising=False)
    cursor = evaluate(instance, None)
    rejected_by_crm(tmp_path, instance)
    assert evaluate(instance, cursor) == cursor


def test_the_code_location_registers_it_on_only_when_the_webhook_is_set(monkeypatch):
    monkeypatch.delenv(WEBHOOK_ENV, raising=False)
    sensor = build_defs(bundled_unlinked()).resolve_sensor_def(SENSOR_NAME)
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED
    monkeypatch.setenv(WEBHOOK_ENV, f"http://127.0.0.1:9{HOOK_PATH}")
    sensor = build_defs(bundled_unlinked()).resolve_sensor_def(SENSOR_NAME)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert SECRET not in (sensor.description or "")
    prefixed = build_defs(bundled_unlinked(), key_prefix="crm").resolve_sensor_def(
        f"crm__{SENSOR_NAME}")
    assert prefixed.default_status == dg.DefaultSensorStatus.RUNNING
