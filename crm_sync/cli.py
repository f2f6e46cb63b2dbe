"""`crm-sync`: the command line of crm_sync.

    crm-sync demo                      sync the bundled data into a local sandbox, print a summary
    crm-sync sandbox [--port 8765]     run the CRM sandbox on its own
    crm-sync backfill SYNC... --start D --end D [--sandbox]   sync those days (1-7 November:
                                       --start 2026-11-01 --end 2026-11-07), as runs of the
                                       Dagster instance of $DAGSTER_HOME (the UI's); --sandbox:
                                       into the local sandbox; exit code 0: all synced,
                                       1: some sync partition failed, 2: a CRM it needs has no
                                       token or cannot be reached (nothing ran), 3: none failed
                                       but some were skipped (another run was syncing them)
    crm-sync ui                        the sandbox + the Dagster UI (dg dev) on
                                       http://127.0.0.1:3000, on the demo's instance and store
    crm-sync generate --out DIR        write source tables (--scale 250 for ~1M rows)
    crm-sync bench                     is the CRM the bottleneck? figures in BENCHMARKS.md
    crm-sync schema pull [SYNC...]     fetch each sync's CRM field schema into crm_schemas/
                                       (exit code 1: some CRM could not be asked)
    crm-sync schema check [SYNC...]    compare the spec with them; exit code 1: problems
    crm-sync store copy SOURCE [DESTINATION]   copy a sync store's rows into an empty store
                                       (default destination: $CRM_SYNC_STORE); exit code 2:
                                       refused (destination not empty), 1: failed, rolled back
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)  # bench's own options are its parser's
    if extra and args.command != "bench":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return _COMMANDS[args.command](parser, args, extra)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crm-sync", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="sync the bundled data into a local sandbox")
    demo.add_argument("--workdir", help="keep the sandbox database, the sync store and (unless "
                                        "$DAGSTER_HOME is set) the Dagster instance in this "
                                        "folder, not the project's .crm_sync/ (crm-sync ui "
                                        "--workdir shows them)")
    demo.add_argument("--port", type=int, help="sandbox port (default: a free one)")

    _add_sandbox_parser(sub)
    _add_backfill_parser(sub)
    ui = sub.add_parser("ui", help="start the sandbox and the Dagster UI (dg dev)")
    ui.add_argument("--port", type=int, default=3000, help="Dagster UI port")
    ui.add_argument("--sandbox-port", type=int, default=8765)
    ui.add_argument("--workdir", help="the demo's --workdir: its sandbox database, store and "
                                      "instance (default: the project's .crm_sync/)")

    gen = sub.add_parser("generate", help="write deterministic source tables")
    gen.add_argument("--out", default="data")
    gen.add_argument("--scale", type=float, default=1.0, help="1 = the bundled 4,000 rows")
    gen.add_argument("--seed", type=int, default=42)

    _add_schema_parser(sub)
    _add_store_parser(sub)
    bench = sub.add_parser("bench", add_help=False,
                           help="benchmark the pipeline against the sandbox (crm-sync bench -h)")
    bench.add_argument("options", nargs=argparse.REMAINDER)

    return parser


def _add_sandbox_parser(sub) -> None:
    sandbox = sub.add_parser("sandbox", help="run the CRM sandbox (all four APIs on one port)")
    sandbox.add_argument("--host", default="127.0.0.1",
                         help="address to bind (default 127.0.0.1: this machine only)")
    sandbox.add_argument("--port", type=int, default=8765)
    sandbox.add_argument("--db", default=".crm_sync/sandbox.sqlite", help="SQLite file")
    sandbox.add_argument("--certfile", help="TLS certificate (PEM), to serve HTTPS")
    sandbox.add_argument("--keyfile", help="TLS private key (PEM)")
    sandbox.add_argument("--token", action="append", default=[], metavar="CRM=TOKEN",
                         help="token a CRM accepts (default: $<CRM>_TOKEN or sandbox-<crm>-token)")
    sandbox.add_argument("--hubspot-rate-limit", type=int, default=100,
                         help="HubSpot requests per 10 s rolling window (0 = off)")
    sandbox.add_argument("--hubspot-window-seconds", type=float, default=10.0,
                         help="length of HubSpot's rolling window (default 10 s)")
    sandbox.add_argument("--brevo-rate-limit", type=int, default=0,
                         help="Brevo requests per second (0 = off)")
    sandbox.add_argument("--superleap-rate-limit", type=int, default=0,
                         help="Superleap requests per second (0 = off)")
    sandbox.add_argument("--salesforce-daily-limit", type=int, default=100_000,
                         help="Salesforce API requests allowed per day")
    sandbox.add_argument("--token-lifetime", type=float, default=None, metavar="SECONDS",
                         help="seconds the OAuth access tokens it issues stay valid (default: "
                              "Salesforce 7200, HubSpot 1800)")


def _add_schema_parser(sub) -> None:
    schema = sub.add_parser("schema", help="CRM field schemas: pull them, check the spec")
    actions = schema.add_subparsers(dest="action", required=True)
    pull = actions.add_parser("pull", help="fetch each sync's CRM object schema into "
                                           "crm_schemas/<crm>/<object>.json")
    check = actions.add_parser("check", help="compare the spec with the pulled schemas")
    for action in (pull, check):
        action.add_argument("syncs", nargs="*", help="sync names (default: every sync)")


def _add_store_parser(sub) -> None:
    store = sub.add_parser("store", help="the sync store: copy it to another backend")
    actions = store.add_subparsers(dest="action", required=True)
    copy = actions.add_parser("copy", help="copy every row that carries state into an empty "
                                           "store (SQLite to PostgreSQL, for instance)")
    copy.add_argument("source", help="the store to read: SQLite path, sqlite:/// or "
                                     "postgresql+psycopg:// URL")
    copy.add_argument("destination", nargs="?",
                      help="the empty store to fill (default: $CRM_SYNC_STORE)")


STORE_EXIT_FAILED, STORE_EXIT_REFUSED = 1, 2


def _store(parser, args, extra) -> int:
    """`store copy`: crm_sync/state/store_copy.py; one message on stderr when it refuses."""
    import os

    from crm_sync.errors import StoreCopyRefused, StoreError
    from crm_sync.state import store_copy

    destination = args.destination or os.environ.get("CRM_SYNC_STORE")
    if not destination:
        parser.error("store copy: give a DESTINATION or set CRM_SYNC_STORE")
    try:
        source, target = store_copy.open_stores(args.source, destination)
        store_copy.copy_store(source, target)
    except StoreCopyRefused as exc:
        print(f"crm-sync store copy: refused: {exc}", file=sys.stderr)
        return STORE_EXIT_REFUSED
    except StoreError as exc:
        print(f"crm-sync store copy: failed, the destination is unchanged: {exc}",
              file=sys.stderr)
        return STORE_EXIT_FAILED
    return 0


def _schema(parser, args, extra) -> int:
    """`schema pull`: one line per sync; `schema check`: one line per problem, exit code 1."""
    from crm_sync import schema_files
    from crm_sync.spec import load_spec

    spec = load_spec(check_schemas=False)  # a spec that fails the check must still load here
    try:
        if args.action == "pull":
            results = schema_files.pull(spec, args.syncs)
            for sync, status, detail in results:
                print(f"{sync}: " + {"pulled": f"wrote {detail}", "failed": f"failed: {detail}",
                                     "unavailable": f"skipped, no schema endpoint ({detail})"
                                     }[status])
            return 1 if any(status == "failed" for _, status, _ in results) else 0
        found, missing = schema_files.check(spec, args.syncs)
    except ValueError as exc:
        parser.error(str(exc))
    for sync in missing:
        print(f"{sync}: no pulled schema (crm-sync schema pull {sync}); not checked")
    for problem in found:
        print(problem)
    if not found:
        print("schema check: no problems")
    return 1 if found else 0


def _add_backfill_parser(sub) -> None:
    backfill = sub.add_parser(
        "backfill", help="sync a range of daily partitions of some syncs, in this process")
    backfill.add_argument("syncs", nargs="+", help="sync names from the spec")
    backfill.add_argument("--start", required=True, help="first day, YYYY-MM-DD")
    backfill.add_argument("--end", required=True, help="last day, YYYY-MM-DD (inclusive)")
    backfill.add_argument("--full-resync", action="store_true",
                          help="ignore the change-detection state and send every row")
    backfill.add_argument("--dry-run", action="store_true",
                          help="count what would be created/updated; send nothing")
    backfill.add_argument("--lease-wait", type=float, default=None, metavar="SECONDS",
                          help="how long to wait for a partition another run is syncing "
                               "before skipping it (default 120)")
    backfill.add_argument("--verbose", action="store_true",
                          help="print the traceback of each failed partition")
    backfill.add_argument("--sandbox", action="store_true",
                          help="start the local CRM sandbox for this command (on the database "
                               "crm-sync ui uses) and sync into it, with its tokens")


def _demo(parser, args, extra) -> int:
    from pathlib import Path

    from crm_sync.devtools.demo import run_demo

    run_demo(Path(args.workdir) if args.workdir else None, port=args.port)
    return 0


def _sandbox(parser, args, extra) -> int:
    from crm_sync.sandbox.server import serve

    tokens = {}
    for pair in args.token:
        crm, _, token = pair.partition("=")
        if not token:
            parser.error(f"--token expects CRM=TOKEN, got {pair!r}")
        tokens[crm] = token
    print(f"CRM sandbox on http://{args.host}:{args.port} (db {args.db})", flush=True)
    serve(args.host, args.port, args.db, certfile=args.certfile, keyfile=args.keyfile,
          tokens=tokens, hubspot_rate_limit=args.hubspot_rate_limit or None,
          hubspot_window_seconds=args.hubspot_window_seconds,
          brevo_rate_limit=args.brevo_rate_limit or None,
          superleap_rate_limit=args.superleap_rate_limit or None,
          salesforce_daily_limit=args.salesforce_daily_limit,
          token_lifetime=args.token_lifetime)
    return 0


def _ui(parser, args, extra) -> int:
    from crm_sync.devtools.ui import run_ui

    return run_ui(args.port, args.sandbox_port, workdir=args.workdir)


def _generate(parser, args, extra) -> int:
    from crm_sync.devtools.generate import generate

    sizes = generate(args.out, scale=args.scale, seed=args.seed)
    print(", ".join(f"{name}: {n} rows" for name, n in sizes.items()) + f" -> {args.out}")
    return 0


def _bench(parser, args, extra) -> int:
    from crm_sync.devtools.bench import main as bench_main

    return bench_main(extra + args.options)


BACKFILL_EXIT_FAILED, BACKFILL_EXIT_UNUSABLE, BACKFILL_EXIT_SKIPPED = 1, 2, 3
BACKFILL_TAGS = {"crm_sync/source": "cli-backfill"}  # on each of its runs, as the UI shows them


def _step_config(syncs: list[str], config: dict) -> dict:
    """The backfill's run config: each step of each sync gets the options it takes (dry_run
    reaches the upsert, replay and mirror steps); each run keeps only its own assets' entries."""
    from crm_sync.spec import load_spec
    from crm_sync.pipeline.sync_steps import sync_run_config

    # (an unknown sync name is refused by sync_partitions)
    return {"ops": {name: entry for sync in load_spec().syncs if sync.name in syncs
                    for name, entry in sync_run_config(sync, **config).items()}}


