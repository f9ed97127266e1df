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

The index holds timestamps only (no values: that would cost memory per reading and time on
the hot path). So it cannot say alone whether a copy *agrees* with the first: with a
`doubtful` list, `fresh` hands admission the readings it must check against the first copy
(`accounting.ingest.admission`: first value wins, a different one is a conflict) instead of
deciding: those seen before, and those older than everything the index can vouch for
(`floor`: the newest timestamp evicted, or below the oldest seeded from a store that has
more), which only the store can answer.
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
    __slots__ = ("floor", "order", "seen")

    def __init__(self) -> None:
        self.order: deque[int] = deque()
        self.seen: set[int] = set()
        self.floor: int | None = None  # a timestamp at or below it may be stored without being in `seen`


#: `fresh` marks a doubtful reading as seen before (in the index) or older than the index knows.
SEEN, BEYOND = "seen", "beyond"


class DedupIndex:
    """Per (site, meter): the last `window` timestamps admitted."""

    def __init__(self, window: int = 4096) -> None:
        self.window = window
        self._meters: dict[str, dict[str, _MeterIndex]] = {}  # site → meter → index (no tuple key per reading)

    def seed(self, site: str, meter: str, timestamps: list[int], complete: bool | None = None) -> None:
        """Remember timestamps already stored (on restart, the store's newest `window`).

        `complete`: the store holds no older ones (default: fewer than `window` were given);
        otherwise a reading older than the oldest of them is checked against the store.
        """
        newest = sorted(timestamps)[-self.window:]
        self.fresh(site, [_Key(meter, ts) for ts in newest])
        if newest and not (len(timestamps) < self.window if complete is None else complete):
            index = self._meters[site][meter]
            floor = newest[0] - 1
            index.floor = floor if index.floor is None else max(index.floor, floor)

    def contains(self, site: str, meter: str, ts_ms: int) -> bool:
        index = self._meters.get(site, {}).get(meter)
        return index is not None and ts_ms in index.seen

    def fresh(self, site: str, readings: Iterable[R], doubtful: list[tuple[str, R]] | None = None) -> list[R]:
        """The readings not seen before, in order; remembered from now on (ingest's hot loop).

        Without `doubtful`, a copy seen before is dropped and one older than the index knows
        is passed as fresh (the idempotent store absorbs it). With it, both go there instead,
        as (`SEEN` or `BEYOND`, reading), unremembered, for the caller to check.
        """
        meters = self._meters.get(site)
        if meters is None:
            meters = self._meters[site] = {}
        window = self.window
        readings = readings if isinstance(readings, list) else list(readings)
        out: list[R] | None = None  # made at the first reading left out (as a rule, none is)
        for i, r in enumerate(readings):
            meter, ts_ms = r.meter, r.ts_ms
            index = meters.get(meter)
            if index is None:
                index = meters[meter] = _MeterIndex()
            seen = index.seen
            if ts_ms in seen:
                if out is None:
                    out = readings[:i]
                if doubtful is not None:
                    doubtful.append((SEEN, r))
                continue
            floor = index.floor
            if floor is not None and ts_ms <= floor and doubtful is not None:
                if out is None:
                    out = readings[:i]
                doubtful.append((BEYOND, r))
                continue
            seen.add(ts_ms)
            order = index.order
            order.append(ts_ms)
            if len(order) > window:
                evicted = order.popleft()
                seen.discard(evicted)
                if floor is None or evicted > floor:
                    index.floor = evicted
            if out is not None:
                out.append(r)
        return readings if out is None else out

    def forget(self, site: str, meter: str, ts_ms: int) -> None:
        """Unlearn a reading admission learned but the store then refused (its message was quarantined)."""
        index = self._meters.get(site, {}).get(meter)
        if index is not None:
            index.seen.discard(ts_ms)

    def add(self, site: str, meter: str, ts_ms: int) -> None:
        """Remember one reading."""
        self.fresh(site, [_Key(meter, ts_ms)])
