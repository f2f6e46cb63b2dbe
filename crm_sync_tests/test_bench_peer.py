"""Section 7 of the benchmark (crm_sync/devtools/bench/peer.py): skipped, saying how to enable
it, without drt-core; the fence that keeps drt's requests on the sandbox; and, only when
drt-core is installed (CI does not install it), a small side-by-side run whose accounting holds.
Times are never asserted."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest

from crm_sync.devtools.bench import peer
from crm_sync.devtools.bench.peer_drt import fence
from crm_sync.devtools.bench.report import _peer_rows
from crm_sync.sandbox.app import DEFAULT_TOKENS


def test_without_drt_the_section_is_skipped_and_says_how_to_enable_it(monkeypatch, tmp_path):
    monkeypatch.setattr(peer, "peer_version", lambda: None)
    logged = []
    result = peer.side_by_side(None, tmp_path, 10, "http://127.0.0.1:1", tmp_path, 100, 10.0,
                               log=logged.append)
    assert result.version is None and result.ours is None and result.theirs is None
    assert "pip install 'crm_sync[bench]'" in logged[0]
    added = []
    _peer_rows(SimpleNamespace(peer=result), lambda *row: added.append(row))
    assert len(added) == 1 and "skipped" in added[0][2] and peer.ENABLE in added[0][2]


def test_the_fence_sends_hubspot_to_the_sandbox_and_refuses_every_other_host(sandbox_url):
    script = textwrap.dedent(f"""
        import socket, httpx
        from crm_sync.devtools.bench.peer_drt import fence
        refused = []
        fence({sandbox_url!r}, refused)
        answer = httpx.get("https://api.hubapi.com/crm/v3/properties/contacts",
                           headers={{"Authorization": "Bearer {DEFAULT_TOKENS['hubspot']}"}})
        assert answer.status_code == 200 and answer.json()["results"], answer.text
        for attempt in (lambda: httpx.get("https://example.com/", timeout=2),
                        lambda: socket.create_connection(("192.0.2.1", 80), timeout=2),
                        lambda: socket.getaddrinfo("example.com", 443)):
            try:
                attempt()
            except PermissionError:
                pass
            else:
                raise AssertionError("a request left the fence")
        assert refused == ["example.com", "192.0.2.1", "example.com"], refused
        print("fenced")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0 and done.stdout.strip() == "fenced", done.stderr


def test_the_fence_refuses_a_sandbox_that_is_not_local():
    with pytest.raises(RuntimeError, match="127.0.0.1"):
        fence("http://example.com:8765", [])


def test_side_by_side_with_drt_accounts_for_every_row(sandbox_url, tmp_path):
    pytest.importorskip("drt")
    from crm_sync.devtools.bench.util import bench_spec, sandbox_tokens
    from crm_sync.devtools.generate import generate

    sandbox_tokens()
    generate(tmp_path / "data", scale=0.02)  # 30 contacts
    result = peer.side_by_side(bench_spec(), tmp_path / "data", 12, sandbox_url, tmp_path,
                               10, 1.0, log=lambda *_: None)
    ours, theirs = result.ours, result.theirs
    assert result.rows == ours.rows == theirs.rows == 12
    assert ours.requests == 1 and theirs.requests == 12  # one batch against one row a request
    assert ours.failed == theirs.failed == 0
    assert result.same_records and len(ours.records) == 12 and result.refused_hosts == []
    assert ours.cpu > 0 and theirs.cpu > 0 and ours.seconds > 0 and theirs.seconds > 0
    added = []
    _peer_rows(SimpleNamespace(peer=result), lambda *row: added.append(row))
    assert len(added) == 4 and added[-1][4] is True
