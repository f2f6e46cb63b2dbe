"""`crm_sync_alert_webhook`: a sensor that posts each failed run of the code location and each
failed crm_sync asset check (`quarantine_share_within_threshold`, ERROR, on validated_<sync>;
`crm_rejections_within_alert_threshold`, WARN, on the upsert asset: crm_sync/pipeline/alerts.py)
as one JSON message to the webhook in $CRM_SYNC_ALERT_WEBHOOK:

    {"text": "<one line>", "kind": "run_failure" | "check_failed", "sync": ..., "partition": ...,
     "run_id": ..., "severity": "ERROR" | "WARN", "check": ..., "url": <run page or null>}

`text` makes it a Slack incoming-webhook message as it is (Teams, Mattermost, ... read the same
key or take the JSON as it is). `url`: the run's page when $DAGSTER_WEBSERVER_URL is set.

How it reads the instance: the run status changes RUN_FAILURE and RUN_SUCCESS in the order of
their storage ids (`instance.fetch_run_status_changes`, public; the index shard holds them for
every storage, run-sharded SQLite included), and for each finished run its check evaluations
(`instance.get_records_for_run`): when a run has ended, every check of it is final. The cursor
is (last run event handled, messages of the next one already sent, failed attempts).

Why not `dg.run_failure_sensor`: a run status sensor moves its cursor past a run even when its
function raises (dagster/_core/definitions/run_status_sensor_definition.py, the
`context.update_cursor` after `except RunStatusSensorExecutionError`), so a webhook that is down
would lose the alert. Here a POST that fails (connection error, non-2xx) keeps the cursor on
that message; the next tick sends it again, up to MAX_ATTEMPTS ticks, then it is given up
(logged). The URL is a secret (a Slack / Teams webhook URL grants posting): read from the
environment at each evaluation, never logged, never in the cursor or in an exception's text.

On by default (DefaultSensorStatus.RUNNING) when $CRM_SYNC_ALERT_WEBHOOK is set in the code
location's environment, else STOPPED. A first evaluation starts from the instance's latest run
event: it does not post the history of runs before it.
"""

from __future__ import annotations

import json
import os
from typing import NamedTuple
import urllib.error
import urllib.parse
import urllib.request

import dagster as dg
from dagster import DagsterEventType

from crm_sync.pipeline.alerts import ALERT_CHECK, QUARANTINE_CHECK
from crm_sync.pipeline.prefix import prefixed_name

SENSOR_NAME = "crm_sync_alert_webhook"
WEBHOOK_ENV = "CRM_SYNC_ALERT_WEBHOOK"
WEBSERVER_ENV = "DAGSTER_WEBSERVER_URL"
CHECKS = frozenset({ALERT_CHECK, QUARANTINE_CHECK})
STREAMS = (DagsterEventType.RUN_FAILURE, DagsterEventType.RUN_SUCCESS)
MAX_ATTEMPTS = 5  # ticks a message is tried before it is given up
FETCH = 25  # run events read per stream and tick
TIMEOUT_SECONDS = 10


def _cursor(raw: str | None) -> dict | None:
    try:
        value = json.loads(raw) if raw else None
    except ValueError:
        return None
    return value if isinstance(value, dict) and isinstance(value.get("after"), int) else None


def _latest_id(instance) -> int:
    ids = [r.storage_id for stream in STREAMS
           for r in instance.fetch_run_status_changes(stream, limit=1).records]
    return max(ids, default=-1)


def _run_events(instance, after: int) -> list:
    """The run events after `after`, in storage id order, up to the point both streams were
    read to (a stream cut at FETCH may hold older events than the other's last)."""
    records, cap = [], None
    for stream in STREAMS:
        result = instance.fetch_run_status_changes(
            dg.RunStatusChangeRecordsFilter(event_type=stream, after_storage_id=after),
            limit=FETCH, ascending=True)
        records += result.records
        if len(result.records) == FETCH:
            last = result.records[-1].storage_id
            cap = last if cap is None else min(cap, last)
    return sorted((r for r in records if cap is None or r.storage_id <= cap),
                  key=lambda r: r.storage_id)


