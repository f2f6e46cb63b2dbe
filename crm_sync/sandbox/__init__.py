"""The CRM sandbox: a local HTTP server that speaks the four CRMs' bulk APIs as documented.

The app is loaded on first use of these names, not on import of the package: importing
`crm_sync.sandbox.server` (to start a sandbox process) then costs no route module.
"""

__all__ = ["create_app", "DEFAULT_TOKENS", "TOKEN_ENV"]


def __getattr__(name: str):
    if name in __all__:
        from crm_sync.sandbox import app

        return getattr(app, name)
    raise AttributeError(f"module 'crm_sync.sandbox' has no attribute {name!r}")
