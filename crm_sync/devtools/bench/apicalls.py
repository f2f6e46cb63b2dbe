"""Rows per API call (issue 19, target 3): Salesforce API requests per 100,000 rows on the
collections path and on the Bulk API 2.0 path, and the share of a 100,000-call daily allocation
a 1,000,000-row sync uses on each, measured against the sandbox (README "Salesforce Bulk API
2.0"):

    python -m crm_sync.devtools.bench.apicalls [ROWS]

Each path upserts the same validated companies into an empty org and a fresh sync store at two
sizes, `ROWS` valid rows and half that. The resource logs in with OAuth (client credentials,
the sandbox's connected app), so the token request is one of the requests counted. Counted:

- on the client, every HTTP request sent (httpx.AsyncClient.send, the token client's too),
  by kind: auth, collections upsert, job create, upload, close (UploadComplete), poll, results;
- on the sandbox (`/_sandbox/stats`), every CRM request it served (`requests total`) and the
  org's daily allowance it spent (`salesforce api-usage <hour>`).

What counts against the allocation (REFERENCE.md §4): the daily org allocation covers the
REST and SOAP API requests, and every REST response carries `Sforce-Limit-Info: api-usage`:
every request under /services/data/vXX.X/ counts, the Bulk API 2.0 ingest requests (a REST
resource, /services/data/vXX.X/jobs/ingest) included. The OAuth token request
(/services/oauth2/token) is not a REST API resource and carries no `Sforce-Limit-Info`; the
sandbox does not count it (docs/sandbox/salesforce.md, "Daily allowance"). The share below
counts it anyway (every request the client sent): an upper bound, one request per run.

The 1,000,000-row share is derived from a law measured at the two sizes, not extrapolated:
collections requests = fixed + one per 200 rows; Bulk API 2.0 requests = fixed + one set
(create, upload, close, 3 result reads) per job, plus the job's polls (how many depends on how
long the job takes: the most per job measured is used), with one job per chunk of
BULK_CHUNK_ROWS (250,000) rows. The bench sets the chunk to the small size for the bulk runs,
so the two sizes are one job and two: the per-job cost is measured, not assumed.
"""

from __future__ import annotations

import math
import random
import re
import sys
import tempfile
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pandas as pd

import crm_sync.connectors.salesforce_bulk as bulk_module
from crm_sync.devtools import generate
from crm_sync.devtools.bench.util import counters, fast_resource, reset, sandbox
from crm_sync.extract.sources import SourceResource
from crm_sync.load.runner import run_upsert
from crm_sync.sandbox.oauth import default_clients
from crm_sync.spec import load_spec
from crm_sync.state.store import SyncStore
from crm_sync.transform.validate import validate_partition

SYNC = "companies_to_salesforce"
WINDOW = (datetime(2000, 1, 1, tzinfo=timezone.utc), datetime(2100, 1, 1, tzinfo=timezone.utc))
COLLECTIONS, BULK = "collections", "bulk"
DAILY_ALLOCATION = 100_000  # the base of an org's allocation (REFERENCE.md §4)
LARGE_SYNC = 1_000_000
RECORDS_PER_REQUEST = 200  # the collections upsert's maximum (REFERENCE.md §4)
ALLOWANCE_COUNTER = "salesforce api-usage "  # the sandbox's hourly buckets of the allowance

# (method, path pattern) -> kind, first match wins
_KINDS = [
    ("POST", r"/services/oauth2/token$", "auth"),
    ("PATCH", r"/composite/sobjects/", "collections upsert"),
    ("POST", r"/jobs/ingest/?$", "job create"),
    ("PUT", r"/jobs/ingest/[^/]+/batches/?$", "upload"),
    ("PATCH", r"/jobs/ingest/[^/]+/?$", "close"),
    ("GET", r"/jobs/ingest/[^/]+/?$", "poll"),
    ("GET", r"/jobs/ingest/[^/]+/\w+/?$", "results"),
]


def kind_of(method: str, path: str) -> str:
    for verb, pattern, kind in _KINDS:
        if method == verb and re.search(pattern, path):
            return kind
    return f"other {method} {path}"


