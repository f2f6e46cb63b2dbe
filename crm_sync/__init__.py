"""crm_sync: keep CRMs in sync with your own tables, from Dagster.

    import crm_sync
    defs = crm_sync.build_defs(spec="syncs.yaml", store=".crm_sync/crm_sync.sqlite")
"""

__all__ = ["build_defs"]


def __getattr__(name: str):
    # Loaded on first use: `import crm_sync.sandbox` (the emulator's own process) and the CLI
    # must not import Dagster and every asset module just to reach the package.
    if name == "build_defs":
        from crm_sync.project import build_defs

        return build_defs
    raise AttributeError(f"module 'crm_sync' has no attribute {name!r}")
