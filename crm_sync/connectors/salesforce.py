"""Salesforce connector (filled in by the "Four CRM connectors" issue)."""

RESOURCE = None
