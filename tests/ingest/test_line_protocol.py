"""Line protocol for readings: the msgspec fast path writes what the general path writes.

Both are parsed back (field set split, each number read as a float) and compared, on generated
values: integers, floats of every magnitude, nulls, per-value quality, tag characters that
need escaping.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from accounting.store.base import StoredReading
from accounting.store.influx import _general_line, _prefix, gzip_level_for, reading_lines
from tanji.quantities import QUANTITIES
from tanji.wire import QUALITY_CODES

numbers = st.one_of(st.integers(-(2**63), 2**63), st.floats(allow_nan=False, allow_infinity=False))


def parse(line: bytes) -> tuple[bytes, dict[str, float | str], int]:
    """(series key, fields, timestamp) of one line; string fields keep their quotes."""
    head, _, ts = line.rpartition(b" ")
    series, field_set = _split_series(head)
    fields: dict[str, float | str] = {}
    for item in _items(field_set.decode()):
        name, _, value = item.partition("=")
        fields[name] = value if value.startswith('"') else float(value)
    return series, fields, int(ts)


def _split_series(head: bytes) -> tuple[bytes, bytes]:
    """Series key and field set: split at the first space the tags do not escape."""
    i = head.index(b" ")
    while head[i - 1:i] == b"\\":
        i = head.index(b" ", i + 1)
    return head[:i], head[i + 1:]


def _items(field_set: str) -> list[str]:
    out, current, quoted, escaped = [], "", False, False
    for ch in field_set:
        if ch == "," and not quoted:
            out.append(current)
            current = ""
            continue
        current += ch
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
    out.append(current)
    return out


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(QUANTITIES)), st.one_of(numbers, st.none()), max_size=6),
       st.sampled_from(QUALITY_CODES), st.booleans(),
       st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_. ,=-]{0,11}", fullmatch=True))  # site-file ids, plus what tags escape
def test_fast_and_general_lines_carry_the_same_fields(values, quality, flagged, meter):
    vq = {name: "stale" for name in list(values)[:1]} if flagged and values else None
    row = StoredReading("site 1", "gw,a", meter, 1_700_000_000_123, quality, values, vq)
    (line,) = reading_lines([row])
    general = _general_line(_prefix(row.site, row.gateway, row.meter), quality, values, vq, row.ts_ms)
    assert parse(line) == parse(general)
    series, fields, ts = parse(line)
    assert series == b"reading,site=site\\ 1,gateway=gw\\,a,meter=" + meter.replace(",", "\\,").replace(
        " ", "\\ ").replace("=", "\\=").encode()
    assert ts == row.ts_ms
    assert fields["quality"] == f'"{quality}"'
    assert {k: v for k, v in fields.items() if k not in ("quality", "value_quality")} == \
        {k: float(v) for k, v in values.items() if v is not None}


def test_common_reading_takes_the_fast_path():
    row = StoredReading("s", "g", "m", 5, "good", {"energy_import_kwh": 12345.678, "power_kw": 2}, None)
    assert reading_lines([row]) == [b'reading,site=s,gateway=g,meter=m energy_import_kwh=12345.678,power_kw=2,'
                                    b'quality="good" 5']


@pytest.mark.parametrize(("url", "level"), [
    ("http://127.0.0.1:8086", 0), ("http://localhost:8086", 0), ("http://[::1]:8086", 0),
    ("http://influxdb:8086", 1), ("https://influx.example.com", 1), ("http://10.0.0.5:8086", 1),
])
def test_gzip_only_when_the_bytes_cross_a_network(url, level):
    assert gzip_level_for(url) == level
