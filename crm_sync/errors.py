"""Every exception crm_sync raises, in one place, sorted into three kinds (as singer-sdk's
`exceptions.py` sorts a tap's failures):

- **fatal** (`FatalError`): the sync cannot work as configured: its spec, its source table,
  its token, its CRM's address or the CRM's refusal of the whole sync. The run fails with one
  readable message saying what to fix; nothing is marked as synced. Launching the run again
  without a fix fails the same way.
- **retriable** (`RetriableError`): something that may pass: a request that kept failing after
  its retries, a CRM allowance spent for the day, another run holding the partition. The rows
  concerned stay in the quarantine as *transient* (or the partition is skipped) and the next
  run sends them again; nothing needs fixing.
- **one bad record** (`BadRecordError`): one row the source or the CRM refuses (a malformed
  email, a duplicate key, the CRM's per-record error). This kind is not raised: a bad record
  must not stop its batch, so it travels as a value, the connector's `Outcome` (`ok` false,
  `error_code`, `transient` false) or a validation failure, and ends in the quarantine with
  its error code while the other rows go on. The class names the kind for code that has to
  raise one (a parser of a single record).

Every class here derives from `CrmSyncError` and from the builtin it always had (`SpecError`
is a `ValueError`, `SourceError` a `RuntimeError`, ...), so `except ValueError` in the CLI and
`except CrmSyncError` in a caller both catch what they should. The modules that raise them
re-export them under their old names (`crm_sync.spec.SpecError` is this `SpecError`).

This module imports nothing heavy (no dagster, no httpx, no connector), so any module may
import it. Turning a fatal error into a Dagster failure message is crm_sync/pipeline/failures.py.
"""

from __future__ import annotations

import importlib
from datetime import datetime, timezone


class CrmSyncError(Exception):
    """Any failure crm_sync itself names; `except CrmSyncError` catches all three kinds."""


# -- the three kinds ---------------------------------------------------------------------------
class FatalError(CrmSyncError):
    """The sync cannot work until someone fixes its spec, source, token or CRM: the run fails
    with a message naming the sync and what to fix; nothing is marked as synced."""


class RetriableError(CrmSyncError):
    """A failure that may pass by itself: the rows concerned stay transient in the quarantine
    (or the partition is skipped) and the next run sends them again."""


class BadRecordError(CrmSyncError):
    """One record refused by validation or by the CRM. Not raised today: a bad record is an
    `Outcome` / quarantine entry with its error code, so its batch goes on; see the module."""


# -- fatal: the sync spec and the source -------------------------------------------------------
class SpecError(FatalError, ValueError):
    """The sync spec is invalid; the message names the sync and the field. The user sees it
    when the code location loads (the Dagster UI, `dagster definitions validate`, the CLI):
    fix syncs.yaml (or $CRM_SYNC_SPEC) as the message says and reload."""


class SourceError(FatalError, RuntimeError):
    """A source table cannot be read (missing file, no `updated_at`, no readable line, SQL
    error: the driver's own message, the URL and its password redacted, an unset connection
    variable); the message names the table and what to do. The run's upsert fails before anything
    is sent: fix the table or the source resource's settings and launch the run again."""


class CsvFileError(FatalError, ValueError):
    """A CSV source file as a whole cannot be read (its header, its encoding). The user sees
    it as the `SourceError` naming the table and the line: save the file as UTF-8 with one
    header line of distinct column names. (One malformed line is a bad record instead.)"""


class SourceTableError(FatalError, ValueError):
    """The source table itself is unusable (a mapped column is missing, a column-wide check
    fails). The validation step fails naming the sync and the columns: fix the table or the
    sync spec's field mapping and launch the run again."""


# -- fatal: the CRM ----------------------------------------------------------------------------
class FatalCrmError(FatalError, RuntimeError):
    """The CRM refused the whole sync (401 token refused, 403, unknown object type): never
    retried. The run fails with one `dagster.Failure` "<sync>: <CRM> refused the sync: ...";
    fix the token, object or spec and launch the run again."""


class CrmUnreachable(FatalCrmError):
    """No request of the run ever reached the CRM (connection refused, DNS, TLS handshake),
    even after the retries: the base URL is wrong or the CRM is down. Rows are not quarantined
    one by one as transient failures; the run fails ("cannot reach <CRM> at <url>: check
    <CRM>_BASE_URL") and nothing is marked as synced. Launch it again once the CRM answers."""

    def __init__(self, message: str, base_url: str, reason: str = ""):
        super().__init__(message)
        self.base_url, self.reason = base_url, reason


class BadBaseUrl(FatalCrmError):
    """The CRM resource's base URL is no http(s) URL (`127.0.0.1:8765`): refused before any
    request, since every request would fail the same way. Set <CRM>_BASE_URL with its scheme
    and launch the run again."""

    def __init__(self, message: str, base_url: str):
        super().__init__(message)
        self.base_url = base_url


