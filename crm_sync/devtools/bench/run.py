"""The benchmark's command: generate the tables, run every measurement, print one table."""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from crm_sync.devtools.generate import ALL_ROWS, BASE_SIZES, generate
from crm_sync.spec import PROJECT_ROOT


@dataclass
class Options:
    workdir: Path = PROJECT_ROOT / ".crm_sync" / "bench"
    rows: int = 100_000  # source rows per CRM for sections 1-2
    full_rows: int = 1_000_000  # section 5's large sync (all tables) and section 4
    small_rows: int = 100_000  # section 5's small sync
    # section 6's smaller table (the larger: the large one); None: only the large one
    incremental_rows: int | None = 200_000
    largest_rows: int | None = None  # section 5: one more full sync this big (opt-in)
    rate_seconds: float = 60.0  # section 3
    rate_allowance: int = 100
    rate_window: float = 10.0
    partitions: list[str] | None = None  # sections 5-6: default every day with data
    repeat: int = 2  # sections 1 and 4: best of N (alternating)
    peer_rows: int = 1000  # section 7 (drt-core, when installed): ~2 min at its 9 requests/s
    apicall_rows: int = 20_000  # section 8: Salesforce's two paths at this size and half
    store_rows: int = 30_000  # section 9: the upsert on each store backend
    # the production stack's backfill, parallel vs one at a time (stack.py): opt-in, it took
    # 11-24 min on the shared 2-core machine (BENCHMARKS.md, Round 2)
    stack: bool = False
    stack_scale: float | None = None  # its generator scale (default: stack.py's SCALE)


@dataclass
class Results:
    options: Options
    throughput: list = field(default_factory=list)
    saturation: object = None
    validation: object = None
    growth: object = None  # section 5 (growth.Growth)
    incremental: list = field(default_factory=list)  # section 6 (fullsync.Incremental each)
    peer: object = None  # section 7
    apicalls: object = None  # section 8 (apicalls.py)
    stores: object = None  # section 9 (stores.py)
    stack: object = None  # section 10 (stack.py, opt-in)
    seconds: float = 0.0


def run(options: Options, log=print) -> Results:
    from crm_sync.devtools.bench.growth import growth_and_incremental
    from crm_sync.devtools.bench.throughput import rate_limit_saturation, upsert_vs_ceiling
    from crm_sync.devtools.bench.util import bench_spec, sandbox, sandbox_tokens
    from crm_sync.devtools.bench.validation import validation_cost

    started = time.perf_counter()
    workdir = Path(options.workdir)
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    sandbox_tokens()
    spec = bench_spec()  # the four syncs it measures (util.py)
    results = Results(options)
    large = workdir / "data-large"
    # The large tables hold at least `rows` rows in every table (the smallest is projects).
    scale = max(options.full_rows / ALL_ROWS, options.rows / min(BASE_SIZES.values()))
    log(f"generating {scale * ALL_ROWS:,.0f} rows (scale {scale:g}) ...")
    generate(large, scale=scale)

    log("1-2. upsert stage vs the ceiling (sandbox rate limits off)")
    with sandbox(workdir / "sandbox-open.sqlite", "--hubspot-rate-limit", "0") as (url, pid):
        results.throughput = upsert_vs_ceiling(spec, large, options.rows, url, pid, workdir,
                                               options.repeat, log=log)
        log("5-6. full syncs in child processes; then 1% changed, then nothing changed")
        results.growth, results.incremental = growth_and_incremental(
            spec, large, scale, url, pid, workdir, options, log=log)
        _calls_and_stores(results, spec, large, url, workdir, log)
    log(f"3. HubSpot rolling window ({options.rate_allowance} per {options.rate_window:g} s) "
        f"for {options.rate_seconds:g} s")
    with sandbox(workdir / "sandbox-limited.sqlite", "--hubspot-rate-limit",
                 str(options.rate_allowance), "--hubspot-window-seconds",
                 f"{options.rate_window:g}") as (url, _):
        results.saturation = rate_limit_saturation(spec, large, url, workdir,
                                                   options.rate_seconds,
                                                   options.rate_allowance, options.rate_window)
        if options.peer_rows:
            from crm_sync.devtools.bench.peer import side_by_side
            log(f"7. a peer side by side: {options.peer_rows:,} rows to HubSpot, same allowance")
            results.peer = side_by_side(spec, large, options.peer_rows, url, workdir,
                                        options.rate_allowance, options.rate_window, log=log)
    log("4. validation: pandera vs hand-written pandas")
    # The large tables were changed by section 6 (1% of one column): same rules, same size.
    results.validation = validation_cost(spec, large, options.full_rows, options.repeat,
                                         log=log)
    if options.stack:
        from crm_sync.devtools.bench.stack import production_stack

        log("10. one backfill of 7 partitions on deploy/dagster.yaml: parallel, then one "
            "run at a time")
        results.stack = production_stack(workdir / "stack", options.stack_scale, log=log)
    results.seconds = time.perf_counter() - started
    return results


