"""crm_sync: keep CRMs in sync with your own tables, from Dagster.

In a `dg` project: `dg scaffold defs crm_sync.CrmSync my_syncs` (the CrmSync Component,
crm_sync/component.py). As a library:

    import crm_sync
    defs = crm_sync.build_defs(spec="syncs.yaml", store=".crm_sync/crm_sync.sqlite")
"""

__all__ = ["CrmSync", "build_defs"]


def __getattr__(name: str):
    # Loaded on first use: `import crm_sync.sandbox` (the emulator's own process) and the CLI
    # must not import Dagster and every asset module just to reach the package.
    if name == "build_defs":
        from crm_sync.project import build_defs

        return build_defs
    if name == "CrmSync":  # `type: crm_sync.CrmSync` in a defs.yaml
        from crm_sync.component import CrmSync

        return CrmSync
    raise AttributeError(f"module 'crm_sync' has no attribute {name!r}")


def __dir__():
    # dg finds a registry module's components by dir() (dagster's package_entry.py).
    return sorted({*globals(), *__all__})
