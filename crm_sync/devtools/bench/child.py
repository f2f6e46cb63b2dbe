"""One full sync in its own process, so that its peak RSS is its own:

    python -m crm_sync.devtools.bench.child '<json config>'

The config names the data folder, the sync store, the sandbox URL and the partitions. The sync is
the real pipeline (`crm_sync.pipeline.in_process.sync_partitions`: Dagster materializations of every
partition's source, validated and upsert assets) with the client-side rate limits lifted. The
last line printed is a JSON object: seconds, peak RSS, and the per-sync summary.
"""

from __future__ import annotations

import json
import os
import sys
import time


def main(argv: list[str]) -> int:
    config = json.loads(argv[0])
    os.environ["CRM_SYNC_DATA_DIR"] = config["data_dir"]
    os.environ["CRM_SYNC_STORE"] = config["store"]
    from crm_sync.devtools.bench.util import (bench_spec, fast_resource, peak_rss_mb,
                                              sandbox_tokens)
    from crm_sync.pipeline.in_process import sync_partitions
    from crm_sync.connectors import RESOURCE_CLASSES
    from crm_sync.pipeline.resources import StoreResource
    from crm_sync.extract.sources import SourceResource

    sandbox_tokens()
    spec = bench_spec()  # the four syncs it measures (util.py)
    by_crm = {s.crm: s for s in spec.syncs}
    resources = {"source": SourceResource(data_dir=config["data_dir"]),
                 "store": StoreResource(path=config["store"]),
                 **{crm: fast_resource(by_crm[crm], config["url"]) for crm in RESOURCE_CLASSES
                    if crm in by_crm}}
    started = time.perf_counter()
    summary = sync_partitions(config["partitions"], spec, log=lambda *_: None,
                              resources=resources)
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_rss_mb(), "summary": summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
