"""Duplicate readings: the same (site, meter, ts_ms) seen again.

Duplicates come from QoS 1 redelivery, from a gateway replaying its spool after a lost
PUBACK, and from our own restart (messages stored but not yet acked are sent again). The
index remembers the last `window` timestamps admitted per meter, which covers all of these;
a copy of a reading evicted since (a gateway re-sending hours of backlog) is passed on, and
the idempotent store and engine absorb it. Memory is bounded: `window` timestamps per meter.
"""

from __future__ import annotations

from collections import deque


class _MeterIndex:
    __slots__ = ("order", "seen")

    def __init__(self) -> None:
        self.order: deque[int] = deque()
        self.seen: set[int] = set()


class DedupIndex:
    """Per (site, meter): the last `window` timestamps admitted."""

    def __init__(self, window: int = 4096) -> None:
        self.window = window
        self._meters: dict[tuple[str, str], _MeterIndex] = {}

    def seed(self, site: str, meter: str, timestamps: list[int]) -> None:
        """Remember timestamps already stored (on restart, from the store)."""
        for ts in sorted(timestamps)[-self.window:]:
            self.add(site, meter, ts)

    def contains(self, site: str, meter: str, ts_ms: int) -> bool:
        index = self._meters.get((site, meter))
        return index is not None and ts_ms in index.seen

    def add(self, site: str, meter: str, ts_ms: int) -> None:
        """Remember a reading; called once it is durably stored, never before."""
        index = self._meters.get((site, meter))
        if index is None:
            index = self._meters[(site, meter)] = _MeterIndex()
        if ts_ms in index.seen:
            return
        index.seen.add(ts_ms)
        index.order.append(ts_ms)
        if len(index.order) > self.window:
            index.seen.discard(index.order.popleft())
