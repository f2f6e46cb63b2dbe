"""`crm-sync bench` (`make bench`): is the CRM, not crm_sync, the bottleneck?

Generates source tables with crm_sync's own generator, runs the real pipeline against the CRM
sandbox on 127.0.0.1, and prints one table, every figure measured in the same run:

1. the upsert stage's rows/s per CRM next to a ceiling: a minimal client sending the same
   request bodies with the same concurrency to the same sandbox (ceiling.py);
2. rows per second of crm_sync's own CPU time, against each CRM's documented allowance;
3. HubSpot's rolling window kept full without 429s or lost rows;
4. pandera validation against the same rules hand-written in pandas (handwritten.py), with
   identical verdicts row for row;
5. how cost grows: rows/s and peak RSS of full syncs of 100,000 and 1,000,000 rows (2,000,000
   opt-in), each in a child process (child.py), memory against the largest partition and a
   control sync with the same partition in a table a seventh the size (growth.py);
6. incremental syncs at two sizes after 1% of the rows changed and after nothing changed, and
   where their time goes, from Dagster's event log (fullsync.py);
7. a peer side by side (peer.py): drt-core, when installed, syncing the same HubSpot rows;
8. Salesforce API calls per 100,000 rows on the collections and the Bulk API 2.0 path, and the
   share of a daily allocation a 1,000,000-row sync uses (apicalls.py);
9. the same upsert on the PostgreSQL and the SQLite sync store (stores.py).

BENCHMARKS.md holds the figures of a full run. Not part of the test suite (test_bench.py runs a
small version to check that it works and that its accounting holds, never a time).
"""

from crm_sync.devtools.bench.run import Options, Results, main, run

__all__ = ["Options", "Results", "main", "run"]
