"""Errors a person can act on: what a run shows in the Dagster UI when a sync cannot work.

A missing token, an unreachable CRM or a refusal of the whole sync (401, unknown object type:
`FatalCrmError`) fail the run with one `dagster.Failure` whose description names the sync and
what to do, without the HTTP library's traceback (`raise ... from None`). Nothing is marked as
synced: the sync state is only ever written for rows the CRM confirmed.
"""

import functools
import os

import dagster as dg

from crm_sync.connectors.core import CrmUnreachable, FatalCrmError, MissingToken
from crm_sync.spec import SyncSpec

CRM_LABELS = {"superleap": "Superleap", "brevo": "Brevo", "hubspot": "HubSpot",
              "salesforce": "Salesforce"}


def crm_label(crm: str) -> str:
    return CRM_LABELS.get(crm, crm)


def exc_attempts(resource) -> str:
    attempts = getattr(resource, "max_attempts", None)
    return f"{attempts} attempts per request" if attempts else "after retries"


def crm_failure(sync: SyncSpec, resource, exc: FatalCrmError) -> dg.Failure:
    """The one readable failure of a sync whose CRM refused or could not be reached."""
    label = crm_label(sync.crm)
    base_url_env = f"{sync.crm.upper()}_BASE_URL"
    base_url = getattr(resource, "base_url", None) or os.environ.get(base_url_env, "?")
    if isinstance(exc, CrmUnreachable):
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
    token = getattr(resource, "token", None)
    if isinstance(token, str) and token:
        text = text.replace(token, "***")
    return dg.Failure(
        description=f"{sync.name}: {text}",
        metadata={"sync": sync.name, "crm": sync.crm, "object": sync.object,
                  "base_url": str(base_url), "error": type(exc).__name__},
        allow_retries=False,
    )


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
