"""Duplicate readings: the same (site, meter, ts_ms) seen again.

Duplicates come from QoS 1 redelivery, from a gateway replaying its spool after a lost
PUBACK, and from our own restart (messages stored but not yet acked are sent again). The
index remembers the last `window` timestamps admitted per meter, which covers all of these;
a copy of a reading evicted since (a gateway re-sending hours of backlog) is passed on, and
the idempotent store and engine absorb it. Memory is bounded: `window` timestamps per meter
(`_MeterIndex`: an ascending list while the meter's readings come in time order).

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

from bisect import bisect_left
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


#: Below every timestamp: the newest of an index that remembers none.
_NONE_YET = -(2**63)


class _MeterIndex:
    """One meter's remembered timestamps: `order[head:]`, in the order admitted.

    As a rule a meter's readings arrive in time order, so each is newer than all the index
    remembers (`newest`) and needs no lookup: the index is then just that ascending list (`seen`
    None), where a copy is found by bisection. The first new reading that arrives out of order
    (a late one) turns it into the list plus a set of the same timestamps, for good. Evicting
    the oldest moves `head` on; the list is cut once `head` has passed half its length
    (amortised O(1)). Per reading, the rule costs an append and a comparison instead of a set
    insertion and removal (issue #20), and an index without its set about half the memory.
    """

    __slots__ = ("floor", "head", "newest", "order", "seen")

    def __init__(self) -> None:
        self.order: list[int] = []
        self.head = 0
        self.newest = _NONE_YET  # the newest timestamp remembered while `seen` is None
        self.seen: set[int] | None = None
        self.floor: int | None = None  # a timestamp at or below it may be stored without being remembered

    def remembers(self, ts_ms: int) -> bool:
        if self.seen is not None:
            return ts_ms in self.seen
        if ts_ms > self.newest:
            return False
        k = bisect_left(self.order, ts_ms, self.head)  # ascending while `seen` is None
        return k < len(self.order) and self.order[k] == ts_ms

    def as_set(self) -> set[int]:
        """The remembered timestamps as a set, kept from now on."""
        if self.seen is None:
            self.seen = set(self.order[self.head:])
        return self.seen

    def evict(self) -> int:
        """Forget the oldest remembered timestamp; returns it."""
        evicted = self.order[self.head]
        self.head += 1
        if self.head >= len(self.order) // 2:
            del self.order[:self.head]
            self.head = 0
        if self.seen is not None:
            self.seen.discard(evicted)
        return evicted


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
        return index is not None and index.remembers(ts_ms)

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
            if index.seen is None and ts_ms > index.newest:  # newer than all remembered: the rule, no lookup
                index.newest = ts_ms
                order = index.order
                order.append(ts_ms)
                head = index.head
                if len(order) - head > window:  # `evict`, inlined: ascending, so the evicted is the newest evicted
                    index.floor = order[head]
                    head += 1
                    if head >= len(order) // 2:
                        del order[:head]
                        head = 0
                    index.head = head
            else:
                if index.remembers(ts_ms):
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
                index.as_set().add(ts_ms)
                index.order.append(ts_ms)
                if len(index.order) - index.head > window:
                    evicted = index.evict()
                    if floor is None or evicted > floor:
                        index.floor = evicted
            if out is not None:
                out.append(r)
        return readings if out is None else out

    def forget(self, site: str, meter: str, ts_ms: int) -> None:
        """Unlearn a reading admission learned but the store then refused (its message was quarantined)."""
        index = self._meters.get(site, {}).get(meter)
        if index is not None:
            index.as_set().discard(ts_ms)

    def add(self, site: str, meter: str, ts_ms: int) -> None:
        """Remember one reading."""
        self.fresh(site, [_Key(meter, ts_ms)])