class MissingToken(FatalCrmError):
    """The CRM resource has no token (its environment variable is not set): the run fails
    naming the variable before anything is sent. Set it where the Dagster webserver and daemon
    run and launch the run again."""

    def __init__(self, message: str, env_var: str | None):
        super().__init__(message)
        self.env_var = env_var


class TokenRefreshFailed(FatalCrmError):
    """The CRM's OAuth token endpoint refused to issue an access token (a wrong client secret, a
    revoked refresh token, an unusable private key) or could not be reached: the run fails
    with one message naming the CRM and the environment variables to check, never their
    values (crm_sync/connectors/oauth.py)."""

    def __init__(self, message: str, crm: str, check: str):
        super().__init__(message)
        self.crm, self.check = crm, check


class SchemaUnavailable(FatalCrmError):
    """The CRM documents no schema endpoint for its objects (Brevo custom objects): its fields
    are the ones the sync spec lists (`known_attributes`)."""

    def __init__(self, message: str, crm: str):
        super().__init__(message)
        self.crm = crm


# -- fatal: the sync store ------------------------------------------------------------------
class StoreError(FatalError, RuntimeError):
    """The sync store cannot be used as configured: its location (the store resource's
    `path`, $CRM_SYNC_STORE) is no SQLite path or supported URL, or its schema is newer than
    this crm_sync. The message names the store (a URL without its password)."""


class StoreUnreachable(StoreError):
    """The sync store's PostgreSQL server refused or did not answer the connection; the
    message names host, port, database and user (never the password) and the driver's reason."""


class StoreCopyRefused(StoreError):
    """`crm-sync store copy` refused to start: the destination store already holds rows, the
    source store does not exist, or both are the same store. Nothing was written."""


# -- fatal: the run's own safety checks --------------------------------------------------------
class MassDeleteRefused(FatalError, RuntimeError):
    """The mirror step would delete more than the sync's mirror_max_delete_share of its
    records; nothing was deleted. The run fails with the counts: check that the source is
    complete, then run once with `allow_mass_delete` (or raise the share) if it is."""


class AccountingError(FatalError, AssertionError):
    """created + updated + unchanged + failed did not add up to the rows handed in (or the
    connector answered for other records than it was sent): a bug in crm_sync, so the run
    fails rather than record a state it cannot vouch for. Report it with the message."""


# -- retriable ---------------------------------------------------------------------------------
class TransientFailure(RetriableError, RuntimeError):
    """A request that kept failing for reasons that may pass (retries exhausted: timeouts,
    5xx, dropped connections). Its batch's rows end in the quarantine as transient with the
    error code (TIMEOUT, HTTP_503, ...) and the next run sends them again."""

    def __init__(self, message: str, status: int | None, attempts: int, code: str,
                 raw: str | None = None):
        super().__init__(message)
        self.status, self.attempts, self.code = status, attempts, code
        self.raw = raw  # the last answer, when it could not be understood


class AllowanceReserveReached(RetriableError, RuntimeError):
    """The CRM's daily allowance is spent (HubSpot) or down to the configured reserve
    (Salesforce's `daily_allowance_share`): stop sending. The rows not sent end transient
    (ALLOWANCE_RESERVE_REACHED) and a later run, once the allowance resets, sends them."""


class PartitionBusy(RetriableError):
    """Another live run holds the sync partition's lease. This run sends nothing and fails
    "skipped: partition P of sync S is being synced by another run (owner O, since T)"; the
    CLI counts it as skipped. Launch it again later, or wait longer (`lease_wait_seconds`,
    the CLI's `--lease-wait`)."""

    def __init__(self, sync: str, partition: str, holder: dict):
        self.sync, self.partition, self.holder = sync, partition, holder
        super().__init__(f"skipped: {self.held_by(sync, partition, holder)}")

    @staticmethod
    def held_by(sync: str, partition: str, holder: dict) -> str:
        """Who holds the partition, as the waiting run's log and the failure name it."""
        since = datetime.fromtimestamp(holder["acquired_at"], timezone.utc)
        return (f"partition {partition} of sync {sync} is being synced by another run (owner "
                f"{holder['owner']}, since {since:%Y-%m-%d %H:%M:%S} UTC)")


# What this module held before it held the errors: the Dagster failure builders and the CRM
# labels, for code written against the old layout. Loaded on first use only, so that importing
# this module never loads dagster or the connectors.
_MOVED = {"crm_failure": "crm_sync.pipeline.failures",
          "crm_stage_failure": "crm_sync.pipeline.failures",
          "readable_crm_errors": "crm_sync.pipeline.failures",
          "exc_attempts": "crm_sync.pipeline.failures",
          "crm_label": "crm_sync.connectors", "CRM_LABELS": "crm_sync.connectors.core"}


def __getattr__(name: str):
    if name in _MOVED:
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
