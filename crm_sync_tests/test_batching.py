"""Batching by record count and by the exact serialized body size."""

from __future__ import annotations

from crm_sync.connectors.model import Item
from crm_sync.connectors.wire import make_batches, serialize


def _items(sizes):
    return [Item(key=str(i), record={"v": "x" * n}, body=serialize({"v": "x" * n}))
            for i, n in enumerate(sizes)]


def test_batches_respect_count_and_bytes_and_keep_every_item_once():
    items = _items([10, 500, 20, 300, 700, 5, 5, 5, 990, 40])
    prefix, suffix = b'{"records":[', b"]}"
    batches, too_large = make_batches(items, max_records=3, max_bytes=1000,
                                      envelope_bytes=len(prefix) + len(suffix))
    assert too_large == [items[8]]  # 990 chars + envelope > 1000 bytes
    flat = [i.key for b in batches for i in b]
    assert flat == [i.key for i in items if i is not items[8]]
    for batch in batches:
        body = prefix + b",".join(i.body for i in batch) + suffix
        assert len(batch) <= 3 and len(body) <= 1000


def test_a_batch_fills_up_to_exactly_the_byte_limit():
    items = _items([1, 1, 1])  # each body is {"v":"x"} = 9 bytes
    envelope = 2
    limit = envelope + 9 * 2 + 1  # two records and one comma, exactly
    batches, too_large = make_batches(items, max_records=10, max_bytes=limit,
                                      envelope_bytes=envelope)
    assert [len(b) for b in batches] == [2, 1] and too_large == []


def test_long_digit_runs_are_found_exactly_as_the_regex_finds_them():
    # parse_json sends an answer holding 20 digits in a row to the stdlib (integers beyond 64
    # bits read exactly); the check is a translate, not the regex it replaced: same verdicts.
    import random
    import re

    from crm_sync.connectors.wire import has_long_digit_run, parse_json

    regex = re.compile(rb"\d{20}")
    rng = random.Random(19)
    alphabet = b"0123456789" * 6 + b'-.:," e+\x00\xff\xd9\xb0'  # \xd9\xb0: an Arabic-Indic 0
    for _ in range(3000):
        content = bytes(rng.choice(alphabet) for _ in range(rng.randint(0, 80)))
        assert has_long_digit_run(content) == (regex.search(content) is not None), content
    assert has_long_digit_run(b'{"n":' + b"9" * 20 + b"}")
    assert not has_long_digit_run(b'{"n":' + b"9" * 19 + b',"m":' + b"9" * 19 + b"}")
    big = 123456789012345678901234
    assert parse_json(b'{"budget": %d, "n": 1.5}' % big) == {"budget": big, "n": 1.5}
    assert type(parse_json(b'{"budget": %d}' % big)["budget"]) is int
