"""What the Brevo and Superleap example tests check of their tables alike."""

from __future__ import annotations

import pytest


def ids(entries: list[dict]) -> list[str]:
    return [e["id"] for e in entries]


def check_the_table(entries: list[dict], key: str, kinds: tuple[str, ...]) -> None:
    """At least ten entries, each with a source and one of `kinds` under `key`; both verdicts;
    an entry the client's validation cannot see says how the client copes (its connector's
    expected answer) or why its client side is skipped."""
    assert len(entries) >= 10
    assert all(str(e["source"]).strip() for e in entries)
    assert {e["verdict"] for e in entries} == {"accept", "reject"}
    for entry in entries:
        assert entry.get(key) in kinds, entry["id"]
        if entry.get("client_rule") is None:
            assert entry.get("client_skip") or entry.get("client_connector"), entry["id"]


def skip_if_the_client_cannot_see(entry: dict) -> None:
    if entry.get("client_rule") is None and entry.get("client_skip"):
        pytest.skip(f"the client cannot see this value: {entry['client_skip']}")


def check_the_verdict(result, entry: dict) -> None:
    """A `validate_partition` result of one row against the entry: valid when accepted, else
    one failure naming the entry's client rule (and its error code, when the entry has one)."""
    if entry["verdict"] == "accept":
        assert result.failures == [] and len(result.valid) == 1, result.failures
        return
    [failure] = result.failures
    assert entry["client_rule"] in failure.rules.split(","), (failure.rules, failure.message)
    if entry.get("error_code") and entry.get("client_code_is_the_crms", True):
        assert failure.error_code == entry["error_code"], failure
