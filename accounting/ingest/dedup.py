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
from itertools import islice
from typing import NamedTuple, Protocol, TypeVar

try:  # the rule's compiled loop (accounting/ingest/_readings.c, setup.py; optional)
    from accounting.ingest import _readings
except ImportError:  # pragma: no cover - exercised where no compiler was found
    _readings = None


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
    None), where a copy is found by bisection. A new reading that arrives out of order (a late
    one), or a reading forgotten, turns it into the list plus a set of what it remembers, until
    that reading has left the window (`mark`: its place in the list); from then on the list is
    ascending and the set equal to it again, and the set is dropped. A meter that once sent a
    late reading (a gateway's backfill after an outage, which every meter of a plant sees in
    a few years) would otherwise keep its set for good: 128 KiB more per meter at the default
    window (tracemalloc, docs/storage.md), 640 MB for 5,000 meters. Evicting the oldest moves
    `head` on; the list is cut once `head` has passed half its length (amortised O(1)). Per
    reading, the rule costs an append and a comparison instead of a set insertion and removal
    (issue #20), and an index without its set about half the memory.
    """

    __slots__ = ("floor", "head", "mark", "newest", "order", "seen")

    def __init__(self) -> None:
        self.order: list[int] = []
        self.head = 0
        self.newest = _NONE_YET  # at or above every timestamp remembered (and `floor`) while `seen` is None
        self.seen: set[int] | None = None
        self.floor: int | None = None  # a timestamp at or below it may be stored without being remembered
        self.mark = -1  # with `seen`: the list is ascending and equal to `seen` after this position

    def remembers(self, ts_ms: int) -> bool:
        if self.seen is not None:
            return ts_ms in self.seen
        if ts_ms > self.newest:
            return False
        k = bisect_left(self.order, ts_ms, self.head)  # ascending while `seen` is None
        return k < len(self.order) and self.order[k] == ts_ms

    def as_set(self) -> set[int]:
        """The remembered timestamps as a set, kept until the list is ascending again (`evict`)."""
        if self.seen is None:
            self.seen = set(self.order[self.head:])
        return self.seen

    def append_late(self, ts_ms: int) -> None:
        """Remember a new reading that is not newer than every one remembered."""
        self.as_set().add(ts_ms)
        order = self.order
        if len(order) > self.head and ts_ms <= order[-1]:
            self.mark = len(order)  # the list stops ascending here
        order.append(ts_ms)

    def forget(self, ts_ms: int) -> None:
        """No longer remember `ts_ms`; the list keeps its place in the window until evicted."""
        self.as_set().discard(ts_ms)
        order = self.order
        for k in range(len(order) - 1, self.head - 1, -1):  # rare (a refused message): a scan is fine
            if order[k] == ts_ms:
                self.mark = max(self.mark, k)  # the list holds it, the set does not, until it leaves
                break

    def evict(self) -> int:
        """Forget the oldest remembered timestamp (the `floor` if the newest evicted); returns it."""
        evicted = self.order[self.head]
        if self.floor is None or evicted > self.floor:
            self.floor = evicted
        self.head += 1
        if self.head >= len(self.order) // 2:
            del self.order[:self.head]
            self.mark -= self.head
            self.head = 0
        if self.seen is not None:
            self.seen.discard(evicted)
            # what made the list disagree has left the window, and all it holds is above the
            # floor (the rule's eviction takes the oldest it holds as the newest evicted)
            if self.head > self.mark and (len(self.order) == self.head or self.order[self.head] > self.floor):
                self._ascending_again()
        return evicted

    def _ascending_again(self) -> None:
        """Back to the list alone: it is ascending, above the floor, and holds exactly what the set did."""
        self.seen = None
        self.mark = -1
        newest = self.order[-1] if len(self.order) > self.head else _NONE_YET
        self.newest = newest if self.floor is None else max(newest, self.floor)


if _readings is not None:
    _readings.bind_index(_MeterIndex)

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
            if index.seen is None and len(index.order) > index.head and index.order[index.head] <= index.floor:
                # the list remembers timestamps at or below the floor (a second seed raised it):
                # the rule's eviction would take them for the newest evicted and lower the floor
                index.as_set()

    def contains(self, site: str, meter: str, ts_ms: int) -> bool:
        index = self._meters.get(site, {}).get(meter)
        return index is not None and index.remembers(ts_ms)

    def fresh(self, site: str, readings: Iterable[R], doubtful: list[tuple[str, R]] | None = None,
              columns: tuple[list[str], list[int]] | None = None) -> list[R]:
        """The readings not seen before, in order; remembered from now on (ingest's hot loop).

        Without `doubtful`, a copy seen before is dropped and one older than the index knows
        is passed as fresh (the idempotent store absorbs it). With it, both go there instead,
        as (`SEEN` or `BEYOND`, reading), unremembered, for the caller to check.
        `columns`: the readings' meters and timestamps, when the caller has them (admission's
        compiled pass); then the rule's compiled loop remembers the leading readings it covers
        (each newer than all its meter's index remembers) and this loop takes the rest.
        """
        meters = self._meters.get(site)
        if meters is None:
            meters = self._meters[site] = {}
        window = self.window
        readings = readings if isinstance(readings, list) else list(readings)
        start = 0
        if columns is not None and _readings is not None:
            start = _readings.fresh_run(meters, columns[0], columns[1], window)
            if start == len(readings):
                return readings
        out: list[R] | None = None  # made at the first reading left out (as a rule, none is)
        for i, r in islice(enumerate(readings), start, None):
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
                index.append_late(ts_ms)
                if len(index.order) - index.head > window:
                    index.evict()
            if out is not None:
                out.append(r)
        return readings if out is None else out

    def forget(self, site: str, meter: str, ts_ms: int) -> None:
        """Unlearn a reading admission learned but the store then refused (its message was quarantined)."""
        index = self._meters.get(site, {}).get(meter)
        if index is not None:
            index.forget(ts_ms)

    def add(self, site: str, meter: str, ts_ms: int) -> None:
        """Remember one reading."""
        self.fresh(site, [_Key(meter, ts_ms)])