@dataclass
class PathCalls:
    """One upsert of `rows` rows on one path."""

    path: str
    rows: int  # rows sent
    jobs: int = 0  # Bulk API 2.0 jobs created
    client: Counter = field(default_factory=Counter)  # kind -> requests the client sent
    client_allowance: int = 0  # of those, requests under /services/data/vXX.X/
    report_requests: int = 0  # the connector's own count (SyncReport.requests)
    sandbox_total: int = 0  # `requests total` on the sandbox
    sandbox_allowance: int = 0  # the org's allowance the sandbox spent
    created: int = 0
    seconds: float = 0.0

    @property
    def client_total(self) -> int:
        return sum(self.client.values())

    @property
    def agree(self) -> bool:
        """The client's and the sandbox's counts are the same requests."""
        return (self.client_total == self.sandbox_total
                and self.client_allowance == self.sandbox_allowance
                and self.report_requests == self.client_total - self.client["auth"])


@dataclass
class ApiCalls:
    small: dict[str, PathCalls] = field(default_factory=dict)  # path -> the small size
    large: dict[str, PathCalls] = field(default_factory=dict)  # twice as many rows
    job_rows: int = 0  # the bulk runs' rows per job (BULK_CHUNK_ROWS in the bench)

    def units(self, path: str, rows: int, job_rows: int | None = None) -> int:
        """Collections requests, or Bulk API 2.0 jobs, that `rows` rows take."""
        if path == COLLECTIONS:
            return math.ceil(rows / RECORDS_PER_REQUEST)
        return math.ceil(rows / (job_rows or self.job_rows))

    def law(self, path: str) -> tuple[float, float]:
        """(fixed requests, requests per unit) through the two measured sizes, polls aside:
        how often a job is polled depends on how long it takes, not on its rows."""
        a, b = self.small[path], self.large[path]
        ua, ub = self.units(path, a.rows), self.units(path, b.rows)
        na, nb = a.client_total - a.client["poll"], b.client_total - b.client["poll"]
        per = (nb - na) / (ub - ua) if ub != ua else 0.0
        return na - ua * per, per

    def polls_per_job(self) -> float:
        """The most polls a job took at either size (the sandbox's; a real org's job takes
        longer: about one more poll per 10 s, README "Salesforce Bulk API 2.0")."""
        return max(c.client["poll"] / c.jobs for c in (self.small[BULK], self.large[BULK]))

    def linear(self, path: str) -> bool:
        """Both sizes on the law: a whole number of requests per unit and a fixed part that is
        the run's own (the token request) and nothing that grows with the rows."""
        fixed, per = self.law(path)
        return per > 0 and per == int(per) and fixed == 1

    def predicted(self, path: str, rows: int) -> float:
        """Requests for `rows` rows by the measured law (production's job size for bulk)."""
        fixed, per = self.law(path)
        if path == BULK:
            per += self.polls_per_job()
        return fixed + per * self.units(path, rows, bulk_module.BULK_CHUNK_ROWS)

    def per_100k(self, path: str) -> float:
        return self.predicted(path, 100_000)

    def daily_share(self, path: str, rows: int = LARGE_SYNC) -> float:
        return self.predicted(path, rows) / DAILY_ALLOCATION


def oauth_resource(spec, url: str):
    """The sync's fast resource, logging in with OAuth client credentials at the sandbox."""
    client = default_clients()[spec.crm]
    return fast_resource(spec, url, max_concurrency=4, client_id=client["client_id"],
                         client_secret=client["client_secret"])


@contextmanager
def client_requests():
    """Every request any httpx.AsyncClient sends in the block: a list of (method, path)."""
    original = httpx.AsyncClient.send
    sent: list[tuple[str, str]] = []

    async def send(client, request, *args, **kwargs):
        sent.append((request.method, request.url.path))
        return await original(client, request, *args, **kwargs)

    httpx.AsyncClient.send = send
    try:
        yield sent
    finally:
        httpx.AsyncClient.send = original


