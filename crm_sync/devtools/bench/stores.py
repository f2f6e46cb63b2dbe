"""Store backends (issue 19, target 4): the same upsert on the PostgreSQL sync store and on the
SQLite one, rows per second of each, their ratio, and the store's own time per chunk.

The upsert is the runner's (run_upsert: plan, claim, send, record) of the same validated rows
into the same CRM (the bench spec's first sync, Superleap: its creates go through the
write-ahead log, so every store call a run makes is exercised), on an empty sandbox and an
empty store each time, the backends alternating, best of `repeat`. The store is wrapped in a
timing proxy (TimedStore, here, not in production code) that adds up the wall time of every
store call the run makes: get_state, claim_for_sending, get_links, record_results,
release_sending, and the write-ahead log's own transactions (store.transaction / connection,
which WriteAheadLog and the Bulk API job log open). Calls overlap the CRM's answers (they run
in threads while the loop sends), so the store's time is not subtracted from the wall time:
it is reported next to it.

PostgreSQL is a throwaway server (crm_sync/devtools/pg_server.py: initdb and pg_ctl on a
temporary directory, 127.0.0.1 only, fsync on). Without the server programs the section is
skipped and says why.
"""

from __future__ import annotations

import subprocess  # nosec B404 - only for its CalledProcessError
import threading
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from crm_sync.devtools.bench.util import Stopwatch, fast_resource, read_table, reset
from crm_sync.load.runner import run_upsert
from crm_sync.spec import Spec
from crm_sync.state.backends import POSTGRESQL, SQLITE
from crm_sync.state.store import SyncStore
from crm_sync.transform.validate import validate_partition

CHUNK_ROWS = 10_000  # the runner's default chunk
WRITE_AHEAD = "write-ahead"  # the journals' own transactions and connections


class TimedStore:
    """A SyncStore whose every call the runner (or a connector's journal) makes is timed:
    seconds and calls per method name; `connection` and `transaction`, opened directly by the
    write-ahead log and the Bulk API job log, count as WRITE_AHEAD, from enter to exit."""

    def __init__(self, store: SyncStore):
        self._store, self._lock = store, threading.Lock()
        self.seconds: Counter = Counter()
        self.calls: Counter = Counter()

    def _add(self, name: str, seconds: float) -> None:
        with self._lock:
            self.seconds[name] += seconds
            self.calls[name] += 1

    def __getattr__(self, name):
        target = getattr(self._store, name)
        if not callable(target) or name.startswith("_"):
            return target
        if name in ("connection", "transaction"):
            return self._context(target)

        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return target(*args, **kwargs)
            finally:
                self._add(name, time.perf_counter() - started)

        return timed

    def _context(self, target):
        @contextmanager
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                with target(*args, **kwargs) as conn:
                    yield conn
            finally:
                self._add(WRITE_AHEAD, time.perf_counter() - started)

        return timed

    @property
    def total(self) -> float:
        return sum(self.seconds.values())


@dataclass
class BackendRun:
    backend: str
    rows: int = 0  # rows sent
    seconds: float = 0.0  # the upsert's wall time (best run)
    store_seconds: float = 0.0  # the store's time in that run
    by_call: dict = field(default_factory=dict)  # method -> seconds in that run
    calls: dict = field(default_factory=dict)  # method -> calls in that run
    chunks: int = 0
    accounting: dict = field(default_factory=dict)

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0

    @property
    def store_ms_per_chunk(self) -> float:
        return 1000 * self.store_seconds / self.chunks if self.chunks else 0.0


@dataclass
class StoreBackends:
    crm: str = ""
    sync: str = ""
    rows: int = 0
    runs: dict = field(default_factory=dict)  # backend -> BackendRun
    skipped: str | None = None  # why PostgreSQL was not measured

    @property
    def ratio(self) -> float:
        """PostgreSQL rows/s over SQLite's."""
        pg, lite = self.runs.get(POSTGRESQL), self.runs.get(SQLITE)
        return pg.rows_per_second / lite.rows_per_second if pg and lite and \
            lite.rows_per_second else 0.0