class Scope(NamedTuple):
    """The syncs one sensor reports on, and their key prefix (a CrmSync Component's)."""
    syncs: frozenset[str]
    prefix: tuple[str, ...] = ()


def _sync_of(parts, scope: Scope) -> str | None:
    """The sync of the scope an asset key's path, a step key or a job name (split on `__`)
    belongs to; None for another prefix's or no sync's."""
    *prefix, name = parts or [""]
    if tuple(prefix) != scope.prefix:
        return None
    for candidate in (name, name.removeprefix("validated_"), name.removeprefix("sync_"),
                      name.removesuffix("_replay"), name.removesuffix("_mirror")):
        if candidate in scope.syncs:
            return candidate
    return None


def _prefixed(name: str) -> bool:
    """A job or step name under a key prefix (Dagster's own jobs start with `__`)."""
    return "__" in name.lstrip("_")


def _ours(context, run) -> bool:
    """A run of this code location (as dg.run_failure_sensor decides), or one launched outside
    any code location (in process: a script, the CLI) on the same instance."""
    origin, here = run.remote_job_origin, context.code_location_origin
    if origin is None or here is None:
        return True
    return (origin.repository_origin.code_location_origin.location_name == here.location_name
            and origin.repository_origin.repository_name == context.repository_name)


def _link(run_id: str) -> str | None:
    base = os.environ.get(WEBSERVER_ENV, "").rstrip("/")
    return f"{base}/runs/{run_id}" if base else None


def _failure_reason(instance, run_id: str, scope: Scope) -> tuple[str, str | None, bool]:
    """(the first failed step's one-line reason, the scope's sync of the failed steps, whether
    a failed step is under a key prefix)."""
    reason, sync, prefixed = "", None, False
    for record in instance.get_records_for_run(
            run_id, of_type=DagsterEventType.STEP_FAILURE).records:
        entry = record.event_log_entry
        sync = sync or _sync_of((entry.step_key or "").split("__"), scope)
        prefixed = prefixed or _prefixed(entry.step_key or "")
        data = entry.dagster_event.step_failure_data
        user = data.user_failure_data
        text = (user.description if user and user.description else
                data.error.message if data.error else "")
        reason = reason or (text.strip().splitlines() or [""])[0][:300]
    return reason, sync, prefixed


def _run_failure(instance, run, scope: Scope) -> dict | None:
    """The message of a failed run of the scope's syncs, or of no sync's when the scope has no
    prefix (a failure under another prefix is that prefix's sensor's); else None."""
    reason, sync, prefixed = _failure_reason(instance, run.run_id, scope)
    sync = _sync_of(run.job_name.split("__"), scope) or sync  # sync_<name>, replay_quarantine
    mine = sync is not None or run.job_name == "__".join([*scope.prefix, "replay_quarantine"])
    if not mine and (scope.prefix or prefixed or _prefixed(run.job_name)):
        return None
    partition = run.tags.get("dagster/partition")
    where = "".join(f" {part}" for part in (sync, partition and f"[{partition}]") if part)
    return {"text": f"crm_sync run {run.run_id[:8]} ({run.job_name}) failed{where}: "
                    f"{reason or 'see the run'}",
            "kind": "run_failure", "sync": sync, "partition": partition,
            "run_id": run.run_id, "severity": "ERROR", "check": None, "url": _link(run.run_id)}


def _failed_checks(instance, run, scope: Scope) -> list[dict]:
    messages = []
    for record in instance.get_records_for_run(
            run.run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION).records:
        evaluation = record.event_log_entry.dagster_event.event_specific_data
        sync = _sync_of(evaluation.asset_key.path, scope)
        if evaluation.check_name not in CHECKS or evaluation.passed or sync is None:
            continue
        asset = evaluation.asset_key.to_user_string()
        partition = evaluation.partition or run.tags.get("dagster/partition")
        severity = evaluation.severity.value
        messages.append({
            "text": f"{severity} check {evaluation.check_name} failed on {asset}"
                    + (f" [{partition}]" if partition else "") + ": "
                    + (evaluation.description or "see the run").splitlines()[0][:300],
            "kind": "check_failed", "sync": sync,
            "partition": partition, "run_id": run.run_id, "severity": severity,
            "check": evaluation.check_name, "url": _link(run.run_id)})
    return messages


