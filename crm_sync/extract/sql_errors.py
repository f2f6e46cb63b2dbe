"""A source's error as its driver said it, fit to show: without the connection URL or its
password (SQLAlchemy), without the megabytes-long line it quotes (DuckDB)."""

from __future__ import annotations


def sql_error_text(exc: Exception, url: str | None) -> str:
    """A SQLAlchemy error as the driver said it (its first lines, not the statement SQLAlchemy
    appends), without the URL or its password."""
    from crm_sync.state.masking import MASK, redact_text

    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).split("\n[SQL:")[0].strip()
    text = f"{type(orig or exc).__name__}: {text}"[:2000]
    secrets = [url] if url else []
    if url:
        import sqlalchemy as sa

        try:
            password = sa.engine.make_url(url).password
        except Exception:  # nosec B110  # an unparsable URL: the whole URL is hidden anyway
            password = None
        if password:
            secrets.append(str(password))
    text = redact_text(text, secrets)
    return text.replace(MASK + MASK, MASK)


def duckdb_error_text(exc: Exception) -> str:
    """DuckDB's error text without the offending line it quotes (it may be megabytes long and
    hold the row's values)."""
    lines = [line for line in str(exc).splitlines() if not line.startswith("Original Line:")]
    return "\n".join(lines)[:2000]