def store_backends(spec: Spec, data: Path, rows: int, url: str, workdir: Path,
                   repeat: int = 2, log=print) -> StoreBackends:
    """The bench spec's first sync's upsert of `rows` source rows, on both backends."""
    from crm_sync.devtools.pg_server import postgres_server

    sync = spec.syncs[0]
    valid = validate_partition(sync, read_table(data, sync.source, rows)).valid
    result = StoreBackends(sync.crm, sync.name, rows=len(valid))
    try:
        with postgres_server() as server:
            for attempt in range(max(1, repeat)):
                for backend in (SQLITE, POSTGRESQL):
                    location = str(workdir / f"stores-{attempt}.sqlite") if backend == SQLITE \
                        else server.url(server.create_database("bench"))
                    _keep_best(result, _one_run(sync, valid, url, backend, location))
    except (FileNotFoundError, subprocess.CalledProcessError) as exc:
        result.skipped = f"no PostgreSQL server ({type(exc).__name__}: {exc})"
        log(f"  store backends skipped: {result.skipped}")
        return result
    for run in result.runs.values():
        log(f"  {run.backend}: {run.rows_per_second:,.0f} rows/s, store "
            f"{run.store_ms_per_chunk:,.0f} ms per chunk of {CHUNK_ROWS:,} "
            f"({', '.join(f'{k} {v:.2f} s' for k, v in sorted(run.by_call.items()))})")
    return result


def _one_run(sync, valid, url: str, backend: str, location: str) -> BackendRun:
    store = TimedStore(SyncStore(location))
    reset(url)
    with Stopwatch() as watch:
        report = run_upsert(sync, valid, fast_resource(sync, url), store, partition="bench",
                            chunk_rows=CHUNK_ROWS)
    return BackendRun(
        backend, rows=report.sent, seconds=watch.wall, store_seconds=store.total,
        by_call={k: round(v, 3) for k, v in store.seconds.items()}, calls=dict(store.calls),
        chunks=-(-len(valid) // CHUNK_ROWS),
        accounting={"rows_in": report.rows_in, "created": report.created,
                    "updated": report.updated, "failed": report.failed})


def _keep_best(result: StoreBackends, run: BackendRun) -> None:
    best = result.runs.get(run.backend)
    if best is None or run.seconds < best.seconds:
        result.runs[run.backend] = run


def main(argv: list[str] | None = None) -> int:
    """Section 9 alone: `python -m crm_sync.devtools.bench.stores --store-rows 30000` (run.py's
    flags of the same names; the source table is generated at the size the upsert needs)."""
    import argparse
    import shutil

    from crm_sync.devtools.bench.run import Options
    from crm_sync.devtools.bench.util import bench_spec, sandbox, sandbox_tokens
    from crm_sync.devtools.generate import BASE_SIZES, generate

    parser = argparse.ArgumentParser(prog="python -m crm_sync.devtools.bench.stores")
    parser.add_argument("--workdir", type=Path, default=Options.workdir / "stores")
    parser.add_argument("--store-rows", type=int, default=Options.store_rows)
    parser.add_argument("--repeat", type=int, default=Options.repeat)
    args = parser.parse_args(argv)
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    sandbox_tokens()
    spec = bench_spec()
    source = spec.syncs[0].source  # (a table of the generator: BASE_SIZES' names)
    generate(args.workdir / "data", scale=args.store_rows / BASE_SIZES[source])
    with sandbox(args.workdir / "sandbox.sqlite", "--hubspot-rate-limit", "0") as (url, _):
        result = store_backends(spec, args.workdir / "data", args.store_rows, url,
                                args.workdir, args.repeat)
    print(f"PostgreSQL / SQLite rows/s: {result.ratio:.1%}" if not result.skipped
          else result.skipped)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
