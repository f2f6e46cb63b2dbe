"""CSV source files: read with the header's own columns, so that one malformed line (a field
too many or too few, a line over the size limit) is set aside with its line number instead of
making the whole table unreadable (DuckDB's sniffer then guesses a wrong dialect, and a line
over the limit fails even the sniffing).

The header is parsed here (Python's csv module, UTF-8 with or without a BOM); DuckDB reads the
rest with `auto_detect=false`, those columns, RFC 4180 quoting and `store_rejects`, which
records every line it could not read in the connection's `reject_errors` table.
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

from crm_sync.errors import CsvFileError  # re-exported: its old home

# The longest line read (DuckDB's default, 2,000,000 bytes); a longer one is a malformed row.
MAX_LINE_BYTES = 2_000_000

# Error types whose DuckDB message says nothing of the line's values (safe to store).
_DESCRIBED = {"TOO MANY COLUMNS", "MISSING COLUMNS", "LINE SIZE OVER MAXIMUM"}


def header(path: Path) -> list[str]:
    """The column names of the file's header line; refuses a name that occurs twice (DuckDB
    would silently rename the second one `name_1`, and the sync would read the first)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as file:
            names = next(csv.reader(file), None)
    except UnicodeDecodeError as exc:
        raise CsvFileError(f"Line 1 (the header) is not UTF-8 ({exc.reason}); save the file "
                           f"as UTF-8") from None
    except csv.Error as exc:
        raise CsvFileError(f"Line 1 (the header) cannot be parsed: {exc}") from None
    if not names:
        raise CsvFileError("the first line (the header) is empty")
    names = [name or f"column{i}" for i, name in enumerate(names)]
    seen: dict[str, str] = {}
    for name in names:
        if name.lower() in seen:  # DuckDB's column names are case-insensitive
            raise CsvFileError(f"the header names column {name!r} twice"
                               + (f" (as {seen[name.lower()]!r} and {name!r})"
                                  if seen[name.lower()] != name else "")
                               + "; rename one of them")
        seen[name.lower()] = name
    return names


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def reader(path: Path) -> str:
    """The DuckDB relation of the file: every column as text, bad lines into reject_errors."""
    columns = ", ".join(f"{_literal(name)}: 'VARCHAR'" for name in header(path))
    return (f"read_csv({_literal(str(path))}, header=true, auto_detect=false, "
            f"columns={{{columns}}}, delim=',', quote='\"', escape='\"', "
            f"store_rejects=true, max_line_size={MAX_LINE_BYTES})")


def rejected_lines(conn, path: Path) -> list[dict]:
    """The lines the last reads of `conn` could not parse: one dict per line with its number,
    a stable identity (`<line N: digest of the line>`) and a description without the line's
    values. A file that is not UTF-8 is refused as a whole (CsvFileError)."""
    rows = conn.execute(
        "SELECT line, error_type, error_message, csv_line FROM reject_errors "
        "ORDER BY line, column_idx").fetchall()
    lines: dict[int, dict] = {}
    for line, error_type, message, text in rows:
        error_type = str(error_type)
        if error_type == "INVALID ENCODING":
            raise CsvFileError(f"Line {line} is not UTF-8 (save the file as UTF-8)")
        described = f"{error_type.lower()} ({message})" if error_type in _DESCRIBED \
            else error_type.lower()
        entry = lines.setdefault(int(line), {
            "line": int(line),
            "key": f"<line {line}: {hashlib.sha256(str(text).encode()).hexdigest()[:12]}>",
            "problems": [], "types": set()})
        # DuckDB reports a short line once per missing column: the first report says it all.
        if error_type not in entry["types"]:
            entry["types"].add(error_type)
            entry["problems"].append(described)
    return [{"line": e["line"], "key": e["key"],
             "description": f"{path.name} line {e['line']}: {'; '.join(e['problems'])}"}
            for e in lines.values()]
