"""Issue 19, target 1: how an incremental run's time follows the change (a script, not a test).

    PYTHONPATH=<checkout> python docs/measure_unchanged.py --rows 200000 --workdir /tmp/m19

Generates the rows (crm_sync.devtools.generate, seed 42), then against the sandbox: a full
sync of every partition, 1% of the rows changed (bench/fullsync.py change_one_percent), an
incremental sync, and one more with nothing changed; each sync in a child process
(bench/child.py: the real pipeline, `sync_partitions`). `--profile FILE`: one more 1% change,
its incremental sync under pyinstrument (text report in FILE). The checkout measured is the
one on PYTHONPATH (run it once on main, once on the branch). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
# B404: our own module in a child process, with a fixed argument list and no shell.
import subprocess  # nosec B404
import sys
from pathlib import Path

from crm_sync.devtools.bench.fullsync import change_one_percent, fresh_store, full_sync
from crm_sync.devtools.bench.util import bench_spec, reset, sandbox
from crm_sync.devtools.demo import partitions_with_data
from crm_sync.devtools.generate import BASE_SIZES, generate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--profile", type=Path, default=None)
    args = parser.parse_args()
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    data = work / "data"
    generate(data, scale=args.rows / sum(BASE_SIZES.values()))
    spec = bench_spec()
    partitions = partitions_with_data(spec, data)
    out = {}
    with sandbox(work / "sandbox.sqlite") as (url, _pid):
        reset(url)
        store = fresh_store(work / "store.sqlite")
        full = full_sync("full", spec, data, store, url, partitions)
        change_one_percent(spec, data, store)
        one = full_sync("1% changed", spec, data, store, url, partitions)
        none = full_sync("nothing changed", spec, data, store, url, partitions)
        out = {"rows": full.rows, "partitions": len(partitions),
               "full_s": round(full.seconds, 2), "one_percent_s": round(one.seconds, 2),
               "nothing_s": round(none.seconds, 2),
               "one_percent_ratio": round(one.seconds / full.seconds, 4),
               "nothing_ratio": round(none.seconds / full.seconds, 4),
               "unchanged_1pct": sum(r.get("unchanged", 0) for r in one.summary),
               "updated_1pct": sum(r.get("updated", 0) for r in one.summary),
               "unaccounted": [full.unaccounted(), one.unaccounted(), none.unaccounted()]}
        if args.profile:
            change_one_percent(spec, data, store)
            config = {"data_dir": str(data), "store": str(store), "url": url,
                      "partitions": partitions}
            # B603: a fixed argument list (this interpreter, pyinstrument, our module), no shell
            subprocess.run([sys.executable, "-m", "pyinstrument", "-o", str(args.profile),  # nosec B603
                            "-m", "crm_sync.devtools.bench.child", json.dumps(config)],
                           check=True, capture_output=True, env=dict(os.environ))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
