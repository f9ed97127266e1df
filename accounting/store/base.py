"""The store interface every adapter implements, and the records that cross it.

Ingest acknowledges an MQTT message to the broker only after `write_readings` has returned,
so an adapter's contract is: when `write_readings` returns, the rows are durable (committed,
or spilled to a local disk queue that survives a crash). Writes must be idempotent on
(site, meter, ts_ms): a message redelivered after a crash is written again, and must not
appear twice.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from operator import itemgetter
from typing import Any, NamedTuple

import numpy as np

from tanji.quantities import QUANTITIES

#: The value columns/fields of a stored reading: the whole quantity catalogue, in a fixed order.
VALUE_NAMES: tuple[str, ...] = tuple(QUANTITIES)
#: The quality of a value that may move a counter.
GOOD = "good"

Channel = tuple[str, str]  # (meter id, quantity)
ChannelArrays = tuple[np.ndarray, np.ndarray, np.ndarray]  # (channel position, ts_ms, value)


class StoredReading(NamedTuple):
    """One validated meter reading, as ingest hands it to a store and a store gives it back."""

    site: str
    gateway: str
    meter: str
    ts_ms: int
    quality: str
    values: dict[str, float | None]
    value_quality: dict[str, str] | None = None


def _field(name: str) -> itemgetter:
    return itemgetter(StoredReading._fields.index(name))


#: A StoredReading's fields as C getters, for the passes that walk a cycle's rows by the
#: thousand (`map(ROW_TS, rows)`: line protocol, columns, the split by site); one definition
#: for every module that does.
ROW_SITE, ROW_GATEWAY, ROW_METER = _field("site"), _field("gateway"), _field("meter")
ROW_TS, ROW_QUALITY, ROW_VALUES = _field("ts_ms"), _field("quality"), _field("values")
ROW_VALUE_QUALITY = _field("value_quality")


class EncodedReadings(NamedTuple):
    """Rows made ready for one store's write by `ReadingStore.encode_readings`."""

    rows: Sequence[StoredReading]
    payload: Any = None


class QuarantinedMessage(NamedTuple):
    """A message (or one reading of it) that failed admission: kept with its reason, never
    silently dropped. `payload` is its first bytes (`accounting.ingest.quarantine` bounds
    it; empty beyond the rate cap); `payload_bytes` and `sha256` describe the whole."""

    received_ms: int
    topic: str
    reason: str
    detail: str
    payload: bytes
    site: str | None = None
    payload_bytes: int | None = None
    sha256: str | None = None

    @property
    def payload_dropped(self) -> bool:
        """The payload was not kept (beyond the quarantine's rate cap)."""
        return not self.payload and bool(self.payload_bytes)


