"""Line protocol for readings: the msgspec fast path writes what the general path writes.

Both are parsed back (field set split, each number read as a float) and compared, on generated
values: integers, floats of every magnitude, nulls, per-value quality, tag characters that
need escaping. The compiled pass (accounting/store/_line_protocol.c) is compared byte for byte
with the Python pass it stands in for, and each of its refusals is shown to leave the work to it.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from accounting.store import influx
from accounting.store.base import StoredReading
from accounting.store.influx import (
    _general_fields,
    _general_line,
    _prefix,
    _prefixes,
    _python_chunks,
    _reading_lines_per_row,
    gzip_level_for,
    reading_chunks,
    reading_lines,
)
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


rows_strategy = st.lists(st.builds(
    StoredReading,
    st.sampled_from(["site 1", "s"]), st.sampled_from(["gw,a", "g"]),
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_. ,=-]{0,11}", fullmatch=True),
    st.integers(-(2**62), 2**62),
    st.sampled_from([*QUALITY_CODES, "not-a-code"]),  # a quality outside the codes takes the general path
    st.dictionaries(st.sampled_from(sorted(QUANTITIES)), st.one_of(numbers, st.none()), max_size=4),
    st.one_of(st.none(), st.just({}), st.dictionaries(st.sampled_from(sorted(QUANTITIES)),
                                                       st.sampled_from(QUALITY_CODES), max_size=2))),
    max_size=40)


@settings(max_examples=300, deadline=None)
@given(rows_strategy)
def test_a_cycle_formatted_at_once_is_the_rows_formatted_one_by_one(rows):
    """`reading_lines` formats a cycle in one pass; byte for byte what the loop per row (the
    formatting before issue #20's rewrite) writes, odd rows (nulls, flags, no values) included."""
    assert reading_lines(rows) == _reading_lines_per_row(rows)


def test_a_cycle_of_common_readings_is_formatted_in_one_pass():
    rows = [StoredReading("s", "g", f"m{i}", 1_700_000_000_000 + i, "good",
                          {"energy_import_kwh": 1000.0 + i / 7, "power_kw": i}, None) for i in range(1000)]
    rows[17] = rows[17]._replace(values={"energy_import_kwh": None, "power_kw": 1.5})  # a null: the general line
    rows[99] = rows[99]._replace(value_quality={"power_kw": "stale"})
    lines = reading_lines(rows)
    assert lines == _reading_lines_per_row(rows)
    assert lines[0] == b'reading,site=s,gateway=g,meter=m0 energy_import_kwh=1000.0,power_kw=0,quality="good" ' \
                       b'1700000000000'
    assert lines[17] == b'reading,site=s,gateway=g,meter=m17 power_kw=1.5,quality="good" 1700000000017'


@settings(max_examples=200, deadline=None)
@given(rows_strategy, st.integers(1, 7))
def test_request_bodies_are_the_lines_joined(rows, per_chunk):
    """The bodies the store posts: the per-row lines, `per_chunk` to a body, joined by newlines."""
    lines = _reading_lines_per_row(rows)
    assert reading_chunks(rows, per_chunk) == [b"\n".join(lines[i:i + per_chunk])
                                               for i in range(0, len(lines), per_chunk)]


def compiled(rows: list[StoredReading], per_chunk: int, blob: bytes | None = None) -> list[bytes] | None:
    """The compiled pass alone, on the cache and encoder `reading_chunks` gives it."""
    blob = influx._encode_json([r.values for r in rows]) if blob is None else blob
    return influx._line_protocol.bodies(rows, blob, influx._PREFIXES, influx._QUALITY_FIELDS, per_chunk,
                                        _general_fields)


def python(rows: list[StoredReading], per_chunk: int) -> list[bytes]:
    values = [r.values for r in rows]
    return _python_chunks(rows, values, influx._encode_json(values), per_chunk)


def test_the_compiled_pass_is_built_and_used():
    """bin/setup installs a C compiler, so the suite (and the demo) run the compiled pass; a
    build that silently fell back to Python would leave the figures of docs/storage.md unmet."""
    assert influx._line_protocol is not None, "accounting/store/_line_protocol.c was not built (see setup.py)"
    assert influx.LINE_PROTOCOL_PASS == "compiled"


def test_reading_chunks_takes_the_compiled_pass_once_the_prefixes_are_cached(monkeypatch):
    rows = [StoredReading("s", "g", f"m{i}", 1_700_000_000_000 + i, "good", {"power_kw": i / 3}, None)
            for i in range(50)]
    calls = []
    real = influx._line_protocol.bodies
    first = reading_chunks(rows, 20)  # caches the prefixes (the compiled pass refuses unknown meters)

    class Spy:
        def bodies(self, *args):
            out = real(*args)
            calls.append(out)
            return out

    monkeypatch.setattr(influx, "_line_protocol", Spy())
    assert reading_chunks(rows, 20) == first == python(rows, 20)
    assert len(calls) == 1 and calls[0] is not None


@settings(max_examples=300, deadline=None)
@given(rows_strategy, st.integers(1, 7))
def test_the_compiled_pass_writes_the_python_pass_byte_for_byte(rows, per_chunk):
    _prefixes(rows)  # every meter's prefix cached, as after a meter's first cycle
    got = compiled(rows, per_chunk)
    assert got is not None  # every shape the strategy makes is covered (odd rows via `general`)
    assert got == python(rows, per_chunk)
    lines = _reading_lines_per_row(rows)
    assert got == [b"\n".join(lines[i:i + per_chunk]) for i in range(0, len(lines), per_chunk)]


def test_the_compiled_pass_on_a_fleet_cycle_across_body_boundaries():
    rows = [StoredReading(f"s{i % 3}", f"g{i % 7}", f"m{i % 50}", 1_700_000_000_000 + i, QUALITY_CODES[i % 4],
                          {"energy_import_kwh": 1000.0 + i / 7, "power_kw": -i * 1e-9}, None) for i in range(5003)]
    _prefixes(rows)
    for per_chunk in (1, 2, 1000, 5003, 10_000):
        assert compiled(rows, per_chunk) == python(rows, per_chunk)


@pytest.mark.parametrize("row", [
    StoredReading("s", "g", "never-seen-before", 5, "good", {"power_kw": 1.0}, None),  # prefix not cached
    StoredReading("s", "g", "m", 5.0, "good", {"power_kw": 1.0}, None),  # a float timestamp
    StoredReading("s", "g", "m", True, "good", {"power_kw": 1.0}, None),  # a bool is not an int here
    StoredReading("s", "g", "m", 2**64, "good", {"power_kw": 1.0}, None),  # beyond int64
    StoredReading("s", "g", "m", 5, "good", {"power kw": 1.0}, None),  # a name the catalogue never has
    StoredReading("s", "g", "m", 5, "good", {"power_kw": True}, None),  # not a number
    StoredReading("s", "g", "m", 5, "good", {"power_kw": "1"}, None),
    StoredReading("s", "g", "m", 5, "good", {"a\\b": 1.0}, None),  # an escape in the JSON
])
def test_what_the_compiled_pass_refuses_is_left_to_the_python_pass(row):
    _prefix("s", "g", "m")
    influx._PREFIXES.get("s", {}).get("g", {}).pop("never-seen-before", None)
    assert compiled([row], 10) is None
    assert reading_chunks([row], 10) == _chunked_per_row([row], 10)


def _chunked_per_row(rows, per_chunk):
    lines = _reading_lines_per_row(rows)
    return [b"\n".join(lines[i:i + per_chunk]) for i in range(0, len(lines), per_chunk)]


@pytest.mark.parametrize("blob", [
    b"", b"[]", b"[{}]extra", b'[{"power_kw":1.0},{"power_kw":2.0}]', b'{"power_kw":1.0}',
    b'[{"power_kw":1.0]', b'[{"power_kw":}]', b'[{"power_kw"1.0}]', b'[{power_kw:1.0}]',
])
def test_a_blob_of_another_shape_than_the_rows_is_refused(blob):
    """The blob must be msgspec's list of exactly these rows' dicts; anything else is refused,
    never read past its end."""
    _prefix("s", "g", "m")
    row = StoredReading("s", "g", "m", 5, "good", {"power_kw": 1.0}, None)
    assert compiled([row], 10, blob) is None


def test_an_error_in_the_general_formatter_is_raised_not_swallowed():
    _prefix("s", "g", "m")
    row = StoredReading("s", "g", "m", 5, "good", {"power_kw": None}, None)
    with pytest.raises(ZeroDivisionError):
        influx._line_protocol.bodies([row], b'[{"power_kw":null}]', influx._PREFIXES, influx._QUALITY_FIELDS, 10,
                                     lambda *a: 1 / 0)
    with pytest.raises(TypeError, match="must return bytes"):
        influx._line_protocol.bodies([row], b'[{"power_kw":null}]', influx._PREFIXES, influx._QUALITY_FIELDS, 10,
                                     lambda *a: "text")
    with pytest.raises(ValueError, match="per_chunk"):
        influx._line_protocol.bodies([row], b'[{"power_kw":null}]', influx._PREFIXES, influx._QUALITY_FIELDS, 0,
                                     _general_fields)
