"""Dagster failures a person can act on: what a run shows in the Dagster UI when a sync cannot
work (the errors themselves, and their kinds, are crm_sync/errors.py).

A missing token, an unreachable CRM or a refusal of the whole sync (401, unknown object type:
`FatalCrmError`) fail the run with one `dagster.Failure` whose description names the sync and
what to do, without the HTTP library's traceback (`raise ... from None`). Nothing is marked as
synced: the sync state is only ever written for rows the CRM confirmed.

A CRM stage that ran but failed (`crm_stage_failure`): more rows failed than the sync's
`quarantine_threshold`, every row failed the same way, or the CRM asked to wait longer than
`max_retry_after_seconds`. Its outcomes are recorded first (failed rows in the quarantine,
transient ones sent again by the next run), then the run fails the same readable way.

Credentials never reach these texts: every CRM answer is redacted once, in the HTTP core
(crm_sync/connectors/core.py), before any message is built from it.
"""

import functools
import json
import os

import dagster as dg

from crm_sync.connectors import crm_label
from crm_sync.errors import BadBaseUrl, CrmUnreachable, FatalCrmError, MissingToken
from crm_sync.spec import SyncSpec


def exc_attempts(resource) -> str:
    attempts = getattr(resource, "max_attempts", None)
    return f"{attempts} attempts per request" if attempts else "after retries"


def crm_failure(sync: SyncSpec, resource, exc: FatalCrmError) -> dg.Failure:
    """The one readable failure of a sync whose CRM refused or could not be reached."""
    label = crm_label(sync.crm)
    base_url_env = f"{sync.crm.upper()}_BASE_URL"
    base_url = getattr(resource, "base_url", None) or os.environ.get(base_url_env, "?")
    if isinstance(exc, BadBaseUrl):
        text = (f"{exc} (nothing was sent): set {base_url_env} to {label}'s API address with "
                f"its scheme, e.g. http://{exc.base_url} or https://{exc.base_url}, and launch "
                f"the run again.")
    elif isinstance(exc, CrmUnreachable):
        text = (f"cannot reach {label} at {exc.base_url}: check {base_url_env} / is the CRM "
                f"up? ({exc.reason or exc}, {exc_attempts(resource)}). Nothing was marked as "
                f"synced; launch the run again once {label} answers.")
    elif isinstance(exc, MissingToken):
        env = exc.env_var or f"the {label} token"
        text = (f"no {label} API token: {env} is not set. Set it in the environment of the "
                f"Dagster webserver and daemon (`crm-sync ui` sets the sandbox's tokens) and "
                f"launch the run again.")
    else:
        text = (f"{label} ({base_url}) refused the sync: {exc}. Nothing was marked as synced; "
                f"fix what {label} refused (token, object or sync spec) and launch the run "
                f"again.")
    return dg.Failure(
        description=f"{sync.name}: {text}",
        metadata={"sync": sync.name, "crm": sync.crm, "object": sync.object,
                  "base_url": str(base_url), "error": type(exc).__name__},
        allow_retries=False,
    )


# What to check, by the error code most rows failed with.
_ENDPOINT_CODES = {"HTTP_404", "HTTP_405", "HTTP_501"}
_OUTAGE_CODES = {"CONNECTION_DROPPED", "CONNECTION_ERROR", "TIMEOUT", "MALFORMED_RESPONSE",
                 "HTTP_500", "HTTP_502", "HTTP_503", "HTTP_504"}


def _what_to_check(sync: SyncSpec, resource, code: str) -> str:
    label, env = crm_label(sync.crm), f"{sync.crm.upper()}_BASE_URL"
    base_url = getattr(resource, "base_url", None) or os.environ.get(env, "?")
    if code in _ENDPOINT_CODES:
        return (f"the server at {base_url} does not take {label}'s API requests: check that "
                f"{env} points at {label}'s API")
    if code in _OUTAGE_CODES:
        return (f"is {label} up and answering? Check {env} ({base_url}), the resource's "
                f"timeout_seconds and {label}'s status page")
    if code == "RATE_LIMITED":
        return (f"{label} kept refusing requests as too many: lower the resource's "
                f"requests_per_window or max_concurrency")
    return (f"see the rows' reasons: SELECT * FROM quarantine WHERE sync = '{sync.name}' "  # nosec B608
            f"AND stage = 'crm'")


def crm_stage_failure(sync: SyncSpec, resource, stats) -> dg.Failure | None:
    """The run's failure when its CRM stage (`stats`: the connector's Stats) failed over the
    sync's threshold, failed every row the same way, or stopped on a long Retry-After; None
    when it did its job. Called after the outcomes are recorded."""
    if stats is None or not stats.records:
        return None
    stop = stats.rate_limit_stop
    limit = getattr(stats, "limit_stop", None)  # a limit with no time to wait (Salesforce)
    share = stats.records_failed / stats.records
    alike = stats.records_failed == stats.records and len(stats.failed_by_code) == 1
    over = share > sync.quarantine_threshold
    if stop is None and limit is None and not over and not alike:
        return None
    label = crm_label(sync.crm)
    code = stats.failed_by_code.most_common(1)[0][0]
    cause = stats.failure_messages.get(code, "")[:300]
    if stop is not None:
        limit = getattr(resource, "max_retry_after_seconds", None)
        text = (f"{stop.message}, longer than the resource's max_retry_after_seconds "
                f"({limit:g} s): sending stopped after {stats.records - stats.records_failed} of "
                f"{stats.records} rows; launch the run again after that time (or raise "
                f"max_retry_after_seconds)")
    elif limit is not None:
        text = (f"{limit}: sending stopped after {stats.records - stats.records_failed} of "
                f"{stats.records} rows; launch the run again once the org has API requests "
                f"left (see its Sforce-Limit-Info / limits)")
    else:
        how = (f"{stats.records_failed} of {stats.records} rows sent to {label} failed "
               f"({share:.0%}, over the sync's quarantine_threshold of "
               f"{sync.quarantine_threshold:.0%})" if over else
               f"every one of the {stats.records} rows sent to {label} failed the same way")
        check = _what_to_check(sync, resource, code)
        text = f"{how}: {code} ({cause}). {check[0].upper()}{check[1:]}"
    text += (f". {stats.records_transient} failed row(s) stay in the quarantine as transient and "
             f"are sent again by the next run.")
    metadata = {"sync": sync.name, "crm": sync.crm, "rows_sent": stats.records,
                "rows_failed": stats.records_failed,
                "rows_failed_transient": stats.records_transient,
                "failed_by_code": json.dumps(dict(stats.failed_by_code.most_common())),
                "quarantine_threshold": dg.MetadataValue.float(sync.quarantine_threshold),
                "rate_limit_stopped": dg.MetadataValue.bool(stop is not None or
                                                            limit is not None)}
    if stop is not None:
        metadata["retry_after_seconds"] = dg.MetadataValue.float(stop.retry_after_seconds)
        metadata["rate_limited_until"] = stop.until.isoformat()
    return dg.Failure(description=f"{sync.name}: {text}", metadata=metadata,
                      allow_retries=False)


def readable_crm_errors(sync: SyncSpec):
    """Decorate an asset's compute function: a `FatalCrmError` becomes `crm_failure`."""

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(context, *args, **kwargs):
            try:
                return fn(context, *args, **kwargs)
            except FatalCrmError as exc:
                resource = getattr(context.resources, sync.crm, None)
                raise crm_failure(sync, resource, exc) from None

        return wrapper

    return decorate
