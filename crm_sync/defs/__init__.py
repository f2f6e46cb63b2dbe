"""The clone's defs folder (`[tool.dg.project] defs_module`): one CrmSync Component,
syncs/defs.yaml, that reads the project's syncs.yaml."""