def _crm_problems(syncs: list[str]) -> list[str]:
    """Why the CRMs the named syncs send to cannot be used, before any partition runs: a
    token variable that is not set (and no OAuth settings), an address nothing listens at."""
    from crm_sync.connectors import RESOURCE_CLASSES, SANDBOX_URL, TOKEN_ENV, crm_label
    from crm_sync.spec import load_spec

    problems = []
    for crm in sorted({s.crm for s in load_spec().syncs if s.name in syncs}):
        label, token_env = crm_label(crm), TOKEN_ENV.get(crm)
        if token_env and not os.environ.get(token_env) and \
                not RESOURCE_CLASSES[crm].oauth_from_env():
            problems.append(f"{token_env} is not set; set it to your {label} token, or run "
                            f"with --sandbox to sync into the local sandbox")
            continue
        base_url = os.environ.get(f"{crm.upper()}_BASE_URL") or SANDBOX_URL
        reason = _unreachable(base_url)
        if reason:
            problems.append(f"cannot reach {label} at {base_url} ({reason}); start the CRM "
                            f"(crm-sync sandbox), check {crm.upper()}_BASE_URL, or pass "
                            f"--sandbox")
    return problems


def _unreachable(base_url: str) -> str | None:
    """Why nothing answers at `base_url` (a TCP connection: no request reaches the CRM), or
    None. Through a proxy (HTTPS_PROXY ...) the run itself finds out."""
    import socket
    import urllib.request
    from urllib.parse import urlsplit

    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "not an http:// or https:// URL"
    if parts.scheme in urllib.request.getproxies() and \
            not urllib.request.proxy_bypass(parts.hostname):
        return None
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        with socket.create_connection((parts.hostname, port), timeout=5):
            return None
    except (OSError, ValueError) as exc:
        return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


