"""The CRM sandbox: a local HTTP server that speaks the four CRMs' bulk APIs as documented."""

from crm_sync.sandbox.app import DEFAULT_TOKENS, TOKEN_ENV, create_app

__all__ = ["create_app", "DEFAULT_TOKENS", "TOKEN_ENV"]
