"""Issue 13, items 9 and 12: one run per sync partition, and the backfill CLI.

Item 9: two runs of the same sync and partition at once (two backfills, a schedule firing
during a backfill) must not create Superleap records twice: a lease in the sync store lets one
run at a time own a partition, and the write-ahead log's "log before create" refuses a create
another run has logged (or recorded) since this run read the state.
Item 12: `crm-sync backfill` runs each sync and partition on its own, goes on after a failure,
prints one readable error per failure and a summary, and exits non-zero when any failed.
"""

from __future__ import annotations

import os
import shutil
import subprocess  # nosec B404  # our own CLI, fixed argument list
import sys
import tempfile
import threading
import time
from collections import Counter

import pandas as pd
import pytest
import yaml

from crm_sync.state import ownership
from crm_sync.cli import main
from crm_sync.connectors.superleap import SuperleapResource
from crm_sync.sandbox.app import DEFAULT_TOKENS
from crm_sync.spec import PROJECT_ROOT, load_spec
from crm_sync.load.runner import run_upsert
from crm_sync.transform.validate import validate_partition
from crm_sync.state.writeahead import WriteAheadLog
from crm_sync_tests.conftest import BACKENDS, stored
from crm_sync_tests.bundled_spec import bundled_raw, bundled_unlinked

SYNC = "leads_to_superleap"
TRIALS = 4  # concurrent backfills per test run (the race hit 1 trial in 8 on real data)
# On PostgreSQL (the same races, other locks) one: the suite's time (the locks themselves:
# test_store_backends.py's racing processes).
TRIALS_ON = {"sqlite": TRIALS, "postgresql": 1}
ON_BOTH = pytest.mark.parametrize("store_backend", BACKENDS, indirect=True)


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    for table in ("leads", "contacts"):
        shutil.copy(PROJECT_ROOT / "data" / f"{table}.csv", data / f"{table}.csv")
    monkeypatch.setenv("CRM_SYNC_DATA_DIR", str(data))
    return data


def _leads(data_dir) -> pd.DataFrame:
    return pd.read_csv(data_dir / "leads.csv", dtype=str, keep_default_na=False)


def _valid_keys(frame: pd.DataFrame, days: list[str], sync: str = SYNC) -> set[str]:
    rows = frame[frame["updated_at"].str[:10].isin(days)]
    return set(validate_partition(bundled_unlinked().sync(sync), rows).valid["_key"])