@contextlib.contextmanager
def _backfill_resources(args: argparse.Namespace):
    """The CRMs of the backfill: the live ones (None: build_resources()), or, with --sandbox,
    a sandbox of this command on the database, store and data `crm-sync ui` uses."""
    if not args.sandbox:
        yield None
        return
    from crm_sync.devtools.local import local_files
    from crm_sync.project import sandbox_resources
    from crm_sync.sandbox.server import sandbox_process
    from crm_sync.sandbox.state import tokens_from_env

    files = local_files()
    files.sandbox_db.parent.mkdir(parents=True, exist_ok=True)
    with sandbox_process(files.sandbox_db) as url:
        print(f"CRM sandbox at {url} (data in {files.sandbox_db})", flush=True)
        yield sandbox_resources(url, files.store, tokens=tokens_from_env())


def _backfill(parser: argparse.ArgumentParser, args: argparse.Namespace,
              extra=()) -> int:
    """Each sync and partition on its own, as runs of the project's Dagster instance; a
    summary at the end; non-zero if any failed."""
    from crm_sync.devtools.local import local_instance
    from crm_sync.pipeline.in_process import day_range, sync_partitions

    try:
        days = day_range(args.start, args.end)
        run_config = _step_config(args.syncs, _backfill_options(args))
        problems = [] if args.sandbox else _crm_problems(args.syncs)
    except ValueError as exc:
        parser.error(str(exc))
    for problem in problems:
        print(f"crm-sync backfill: {problem}", file=sys.stderr)
    if problems:
        return BACKFILL_EXIT_UNUSABLE
    try:
        with _backfill_resources(args) as resources, local_instance() as instance:
            summary = sync_partitions(days, syncs=args.syncs, run_config=run_config,
                                      verbose=args.verbose, resources=resources,
                                      instance=instance, tags=BACKFILL_TAGS)
    except ValueError as exc:
        parser.error(str(exc))
    _print_backfill_summary(summary)
    if any(row["partitions_failed"] for row in summary):
        return BACKFILL_EXIT_FAILED
    if any(row["partitions_skipped"] for row in summary):
        return BACKFILL_EXIT_SKIPPED
    return 0


def _backfill_options(args: argparse.Namespace) -> dict:
    config = {"full_resync": args.full_resync, "dry_run": args.dry_run}
    if args.lease_wait is not None:
        config["lease_wait_seconds"] = args.lease_wait
    return config


def _print_backfill_summary(summary: list[dict]) -> None:
    from crm_sync.devtools.demo import SUMMARY_COLUMNS
    from crm_sync.pipeline.reporting import text_table

    print(text_table(summary, SUMMARY_COLUMNS[:3] + [
        "partitions_ok", "partitions_failed", "partitions_skipped", *SUMMARY_COLUMNS[3:-1],
        "superseded", SUMMARY_COLUMNS[-1]]))


# Each subcommand's handler: (parser, parsed arguments, bench's own options) -> exit code.
_COMMANDS = {"demo": _demo, "sandbox": _sandbox, "backfill": _backfill,
             "ui": _ui, "generate": _generate, "bench": _bench, "schema": _schema,
             "store": _store}

if __name__ == "__main__":
    sys.exit(main())
