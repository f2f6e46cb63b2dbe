"""API calls per 100,000 rows on Salesforce's two upsert paths, measured against the sandbox
(README "Salesforce Bulk API 2.0"): the same generated companies partition upserted into an
empty org once through the collections upsert (bulk_threshold null) and once through one Bulk
API 2.0 ingest job (the default threshold), each into a fresh sync store.

    python -m crm_sync.devtools.bench.apicalls [ROWS]

Counted: the client's requests (SyncReport.requests) and the sandbox's own counter of the
requests it served; every Salesforce API request counts against the org's daily allocation.
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from crm_sync.devtools import generate
from crm_sync.devtools.bench.util import counters, fast_resource, reset, sandbox
from crm_sync.extract.sources import SourceResource
from crm_sync.load.runner import run_upsert
from crm_sync.spec import load_spec
from crm_sync.state.store import SyncStore
from crm_sync.transform.validate import validate_partition

SYNC = "companies_to_salesforce"
WINDOW = (datetime(2000, 1, 1, tzinfo=timezone.utc), datetime(2100, 1, 1, tzinfo=timezone.utc))


def measure(rows: int = 100_000, seed: int = 17) -> dict[str, dict]:
    """{path: {rows sent, client requests, sandbox requests, seconds}} for both paths."""
    spec = load_spec().sync(SYNC)
    found = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = work / "data"
        data.mkdir()
        table = list(generate.companies(random.Random(seed), rows))  # nosec B311  # test data
        pd.DataFrame(table).to_csv(data / f"{spec.source}.csv", index=False)
        frame = SourceResource(data_dir=str(data)).read_partition(spec.source, *WINDOW)
        valid = validate_partition(spec, frame, partition="all").valid
        with sandbox(work / "sandbox.sqlite") as (url, _):
            for path, threshold in (("collections", None), ("bulk", spec.bulk_threshold)):
                reset(url)
                started = time.perf_counter()
                report = run_upsert(spec.model_copy(update={"bulk_threshold": threshold}),
                                    valid, fast_resource(spec, url, max_concurrency=4),
                                    SyncStore(work / f"{path}.sqlite"), partition="all")
                found[path] = {"rows": report.sent, "created": report.created,
                               "requests": report.requests,
                               "sandbox requests": counters(url).get("requests total", 0),
                               "seconds": round(time.perf_counter() - started, 1)}
    return found


def main(argv: list[str]) -> int:
    rows = int(argv[0]) if argv else 100_000
    for path, figures in measure(rows).items():
        per = figures["requests"] * 100_000 / max(figures["rows"], 1)
        print(f"{path:12} {figures}  -> {per:,.1f} API calls per 100,000 rows")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