def _cli(args: list[str], store_path, timeout: float = 300) -> subprocess.Popen:
    env = {**os.environ, "CRM_SYNC_STORE": str(store_path),
           "PYTHONPATH": str(PROJECT_ROOT),  # this checkout's crm_sync, not an installed one
           # a Dagster instance of its own (the CLI records its runs in $DAGSTER_HOME's), as on
           # another machine sharing only the sync store: the lease and the write-ahead log
           # are what these runs test, not two processes writing one SQLite instance
           "DAGSTER_HOME": tempfile.mkdtemp(dir=os.environ["DAGSTER_HOME"])}
    return subprocess.Popen(  # nosec B603  # fixed argument list, no shell
        [sys.executable, "-m", "crm_sync.cli", *args], env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _new_store(backend: str, request, path) -> str:
    """A new, empty store's location on `backend`: `path`, or a new PostgreSQL database."""
    if backend == "sqlite":
        return str(path)
    server = request.getfixturevalue("postgres")
    return server.url(request.getfixturevalue("pg_database")())


# -- item 9: one run per sync partition ----------------------------------------------------------
@ON_BOTH
# Each run is recorded in a SQLite Dagster instance (an event is a commit): 4 trials of two
# backfills take more than the default 300 s on a loaded machine: `slow` (CI runs it).
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_backfills_of_the_same_days_at_once_create_each_lead_once(sandbox, tmp_path,
                                                                      data_dir, store_backend,
                                                                      request):
    days = ["2026-11-01", "2026-11-02", "2026-11-03"]
    valid = _valid_keys(_leads(data_dir), days)
    for trial in range(TRIALS_ON[store_backend]):
        sandbox.post("/_sandbox/reset").raise_for_status()
        # Every Superleap answer a little late (after its records are committed): the runs
        # overlap longer, as they do on a real CRM.
        sandbox.post("/_sandbox/faults", json={"seed": trial, "rate_delay_after_commit": 1.0,
                                               "delay_seconds": 0.2}).raise_for_status()
        store_path = _new_store(store_backend, request, tmp_path / f"store-{trial}.sqlite")
        args = ["backfill", SYNC, "--start", days[0], "--end", days[-1]]
        runs = [_cli(args, store_path) for _ in range(2)]
        outputs = [run.communicate(timeout=300)[0] for run in runs]
        counts = Counter(r["external_id"] for r in stored(sandbox, "superleap", "lead"))
        twice = sorted(k for k, n in counts.items() if n > 1)
        assert not twice, (f"trial {trial + 1}: {len(twice)} leads created more than once "
                           f"(exit codes {[r.returncode for r in runs]}), e.g. {twice[:3]}")
        assert set(counts) == valid
        # The second run waited for the partitions the first held (--lease-wait, default
        # 120 s), then found them synced: both succeed.
        assert [r.returncode for r in runs] == [0, 0], outputs


@ON_BOTH
def test_a_partition_another_run_holds_is_skipped_with_a_message(sandbox, store, data_dir,
                                                                capsys):
    # Another run (another process) holds 2026-11-02 of the sync, and is alive.
    assert store.take_lease(SYNC, "2026-11-02", "run abcd1234 (pid 4242 on elsewhere)",
                            seconds=600) is None
    code = main(["backfill", SYNC, "--start", "2026-11-01", "--end", "2026-11-03",
                 "--lease-wait", "0"])
    out = capsys.readouterr().out
    assert code == 3  # nothing failed, but not every partition asked for was synced here
    assert ("skipped: partition 2026-11-02 of sync leads_to_superleap is being synced by "
            "another run (owner run abcd1234 (pid 4242 on elsewhere), since ") in out
    assert out.count("skipped: partition") == 1
    summary = _summary(out)[SYNC]
    assert (summary["partitions_ok"], summary["partitions_failed"],
            summary["partitions_skipped"]) == ("2", "0", "1")
    synced = {r["external_id"] for r in stored(sandbox, "superleap", "lead")}
    leads = _leads(data_dir)
    assert synced == _valid_keys(leads, ["2026-11-01", "2026-11-03"])  # nothing of the 2nd
    assert store.lease_holder(SYNC, "2026-11-01") is None  # released after its run
    assert store.lease_holder(SYNC, "2026-11-02")["owner"].startswith("run abcd1234")


@ON_BOTH
def test_the_lease_of_a_crashed_run_is_taken_over_once_it_expires(sandbox, store, data_dir,
                                                                  capsys):
    # A run killed with SIGKILL leaves its lease behind; it expires (it is never renewed).
    assert store.take_lease(SYNC, "2026-11-02", "run dead0000 (pid 1 on here)",
                            seconds=8) is None
    started = time.monotonic()
    code = main(["backfill", SYNC, "--start", "2026-11-02", "--end", "2026-11-02",
                 "--lease-wait", "60"])
    captured = capsys.readouterr()
    out = captured.out + captured.err
    assert code == 0, out
    assert time.monotonic() - started >= 7  # it waited for the expiry, not less
    assert "waiting" in out and "run dead0000" in out
    synced = {r["external_id"] for r in stored(sandbox, "superleap", "lead")}
    assert synced == _valid_keys(_leads(data_dir), ["2026-11-02"])
    assert store.lease_holder(SYNC, "2026-11-02") is None


@ON_BOTH
def test_log_before_create_refuses_a_create_another_run_logged_meanwhile(sandbox, sandbox_url,
                                                                         store, monkeypatch):
    """Two runs hold the same new source key (a source row that moved from one day to another
    between their reads, or a transient replay next to the row's own partition): both read
    "no state, no open create", then both would log and create. The log is a compare-and-set:
    the second finds the first's open entry and does not send."""
    sync = bundled_unlinked().sync(SYNC)
    rows = pd.DataFrame([{"lead_id": f"LD-9{i:06d}", "superleap_id": "", "name": f"Lead {i}",
                          "email": f"lead{i}@example.com", "phone": "", "status": "new",
                          "updated_at": "2026-11-03T10:00:00Z"} for i in range(20)])
    valid = validate_partition(sync, rows).valid
    both_read = threading.Barrier(2, timeout=20)
    real_pending = WriteAheadLog.pending

    def pending_then_meet(self, keys=None):
        seen = real_pending(self, keys)
        both_read.wait()  # each run has read the log before either writes to it
        return seen

    monkeypatch.setattr(WriteAheadLog, "pending", pending_then_meet)
    # The sync runner's claims (crm_sync/state/ownership.py) would make the second run wait for the
    # first before it reads the log; here each run takes the other for dead, so that only the
    # write-ahead compare-and-set stands between the two creates.
    monkeypatch.setattr(ownership, "_alive", lambda run: False)
    resource = SuperleapResource(base_url=sandbox_url, token=DEFAULT_TOKENS["superleap"])
    reports = [None, None]

    def run(slot: int, partition: str) -> None:
        reports[slot] = run_upsert(sync, valid, resource, store, partition=partition)

    threads = [threading.Thread(target=run, args=(i, day))
               for i, day in enumerate(["2026-11-02", "2026-11-03"])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    counts = Counter(r["external_id"] for r in stored(sandbox, "superleap", "lead"))
    assert max(counts.values()) == 1, f"{sum(n > 1 for n in counts.values())} leads twice"
    assert set(counts) == set(valid["_key"])
    assert sorted(r.created for r in reports) == [0, 20]
    assert sorted(r.failed_transient for r in reports) == [0, 20]  # a later run decides
    monkeypatch.setattr(WriteAheadLog, "pending", real_pending)
    again = run_upsert(sync, valid, resource, store, partition="2026-11-03")
    assert again.created == 0 and len(stored(sandbox, "superleap", "lead")) == 20


# -- item 12: the backfill CLI -------------------------------------------------------------------
def _summary(out: str) -> dict[str, dict[str, str]]:
    """The summary table the CLI prints last, by sync."""
    lines = out.strip().splitlines()
    header = max(i for i, line in enumerate(lines) if line.startswith("crm "))
    names = lines[header].split()
    return {row["sync"]: row for row in (dict(zip(names, line.split()))
                                         for line in lines[header + 2:] if line.strip())}


def test_backfill_of_two_syncs_in_one_command(sandbox, store, data_dir, capsys, tmp_path,
                                              monkeypatch):
    # The bundled syncs without their relationships: contacts_to_hubspot's companies are not
    # part of this backfill (with them, its rows would wait as ASSOCIATION_TARGET_MISSING).
    unlinked = tmp_path / "syncs.yaml"
    unlinked.write_text(yaml.safe_dump(bundled_raw()))
    monkeypatch.setenv("CRM_SYNC_SPEC", str(unlinked))
    days = ["2026-11-01", "2026-11-02"]
    code = main(["backfill", SYNC, "contacts_to_hubspot", "--start", days[0], "--end", days[1]])
    out = capsys.readouterr().out
    assert code == 0, out
    summary = _summary(out)
    assert set(summary) == {SYNC, "contacts_to_hubspot"}
    assert all(row["partitions_ok"] == "2" and row["partitions_failed"] == "0"
               for row in summary.values())
    leads = {r["external_id"] for r in stored(sandbox, "superleap", "lead")}
    assert leads == _valid_keys(_leads(data_dir), days)
    contacts = pd.read_csv(data_dir / "contacts.csv", dtype=str, keep_default_na=False)
    expected = _valid_keys(contacts, days, "contacts_to_hubspot")
    synced = {r["properties"]["crm_sync_id"] for r in stored(sandbox, "hubspot", "contacts")}
    assert synced == expected
    assert int(summary["contacts_to_hubspot"]["created"]) == len(expected)


def test_a_partition_over_its_threshold_fails_alone_and_the_backfill_goes_on(sandbox, tmp_path,
                                                                            data_dir):
    leads = _leads(data_dir)
    bad_day = leads["updated_at"].str.startswith("2026-11-02")
    leads.loc[bad_day, "email"] = "not-an-email"  # every row of the 2nd fails validation
    leads.to_csv(data_dir / "leads.csv", index=False)
    run = _cli(["backfill", SYNC, "--start", "2026-11-01", "--end", "2026-11-03"],
               tmp_path / "store.sqlite")
    out = run.communicate(timeout=300)[0]
    assert run.returncode == 1, out
    assert "Traceback" not in out and "Stack Trace" not in out
    errors = [line for line in out.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, out  # printed once
    assert "leads_to_superleap" in errors[0] and "2026-11-02" in errors[0]
    assert "failed validation, over the sync's threshold of 50%" in errors[0]
    row = _summary(out)[SYNC]
    assert (row["partitions_ok"], row["partitions_failed"], row["partitions_skipped"]) == \
        ("2", "1", "0")
    # The days after the failed one were read and synced.
    synced = {r["external_id"] for r in stored(sandbox, "superleap", "lead")}
    assert synced == _valid_keys(leads, ["2026-11-01", "2026-11-03"])
    assert synced & _valid_keys(leads, ["2026-11-03"])


def test_verbose_backfill_shows_the_traceback_of_a_failure(sandbox, store, data_dir, tmp_path,
                                                           capsys, monkeypatch):
    # A CRM that refuses the token fails the run (one that cannot be reached, or a token not
    # set, is refused before any run, exit code 2: test_backfill.py).
    wrong = "wrong-superleap-token-0000"
    monkeypatch.setenv("SUPERLEAP_TOKEN", wrong)
    code = main(["backfill", SYNC, "--start", "2026-11-01", "--end", "2026-11-01"])
    quiet = capsys.readouterr()
    assert code == 1
    assert "Traceback" not in quiet.out + quiet.err and "Stack Trace" not in quiet.err
    assert "error: leads_to_superleap [2026-11-01]: Superleap (" in quiet.out
    assert (quiet.out + quiet.err).count("refused the sync") == 1  # once, not 3 times
    assert wrong not in quiet.out + quiet.err
    # (a store of its own: the first run left its creates open in the write-ahead log)
    monkeypatch.setenv("CRM_SYNC_STORE", str(tmp_path / "verbose.sqlite"))
    code = main(["backfill", SYNC, "--start", "2026-11-01", "--end", "2026-11-01", "--verbose"])
    verbose = capsys.readouterr()
    assert code == 1 and "Traceback" in verbose.out + verbose.err
