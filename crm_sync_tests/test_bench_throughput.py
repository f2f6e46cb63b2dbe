"""Bench section 1 alone (`python -m crm_sync.devtools.bench.throughput`): it generates its
tables, starts the sandbox and prints the pipeline against the ceiling for the CRMs named, and
only those. Times are never asserted."""

from __future__ import annotations

import re

import pytest

from crm_sync.devtools.bench import throughput

pytestmark = pytest.mark.timeout(300)


def test_section_1_runs_alone_for_the_crms_named(capsys):
    assert throughput.main(["--rows", "400", "--repeat", "1", "--crm", "superleap",
                            "brevo"]) == 0
    out = capsys.readouterr().out
    lines = {m.group(1): m.group(0) for m in re.finditer(r"^\s*(\w+): \d[\d,]* rows, .*$",
                                                          out, re.M)}
    assert set(lines) == {"superleap", "brevo"}
    for line in lines.values():
        assert "pipeline" in line and "ceiling" in line and "rows per client CPU second" in line