def _calls_and_stores(results: Results, spec, large: Path, url: str, workdir: Path,
                      log) -> None:
    """Sections 8 and 9, on the open sandbox."""
    from crm_sync.devtools.bench.apicalls import api_calls
    from crm_sync.devtools.bench.stores import store_backends

    options = results.options
    log("8. Salesforce API calls per row: collections vs Bulk API 2.0")
    results.apicalls = api_calls(options.apicall_rows, url, workdir / "apicalls", log=log)
    log("9. the same upsert on the PostgreSQL and the SQLite store")
    results.stores = store_backends(spec, large, options.store_rows, url, workdir,
                                    options.repeat, log=log)


def machine() -> str:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{os.cpu_count()} cores ({cpu}), {memory:.0f} GiB memory, Python "
            f"{platform.python_version()}, {platform.system()} {platform.release()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="crm-sync bench", description=__doc__)
    parser.add_argument("--workdir", type=Path, default=Options.workdir)
    parser.add_argument("--rows", type=int, default=Options.rows,
                        help="source rows per CRM for the upsert-vs-ceiling runs")
    parser.add_argument("--full-rows", type=int, default=Options.full_rows,
                        help="rows (all tables) of the large full sync and of validation")
    parser.add_argument("--small-rows", type=int, default=Options.small_rows)
    parser.add_argument("--incremental-rows", type=int, default=Options.incremental_rows,
                        help="rows (all tables) of the smaller incremental sync (0: none)")
    parser.add_argument("--largest-rows", type=int, default=Options.largest_rows,
                        help="one more full sync this big for section 5 (off by default)")
    parser.add_argument("--rate-seconds", type=float, default=Options.rate_seconds)
    parser.add_argument("--repeat", type=int, default=Options.repeat)
    parser.add_argument("--peer-rows", type=int, default=Options.peer_rows,
                        help="rows of section 7, the peer (drt-core) side by side; 0 skips it")
    parser.add_argument("--apicall-rows", type=int, default=Options.apicall_rows,
                        help="Salesforce rows per path for the API-call count (and half)")
    parser.add_argument("--store-rows", type=int, default=Options.store_rows,
                        help="rows of the upsert on each store backend")
    parser.add_argument("--stack", action="store_true",
                        help="also the production stack's backfill (PostgreSQL, dagster-daemon; "
                             "long: BENCHMARKS.md)")
    parser.add_argument("--stack-scale", type=float, default=Options.stack_scale)
    args = parser.parse_args(argv)
    from crm_sync.devtools.bench.report import table

    options = Options(workdir=args.workdir, rows=args.rows, full_rows=args.full_rows,
                      small_rows=args.small_rows, incremental_rows=args.incremental_rows or None,
                      largest_rows=args.largest_rows, rate_seconds=args.rate_seconds,
                      repeat=args.repeat, peer_rows=args.peer_rows,
                      apicall_rows=args.apicall_rows, store_rows=args.store_rows,
                      stack=args.stack, stack_scale=args.stack_scale)
    results = run(options)
    print()
    print(f"machine: {machine()}")
    print(table(results))
    print(f"\n(benchmark took {results.seconds / 60:.1f} min)")
    return 0
