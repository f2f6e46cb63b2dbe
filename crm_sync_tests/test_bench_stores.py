"""Bench section 9 alone (`python -m crm_sync.devtools.bench.stores`): it generates its source
table, runs the upsert on both store backends (or says why PostgreSQL was skipped) and prints
their figures. Times are never asserted."""

from __future__ import annotations

import os

import pytest

from crm_sync.devtools.bench import stores

pytestmark = pytest.mark.timeout(600)


def test_section_9_runs_alone_on_both_backends(tmp_path, capsys):
    assert stores.main(["--workdir", str(tmp_path / "stores"), "--store-rows", "600",
                        "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    if "no PostgreSQL server" in out:  # (CI must run both backends: conftest's `postgres`)
        reason = out.strip().splitlines()[-1]
        pytest.fail(reason) if os.environ.get("CI", "").lower() == "true" else pytest.skip(reason)
    assert "sqlite: " in out and "postgresql: " in out and "ms per chunk of 10,000" in out
    assert "PostgreSQL / SQLite rows/s: " in out
