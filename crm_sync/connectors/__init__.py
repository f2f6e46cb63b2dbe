"""One module per CRM (payload building, limits, result parsing) on one shared core."""

from crm_sync.connectors.base import SANDBOX_URL, Connector, CrmResource
from crm_sync.connectors.superleap import SuperleapResource

# CRM name (as in the sync spec) -> its Dagster resource class.
RESOURCE_CLASSES: dict[str, type[CrmResource]] = {
    "superleap": SuperleapResource,
}

__all__ = ["SANDBOX_URL", "Connector", "CrmResource", "RESOURCE_CLASSES", "SuperleapResource"]
