"""The demo command: every sync of the bundled data, twice, with the same end state."""

from __future__ import annotations

import os
import sqlite3

from crm_sync.demo import run_demo


def _records(db) -> dict[tuple[str, str], int]:
    with sqlite3.connect(db) as conn:
        return {(crm, obj): n for crm, obj, n in conn.execute(
            "SELECT crm, object, COUNT(*) FROM records GROUP BY crm, object")}


def test_demo_twice_gives_the_same_end_state(tmp_path, capsys):
    saved = dict(os.environ)
    try:
        first = run_demo(tmp_path)
        records_after_first = _records(tmp_path / "sandbox.sqlite")
        second = run_demo(tmp_path)
        records_after_second = _records(tmp_path / "sandbox.sqlite")
    finally:
        os.environ.clear()
        os.environ.update(saved)
    out = capsys.readouterr().out
    assert "rows_read" in out and "quarantined" in out

    assert records_after_first == records_after_second  # nothing duplicated
    for row in first:
        assert row["rows_read"] > 0
        assert row["created"] + row["updated"] + row["unchanged"] + row["quarantined"] == \
            row["rows_read"]
        # Every `created` is one new CRM record; updates never add records.
        assert records_after_first.get((row["crm"], row["object"]), 0) == row["created"]
    for row in second:
        assert row["created"] == 0
        assert row["unchanged"] == row["rows_read"] - row["quarantined"]
