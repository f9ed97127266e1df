"""Duplicate readings: the same (site, meter, ts_ms) seen again.

Duplicates come from QoS 1 redelivery, from a gateway replaying its spool after a lost
PUBACK, and from our own restart (messages stored but not yet acked are sent again). The
index remembers the last `window` timestamps admitted per meter, which covers all of these;
a copy of a reading evicted since (a gateway re-sending hours of backlog) is passed on, and
the idempotent store and engine absorb it. Memory is bounded: `window` timestamps per meter.

Admission remembers a reading as it admits it, before the store has it. That is safe because
the service writes admitted cycles in order and retries a failing write until it is durable:
a reading admitted is stored before any later copy of it could be acknowledged, or the process
ends and takes the index with it (a restart seeds it from the store).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import NamedTuple, Protocol, TypeVar


class _Timestamped(Protocol):
    @property
    def meter(self) -> str: ...
    @property
    def ts_ms(self) -> int: ...


R = TypeVar("R", bound=_Timestamped)


class _Key(NamedTuple):
    meter: str
    ts_ms: int


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
        self.fresh(site, [_Key(meter, ts) for ts in sorted(timestamps)[-self.window:]])

    def contains(self, site: str, meter: str, ts_ms: int) -> bool:
        index = self._meters.get((site, meter))
        return index is not None and ts_ms in index.seen

    def fresh(self, site: str, readings: Iterable[R]) -> list[R]:
        """The readings not seen before, in order; remembered from now on (ingest's hot loop)."""
        meters = self._meters
        window = self.window
        out: list[R] = []
        for r in readings:
            meter, ts_ms = r.meter, r.ts_ms
            index = meters.get((site, meter))
            if index is None:
                index = meters[(site, meter)] = _MeterIndex()
            seen = index.seen
            if ts_ms in seen:
                continue
            seen.add(ts_ms)
            order = index.order
            order.append(ts_ms)
            if len(order) > window:
                seen.discard(order.popleft())
            out.append(r)
        return out

    def add(self, site: str, meter: str, ts_ms: int) -> None:
        """Remember one reading."""
        self.fresh(site, [_Key(meter, ts_ms)])
