"""Stored readings → columns, once per delivered cycle, for every consumer on the engine thread.

The engine feed and the plant watch both need, per reading, its meter, time, quality and a few
named values. Walking the rows once per consumer and per value in Python cost as much as the
engine's kernels (issue #20: the plant watch's pass alone was ~2 s per 300,000 readings). Here
the rows are walked once, by a compiled pass (accounting/ingest/_columns.c, an optional
extension built by setup.py) that fills arrays allocated here, and the rest is numpy; a consumer
maps the layout's (meter slot, value name) to its own indices once per layout (`ColumnLayout`).
The Python pass (`_python_columns`, a few C-level `map`/`np.fromiter` passes per column) stays:
where no compiler was found (`COLUMNS_PASS`), for the rows the compiled pass refuses (a value
that is not a float, an int or None, a timestamp outside int64, ...), and as the reference
tests/ingest/test_reading_columns.py compares it with. Scratch timing, 50,000 fleet rows
(5,000 meters, 3 names of which 2 carried), min of 7 interleaved runs on the 2 shared cores
(load ~1.3; a pure-Python loop timed beside it varied 9%): Python ~415-540 → compiled ~125-140
ns a reading; in cache (500 rows) the compiled walk is ~40 ns, the rest is the rows' memory.

A value is absent (NaN) when the reading has no number for it; `value_good` says whether a
present value is usable by its own quality (a reading's `value_quality`, else the reading's).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import repeat

import numpy as np

from accounting.store.base import (
    ROW_METER,
    ROW_QUALITY,
    ROW_TS,
    ROW_VALUE_QUALITY,
    ROW_VALUES,
    StoredReading,
)
from accounting.topology import SiteTopology
from tanji.quantities import BATCH_ID
from tanji.wire import QUALITY_CODES

try:  # the compiled pass (setup.py; optional: without a C compiler the Python pass runs)
    from accounting.ingest import _columns
except ImportError:  # pragma: no cover - exercised where no compiler was found
    _columns = None

#: The PLC's line state, read by the plant watch (line started / stopped).
LINE_RUNNING = "line_running"
#: A reading's quality as a small code (one pass over the rows gives both flags; -1: none of these).
_QUALITY_CODE = {q: i for i, q in enumerate(QUALITY_CODES)}
_GOOD, _COMM_ERROR = _QUALITY_CODE["good"], _QUALITY_CODE["comm_error"]

#: Which pass makes the columns here: "compiled" or "python" (as influx.LINE_PROTOCOL_PASS).
COLUMNS_PASS = "compiled" if _columns is not None else "python"


@dataclass(frozen=True, eq=False)
class ColumnLayout:
    """Which meters (slots) and which value names the columns of one site carry."""

    meters: tuple[str, ...]
    names: tuple[str, ...]
    slot: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "slot", {m: i for i, m in enumerate(self.meters)})

    @classmethod
    def of(cls, topology: SiteTopology) -> ColumnLayout:
        """The site's meters in topology order; every counter channel, batch channel and the line state."""
        names = {c for m in topology.meters for c in m.counter_channels}
        names |= {BATCH_ID for m in topology.meters if BATCH_ID in m.channels}
        return cls(tuple(m.meter_id for m in topology.meters), tuple(sorted(names | {LINE_RUNNING})))

    def same_as(self, other: ColumnLayout) -> bool:
        return self is other or (self.meters == other.meters and self.names == other.names)

    def columns(self, rows: Sequence[StoredReading]) -> ReadingColumns:
        """The rows (in delivery order) as columns."""
        if _columns is None:
            return _python_columns(self, rows)
        n = len(rows)
        meter = np.empty(n, np.int64)
        ts = np.empty(n, np.int64)
        code = np.empty(n, np.int8)
        values = np.full((n, len(self.names)), np.nan)
        any_value_quality = _columns.fill(rows, self.slot, _QUALITY_CODE, self.names, meter, ts, code, values)
        if any_value_quality is None:  # a row the compiled pass does not cover (a bool value, ...)
            return _python_columns(self, rows)
        good = code == _GOOD
        value_good = _value_good(self, rows, good) if any_value_quality else None
        return ReadingColumns(self, meter, ts, good, code == _COMM_ERROR, values, value_good)


def _python_columns(layout: ColumnLayout, rows: Sequence[StoredReading]) -> ReadingColumns:
    """`ColumnLayout.columns` in Python: where the compiled pass is not built, for what it
    refuses, and the reference it is tested against."""
    n = len(rows)
    meter = np.fromiter(map(layout.slot.get, map(ROW_METER, rows), repeat(-1, n)), np.int64, n)
    ts = np.fromiter(map(ROW_TS, rows), np.int64, n)
    code = np.fromiter(map(_QUALITY_CODE.get, map(ROW_QUALITY, rows), repeat(-1, n)), np.int8, n)
    good = code == _GOOD
    comm_error = code == _COMM_ERROR
    dicts = list(map(ROW_VALUES, rows))
    values = np.full((n, len(layout.names)), np.nan)
    for k, name in enumerate(layout.names):
        # A name no reading carries (a site's channels its meters do not all publish, the line
        # state of a site without a PLC) stays NaN: `any` over `in` passes the rows' dicts
        # faster than `get` fills a column, and stops at the first reading that has it (a
        # scratch timing with the suite running beside it, cache-cold, 70,000 fleet rows with
        # two such names of three: the whole method 0.82 → 0.69 µs a reading).
        if not any(map(dict.__contains__, dicts, repeat(name, n))):
            continue
        try:  # C loops (map over dict.get): the common case, numbers or nothing
            values[:, k] = np.fromiter(map(dict.get, dicts, repeat(name, n), repeat(np.nan, n)), np.float64, n)
        except (TypeError, ValueError):  # a None among the values
            values[:, k] = np.array([d.get(name) for d in dicts], dtype=np.float64)
    value_good = _value_good(layout, rows, good) if any(map(ROW_VALUE_QUALITY, rows)) else None
    return ReadingColumns(layout, meter, ts, good, comm_error, values, value_good)


def _value_good(layout: ColumnLayout, rows: Sequence[StoredReading], good: np.ndarray) -> np.ndarray:
    """Per value, whether it is usable by its own quality. Per-value qualities are rare (a
    gateway marks single registers); the reading's own quality holds for every value otherwise."""
    value_good = np.repeat(good[:, None], len(layout.names), axis=1)
    for i, vq in enumerate(map(ROW_VALUE_QUALITY, rows)):
        if not vq:
            continue
        for k, name in enumerate(layout.names):
            value_good[i, k] = vq.get(name, "good") == "good"  # type: ignore[union-attr]
    return value_good


@dataclass(frozen=True, eq=False)
class ReadingColumns:
    """One site's delivered readings as columns (row i is the i-th reading delivered)."""

    layout: ColumnLayout
    meter: np.ndarray  # int64, the layout's meter slot, -1 for a meter the layout does not know
    ts: np.ndarray  # int64, ms
    good: np.ndarray  # bool, the reading's quality is good
    comm_error: np.ndarray  # bool, the reading's quality is comm_error (the meter did not answer)
    values: np.ndarray  # float64 (n, names), NaN where the reading has no number
    value_good: np.ndarray | None  # bool (n, names), None: equal to `good` for every value

    def __len__(self) -> int:
        return len(self.ts)