@contextmanager
def job_rows(rows: int):
    """Bulk API 2.0 chunks (one job each) of at most `rows` rows in the block."""
    original = bulk_module.BULK_CHUNK_ROWS
    bulk_module.BULK_CHUNK_ROWS = rows
    try:
        yield
    finally:
        bulk_module.BULK_CHUNK_ROWS = original


def valid_companies(rows: int, work: Path, seed: int = 17):
    """(spec, at least `rows` valid generated companies)."""
    spec = load_spec().sync(SYNC)
    data = work / "data"
    data.mkdir(exist_ok=True)
    generated = int(rows * 1.1) + 100  # ~3% of the generated rows are invalid
    table = list(generate.companies(random.Random(seed), generated))  # nosec B311  # test data
    pd.DataFrame(table).to_csv(data / f"{spec.source}.csv", index=False)
    frame = SourceResource(data_dir=str(data)).read_partition(spec.source, *WINDOW)
    valid = validate_partition(spec, frame, partition="all").valid
    if len(valid) < rows:
        raise RuntimeError(f"{len(valid):,} valid companies of {generated:,}, not {rows:,}")
    return spec, valid


def upsert_counted(spec, valid, url: str, store_path: Path, path: str,
                   chunk_rows: int = 10_000) -> PathCalls:
    """One upsert of `valid` on `path` into an empty org and store, its requests counted."""
    threshold = None if path == COLLECTIONS else spec.bulk_threshold
    reset(url)
    started = time.perf_counter()
    with client_requests() as sent:
        report = run_upsert(spec.model_copy(update={"bulk_threshold": threshold}), valid,
                            oauth_resource(spec, url), SyncStore(store_path), partition="all",
                            chunk_rows=chunk_rows)
    seconds = time.perf_counter() - started
    served = counters(url)
    kinds = Counter(kind_of(method, where) for method, where in sent)
    return PathCalls(
        path, report.sent, jobs=kinds["job create"], client=kinds,
        client_allowance=sum(1 for _, where in sent
                             if re.match(r"/services/data/v\d", where)),
        report_requests=report.requests, sandbox_total=served.get("requests total", 0),
        sandbox_allowance=sum(v for k, v in served.items() if k.startswith(ALLOWANCE_COUNTER)),
        created=report.created, seconds=round(seconds, 1))


def api_calls(rows: int, url: str, workdir: Path, log=print, seed: int = 17) -> ApiCalls:
    """Both paths at `rows` valid rows and at half as many, on the sandbox at `url`."""
    workdir.mkdir(parents=True, exist_ok=True)
    spec, valid = valid_companies(rows, workdir, seed)
    half = max(rows // 2, spec.bulk_threshold + 1)
    result = ApiCalls(job_rows=half)
    for path in (COLLECTIONS, BULK):
        for size, into in ((half, result.small), (2 * half, result.large)):
            store = workdir / f"apicalls-{path}-{size}.sqlite"
            with job_rows(half):  # (and chunks of as many rows: the runner's is 10,000)
                into[path] = upsert_counted(spec, valid.iloc[:size], url, store, path,
                                            chunk_rows=half if path == BULK else 10_000)
            found = into[path]
            log(f"  {path} {found.rows:,} rows: {found.client_total} requests "
                f"{dict(found.client)}, sandbox {found.sandbox_total} "
                f"(allowance {found.sandbox_allowance}), {found.seconds} s")
    reset(url)
    return result


def main(argv: list[str]) -> int:
    rows = int(argv[0]) if argv else 20_000
    with tempfile.TemporaryDirectory() as tmp, sandbox(Path(tmp) / "sandbox.sqlite") as (url, _):
        result = api_calls(rows, url, Path(tmp))
    for path in (COLLECTIONS, BULK):
        fixed, per = result.law(path)
        unit = "request" if path == COLLECTIONS else f"job + {result.polls_per_job():g} polls"
        print(f"{path}: {fixed:g} + {per:g} per {unit} -> "
              f"{result.per_100k(path):,.0f} per 100,000 rows, "
              f"{result.daily_share(path):.2%} of {DAILY_ALLOCATION:,} for {LARGE_SYNC:,} rows")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
