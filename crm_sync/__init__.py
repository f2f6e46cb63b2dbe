"""crm_sync: keep CRMs in sync with your own tables, from Dagster."""
