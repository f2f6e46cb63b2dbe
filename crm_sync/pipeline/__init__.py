"""The Dagster side: assets, jobs/schedules/sensors, resources, failures, metadata,
and the in-process runner of the CLI's backfill."""