def _messages(context, record, scope: Scope) -> list[dict]:
    instance = context.instance
    run = instance.get_run_by_id(record.event_log_entry.run_id)
    if run is None or not _ours(context, run):
        return []
    failed = record.event_log_entry.dagster_event_type == DagsterEventType.RUN_FAILURE
    failure = _run_failure(instance, run, scope) if failed else None
    return ([failure] if failure else []) + _failed_checks(instance, run, scope)


def post(url: str, message: dict, log) -> bool:
    """POST one message; False (logged, without the URL) when it did not arrive. urllib, not
    httpx: httpx logs every request's URL (logger `httpx`, INFO), and this URL is a secret."""
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        log.warning(f"alert webhook: ${WEBHOOK_ENV} is not an http(s) URL, not delivered")
        return False
    request = urllib.request.Request(url, data=json.dumps(message).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:  # scheme checked above: no file:// or other opener
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS):  # nosec B310
            return True
    except urllib.error.HTTPError as exc:  # non-2xx (redirects are followed)
        log.warning(f"alert webhook (${WEBHOOK_ENV}) answered HTTP {exc.code}, not delivered")
    except (OSError, ValueError) as exc:  # its text may hold the URL: only its kind is logged
        reason = getattr(exc, "reason", None)
        kind = type(reason).__name__ if isinstance(reason, BaseException) else type(exc).__name__
        log.warning(f"alert webhook (${WEBHOOK_ENV}): {kind}, not delivered")
    return False


def _deliver(context, url: str, cursor: dict, scope: Scope) -> tuple[dict, int]:
    """Send what came after `cursor`; (the new cursor, messages delivered)."""
    after, done, attempts = cursor["after"], cursor.get("sent", 0), cursor.get("attempts", 0)
    delivered = 0
    for record in _run_events(context.instance, after):
        messages = _messages(context, record, scope)
        while done < len(messages):
            if post(url, messages[done], context.log):
                delivered, done, attempts = delivered + 1, done + 1, 0
                continue
            attempts += 1
            if attempts < MAX_ATTEMPTS:
                context.log.warning(f"retried next tick (attempt {attempts}/{MAX_ATTEMPTS})")
                return {"after": after, "sent": done, "attempts": attempts}, delivered
            context.log.error(f"alert {messages[done]['kind']} of run "
                              f"{messages[done]['run_id']} given up after {attempts} attempts")
            done, attempts = done + 1, 0
        after, done = record.storage_id, 0
    return {"after": after, "sent": 0, "attempts": 0}, delivered


def alert_sensor(sync_names, prefix=()) -> dg.SensorDefinition:
    """The webhook sensor of the syncs `sync_names` under the key `prefix` (a CrmSync
    Component's key_prefix: then its name is `<prefix>__crm_sync_alert_webhook`)."""
    scope = Scope(frozenset(sync_names), tuple(prefix))

    @dg.sensor(
        name=prefixed_name(scope.prefix, SENSOR_NAME),
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING if os.environ.get(WEBHOOK_ENV)
        else dg.DefaultSensorStatus.STOPPED,
        description=f"Posts failed runs and failed crm_sync checks (quarantine share, CRM "
                    f"rejections) to the webhook in ${WEBHOOK_ENV} (Slack-compatible JSON).",
    )
    def _alerts(context: dg.SensorEvaluationContext):
        cursor = _cursor(context.cursor)
        if cursor is None:
            start = {"after": _latest_id(context.instance), "sent": 0, "attempts": 0}
            return dg.SensorResult(skip_reason="started: alerts from the next run on",
                                   cursor=json.dumps(start))
        url = dg.EnvVar(WEBHOOK_ENV).get_value()
        if not url:
            return dg.SkipReason(f"${WEBHOOK_ENV} is not set: nothing posted")
        new, delivered = _deliver(context, url, cursor, scope)
        return dg.SensorResult(skip_reason=f"{delivered} alert(s) posted",
                               cursor=json.dumps(new))

    return _alerts
