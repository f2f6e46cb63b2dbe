"""Property-based tests (Hypothesis) of payload building and batching.

- `make_batches`, with each CRM connector's own limits and with arbitrary ones: no request body
  (`prefix + b",".join(bodies) + suffix`, exactly as sent) is over max_bytes, no batch holds more
  than max_records, every record is in exactly one batch or in `too_large`, in input order, and
  a record lands in `too_large` exactly when no request could carry it.
- `build_record`, for every sync of syncs.yaml and any source values: either the row is refused
  while its values are converted (ValueError/TypeError: the runner quarantines it), or the
  record serializes to JSON that parses back to the same record and holds no NaN or infinity.
"""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crm_sync.connectors import RESOURCE_CLASSES
from crm_sync.connectors.model import Item
from crm_sync.connectors.wire import make_batches, serialize
from crm_sync.spec import load_spec
from crm_sync.transform.convert import mapped_fields
from crm_sync_tests.bundled_spec import bundled_unlinked

SPEC = bundled_unlinked()
SETTINGS = settings(max_examples=75, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.large_base_example])


def _connector(sync_name: str):
    sync = SPEC.sync(sync_name)
    core = SimpleNamespace(settings=SimpleNamespace(max_concurrency=4, max_backoff_seconds=30),
                           stats=SimpleNamespace())
    return RESOURCE_CLASSES[sync.crm].connector_class(sync, core)


CONNECTORS = {sync.crm: _connector(sync.name) for sync in SPEC.syncs}


# -- batching ----------------------------------------------------------------------------------
def _check_batches(items, batches, too_large, max_records, max_bytes, prefix, suffix):
    envelope = len(prefix) + len(suffix)
    for batch in batches:
        assert batch, "no empty batch"
        assert len(batch) <= max_records
        body = prefix + b",".join(i.body for i in batch) + suffix
        if max_bytes is not None:
            assert len(body) <= max_bytes
    sent = [i for batch in batches for i in batch]
    # Each record exactly once, in order; too large = no request could carry it.
    assert sorted(id(i) for i in sent + too_large) == sorted(id(i) for i in items)
    expected_too_large = [i for i in items
                          if max_bytes is not None and envelope + len(i.body) > max_bytes]
    assert too_large == expected_too_large
    assert sent == [i for i in items if all(i is not t for t in too_large)]


def _items(sizes: list[int]) -> list[Item]:
    # Bodies of exact sizes; make_batches only measures them.
    return [Item(key=str(n), record={}, body=b"x" * size) for n, size in enumerate(sizes)]


@pytest.mark.parametrize("crm", sorted(CONNECTORS))
@SETTINGS
@given(data=st.data())
def test_batches_fit_every_connector_limit(crm, data):
    connector = CONNECTORS[crm]
    limit = connector.max_bytes
    # Sizes around the byte limit (when there is one) and small ones, many of them.
    big = st.integers(min_value=max(limit - 2000, 0), max_value=limit + 5) if limit else \
        st.integers(min_value=0, max_value=5000)
    sizes = data.draw(st.lists(st.one_of(st.integers(0, 300), big), max_size=40))
    if data.draw(st.booleans()):
        sizes = sizes + [2] * data.draw(st.integers(0, 2 * connector.max_records))
    # Any configured batch size: the connector caps it at the CRM's maximum.
    batch_size = min(data.draw(st.integers(1, 2 * connector.max_records)), connector.max_records)
    items = _items(sizes)
    prefix, suffix = connector.prefix, connector.suffix
    # Exactly the call Connector.upsert makes.
    batches, too_large = make_batches(items, batch_size, limit, len(prefix) + len(suffix))
    _check_batches(items, batches, too_large, batch_size, limit, prefix, suffix)
    for batch in batches:  # the connector's own body is the one measured
        body = connector.body(batch)
        assert body == prefix + b",".join(i.body for i in batch) + suffix
        assert limit is None or len(body) <= limit


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8),
                                                                      children, max_size=4),
    max_leaves=12)


@SETTINGS
@given(records=st.lists(st.dictionaries(st.text(max_size=10), JSON_VALUES, max_size=5),
                        max_size=30),
       max_records=st.integers(1, 8), max_bytes=st.none() | st.integers(2, 400),
       prefix=st.binary(max_size=20), suffix=st.binary(max_size=5))
def test_batches_of_real_records_respect_arbitrary_limits(records, max_records, max_bytes,
                                                          prefix, suffix):
    # Multi-byte UTF-8 text: limits are in bytes, not characters.
    items = [Item(key=str(n), record=r, body=serialize(r)) for n, r in enumerate(records)]
    batches, too_large = make_batches(items, max_records, max_bytes, len(prefix) + len(suffix))
    _check_batches(items, batches, too_large, max_records, max_bytes, prefix, suffix)


# -- payloads ----------------------------------------------------------------------------------
HOSTILE = ["", " ", "NaN", "nan", "inf", "-Infinity", "1e999", "-1e309", "1e308", "0x1F",
           "99999999999999999999", "1_000", "12.5", "-0", "true", "yes", "null", "[]", "{}",
           '{"a": NaN}', '{"a": Infinity}', '{"a": 1e999}', '{"a": 1}', '[1, 2]',
           "=HYPERLINK(\"http://x\",\"y\")", "+cmd|' /C calc'!A0", "\x00", "\ufeff", "\u202e",
           "😀", "שלום", "a\nb", "\"'\\", "2026-02-30"]
VALUE = st.none() | st.sampled_from(HOSTILE) | st.text(max_size=30) | \
    st.floats().map(repr) | st.integers().map(str) | JSON_VALUES.map(json.dumps)


def _no_constant(name):
    raise AssertionError(f"{name} in a request body")


@pytest.mark.parametrize("sync_name", [s.name for s in SPEC.syncs])
@SETTINGS
@given(data=st.data())
def test_build_record_gives_json_that_round_trips_without_nan(sync_name, data):
    sync = SPEC.sync(sync_name)
    connector = CONNECTORS[sync.crm]
    connector.spec = sync
    row = {crm_field: data.draw(VALUE, label=crm_field) for crm_field in sync.fields}
    if sync.attributes_json_column:
        row["_extra"] = data.draw(st.none() | VALUE | st.dictionaries(
            st.text(max_size=6), JSON_VALUES, max_size=4).map(
                lambda d: json.dumps(d, allow_nan=True)), label="_extra")
    key = data.draw(st.text(min_size=1, max_size=20), label="key")
    crm_id = data.draw(st.none() | st.text(max_size=18), label="crm_id")
    try:
        fields = mapped_fields(sync, row)
    except (ValueError, TypeError):
        return  # refused while converting: the runner quarantines the row
    item = connector.item(key, fields, crm_id)  # must not raise: nothing quarantines it
    parsed = json.loads(item.body.decode("utf-8"), parse_constant=_no_constant)
    assert parsed == item.record
    assert item.body == serialize(item.record)

    def finite(value):
        if isinstance(value, float):
            assert math.isfinite(value)
        elif isinstance(value, dict):
            for v in value.values():
                finite(v)
        elif isinstance(value, list):
            for v in value:
                finite(v)
    finite(parsed)


@SETTINGS
@given(record=st.dictionaries(st.text(), JSON_VALUES),
       bad=st.sampled_from([math.nan, math.inf, -math.inf]))
def test_serialize_round_trips_and_refuses_non_finite_numbers(record, bad):
    assert json.loads(serialize(record)) == record
    with pytest.raises(ValueError):
        serialize({**record, "bad": [bad]})