class ReadingStore(ABC):
    """Readings, footprints and quarantine of one or more sites.

    `write_readings` returns how many of the rows were new, when the store can tell (SQLite
    can; InfluxDB silently overwrites a point with the same series and time, so its adapter
    returns the number of rows written). Timestamps are UTC epoch milliseconds; intervals are
    half-open [start_ms, end_ms).
    """

    #: How many cycles' writes ingest may have in flight at once (accounting/ingest/pipeline.py).
    #: 1: one after the other on the store thread. More only where `write_encoded` calls from
    #: several threads at once are safe and the database works on them in parallel (InfluxDB).
    concurrent_writes: int = 1

    def split_first_write(self, encoded: EncodedReadings) -> tuple[EncodedReadings, EncodedReadings]:
        """A cycle's write as its first request and the rest, for concurrent writes (pipeline.py):
        the first carries the cycle's evidence (`write_with_evidence`) and goes in cycle order,
        the rest may overlap the next cycle's. Default: all of it in the first."""
        return encoded, EncodedReadings(())

    def write_readings(self, rows: Sequence[StoredReading]) -> int:
        """Durably store rows; idempotent on (site, meter, ts_ms)."""
        return self.write_encoded(self.encode_readings(rows))

    def encode_readings(self, rows: Sequence[StoredReading]) -> EncodedReadings:
        """The CPU part of a write (formatting), split from the I/O so that ingest can do it
        while the previous cycle's write waits on the database. Default: nothing ahead."""
        return EncodedReadings(rows)

    @abstractmethod
    def write_encoded(self, encoded: EncodedReadings) -> int:
        """`write_readings` for rows `encode_readings` prepared, with the same contract."""

    @abstractmethod
    def read_readings(self, site: str, meter: str | None, start_ms: int, end_ms: int) -> list[StoredReading]:
        """Readings of one meter (or every meter when `meter` is None), in timestamp order."""

    def read_channel_arrays(self, site: str, channels: Sequence[Channel], start_ms: int,
                            end_ms: int) -> ChannelArrays:
        """Good values of ``channels`` with ``start_ms <= ts < end_ms`` as columns:
        ``(position in channels, ts_ms, value)``, sorted by (position, ts). A value counts when
        it is present and its own quality (else the reading's) is ``good``: a stale or failed
        value must not move a counter. The engine's and recompute's read path: no objects per
        reading. Default: through ``read_readings``; stores override it with a narrower query."""
        if end_ms <= start_ms or not channels:
            return _empty_arrays()
        meters = {m for m, _ in channels}
        rows = self.read_readings(site, next(iter(meters)) if len(meters) == 1 else None,
                                  start_ms, end_ms)
        return channel_arrays(channels, ((r.meter, r.ts_ms, r.quality, r.value_quality, r.values)
                                         for r in rows))

    def iter_channel_arrays(self, site: str, channels: Sequence[Channel], start_ms: int,
                            end_ms: int, window_ms: int | None = None) -> Iterator[ChannelArrays]:
        """``read_channel_arrays`` in consecutive time windows (``stream_window_ms`` by default),
        so a year streams with the memory of one window. Windows are in time order and each is
        sorted by (position, ts): fed in this order the engine only ever appends."""
        window = window_ms or self.stream_window_ms
        lo = start_ms
        while lo < end_ms:
            hi = min(end_ms, lo + window)
            chunk = self.read_channel_arrays(site, channels, lo, hi)
            if len(chunk[0]):
                yield chunk
            lo = hi

    #: Time window per query when streaming readings (``iter_channel_arrays``).
    stream_window_ms = 6 * 3_600_000

    @abstractmethod
    def reading_span(self, site: str) -> tuple[int, int] | None:
        """``(oldest, newest)`` reading timestamp of a site, or None when it has none."""

    def find_readings(self, site: str, meter: str, timestamps: Sequence[int]) -> dict[int, StoredReading]:
        """The stored readings of one meter at exactly these timestamps, by timestamp.

        Ingest asks only about copies its dedup index cannot vouch for (accounting/ingest/dedup.py),
        so this is off the hot path: one range read per cluster of timestamps an hour apart.
        """
        wanted = sorted(set(timestamps))
        found: dict[int, StoredReading] = {}
        start = 0
        for i in range(1, len(wanted) + 1):
            if i == len(wanted) or wanted[i] - wanted[i - 1] > 3_600_000:
                lo, hi = wanted[start], wanted[i - 1]
                for r in self.read_readings(site, meter, lo, hi + 1):
                    found[r.ts_ms] = r
                start = i
        keep = set(wanted)
        return {ts: r for ts, r in found.items() if ts in keep}

    @abstractmethod
    def latest(self, site: str) -> dict[str, StoredReading]:
        """The newest reading of each meter of a site, by meter id."""

    @abstractmethod
    def recent_timestamps(self, site: str, meter: str, limit: int) -> list[int]:
        """The newest `limit` timestamps of a meter, oldest first: seeds ingest's dedup index on restart."""

    @abstractmethod
    def write_footprints(self, site: str, start_ms: int, end_ms: int, computed_ms: int,
                         footprints: Sequence[dict[str, Any]]) -> None:
        """Store engine results for a window; a later computation of the same window replaces it."""

    @abstractmethod
    def read_footprints(self, site: str, start_ms: int, end_ms: int) -> list[dict[str, Any]]:
        """Stored results whose window lies within [start_ms, end_ms)."""

    @abstractmethod
    def quarantine(self, messages: Sequence[QuarantinedMessage]) -> None:
        """Durably keep rejected messages with their reasons."""

    @abstractmethod
    def quarantined(self, limit: int = 100) -> list[QuarantinedMessage]:
        """The most recent quarantined messages, newest first."""

    @abstractmethod
    def count_readings(self, site: str | None = None) -> int:
        """How many readings are stored (exact; the fault tests compare it with what was sent)."""

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until nothing is pending locally (spilled); True when drained. SQLite never spills."""
        return True

    @abstractmethod
    def close(self) -> None:
        """Release connections and threads; safe to call twice."""


def _empty_arrays() -> ChannelArrays:
    return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)


def channel_arrays(channels: Sequence[Channel], rows: Any) -> ChannelArrays:
    """Columns of the good values of ``channels`` in ``rows`` of ``(meter, ts_ms, quality,
    value_quality, values)`` (the shared rule of ``read_channel_arrays``)."""
    by_meter: dict[str, list[tuple[int, str]]] = {}
    for i, (meter, quantity) in enumerate(channels):
        by_meter.setdefault(meter, []).append((i, quantity))
    pos: list[int] = []
    ts: list[int] = []
    val: list[float] = []
    for meter, ts_ms, quality, vq, values in rows:
        for i, quantity in by_meter.get(meter, ()):
            v = values.get(quantity)
            if v is None or (vq.get(quantity, GOOD) if vq else quality) != GOOD:
                continue
            pos.append(i)
            ts.append(ts_ms)
            val.append(float(v))
    return sort_arrays(np.array(pos, np.int64), np.array(ts, np.int64), np.array(val, np.float64))


def good_columns(wanted: Sequence[tuple[int, str]], ts_ms: Sequence[int], quality: Sequence[str],
                 value_quality: Sequence[str | None], values: Sequence[Sequence[float | None]]) -> list[ChannelArrays]:
    """Per wanted `(position, quantity)` of one meter, the columns of its good values, from a store's
    columns (`values[j]` holds `wanted[j]`'s quantity, None where absent): the row's quality unless
    its `value_quality` (JSON) names the quantity, absent values left out. The column-wise form of
    `channel_arrays`' rule, shared by the stores' `read_channel_arrays`."""
    ts = np.array(ts_ms, np.int64)
    good = np.array([q == GOOD for q in quality], bool)
    vq = [(k, json.loads(v)) for k, v in enumerate(value_quality) if v]
    out = []
    for (i, quantity), column in zip(wanted, values, strict=True):
        val = np.array(column, np.float64)  # None -> nan
        ok = good.copy()
        for k, q in vq:
            ok[k] = q.get(quantity, GOOD) == GOOD
        ok &= ~np.isnan(val)
        out.append((np.full(int(ok.sum()), i, np.int64), ts[ok], val[ok]))
    return out


def joined_arrays(parts: Sequence[ChannelArrays]) -> ChannelArrays:
    """Parts of `good_columns` as one sorted `ChannelArrays`."""
    if not parts:
        return _empty_arrays()
    return sort_arrays(*(np.concatenate([p[k] for p in parts]) for k in range(3)))


def sort_arrays(pos: np.ndarray, ts: np.ndarray, val: np.ndarray) -> ChannelArrays:
    """Sorted by (position, ts)."""
    if len(pos) > 1:
        order = np.lexsort((ts, pos))
        pos, ts, val = pos[order], ts[order], val[order]
    return pos, ts, val
