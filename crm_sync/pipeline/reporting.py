"""Small text renderings for Dagster metadata and the CLI."""

from __future__ import annotations

import pandas as pd


def _cell(value) -> str:
    text = "" if value is None or (isinstance(value, float) and value != value) else str(value)
    text = text.replace("\n", " ").replace("|", "\\|")
    return text if len(text) <= 120 else text[:117] + "..."


def markdown_table(frame: pd.DataFrame, sensitive: set[str] | None = None) -> str:
    """A markdown table; columns named in `sensitive` are masked."""
    if frame is None or frame.empty:
        return "_none_"
    sensitive = sensitive or set()
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in frame.itertuples(index=False):
        cells = ["***" if c in sensitive else _cell(v) for c, v in zip(cols, row)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def text_table(rows: list[dict], columns: list[str]) -> str:
    """A plain aligned table for the terminal."""
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) if rows else len(c)
              for c in columns}
    line = "  ".join(c.ljust(widths[c]) for c in columns)
    out = [line, "  ".join("-" * widths[c] for c in columns)]
    for r in rows:
        out.append("  ".join(str(r.get(c, "")).rjust(widths[c]) if isinstance(r.get(c), int)
                             else str(r.get(c, "")).ljust(widths[c]) for c in columns))
    return "\n".join(out)
