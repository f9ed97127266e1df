"""The dedup index against a plain reference: a deque and a set of the last `window`
timestamps per meter (what `accounting.ingest.dedup` kept before its ascending-list rule).

Every operation ingest and a restart use (`fresh` with and without a doubtful list, `seed`,
`forget`, `add`, `contains`) is applied to both in the same random order, over timestamps that
mostly ascend (the rule), with copies, late readings and a few meters, and small windows so
eviction and the `floor` happen often; each answer must be identical.
"""

from __future__ import annotations

from collections import deque
from typing import NamedTuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from accounting.ingest.dedup import BEYOND, SEEN, DedupIndex


class Reading(NamedTuple):
    meter: str
    ts_ms: int


class ReferenceIndex:
    """Per meter: a set and a deque of the last `window` timestamps; `floor` the newest evicted."""

    def __init__(self, window: int) -> None:
        self.window = window
        self.meters: dict[str, tuple[set[int], deque[int], list[int | None]]] = {}

    def _index(self, meter: str):
        return self.meters.setdefault(meter, (set(), deque(), [None]))

    def fresh(self, readings, doubtful=None):
        out = []
        for r in readings:
            seen, order, floor = self._index(r.meter)
            if r.ts_ms in seen:
                if doubtful is not None:
                    doubtful.append((SEEN, r))
                continue
            if floor[0] is not None and r.ts_ms <= floor[0] and doubtful is not None:
                doubtful.append((BEYOND, r))
                continue
            seen.add(r.ts_ms)
            order.append(r.ts_ms)
            if len(order) > self.window:
                evicted = order.popleft()
                seen.discard(evicted)
                if floor[0] is None or evicted > floor[0]:
                    floor[0] = evicted
            out.append(r)
        return out

    def seed(self, meter, timestamps, complete=None):
        newest = sorted(timestamps)[-self.window:]
        self.fresh([Reading(meter, ts) for ts in newest])
        if newest and not (len(timestamps) < self.window if complete is None else complete):
            floor = self._index(meter)[2]
            floor[0] = newest[0] - 1 if floor[0] is None else max(floor[0], newest[0] - 1)

    def forget(self, meter, ts):
        if meter in self.meters:
            self.meters[meter][0].discard(ts)

    def contains(self, meter, ts):
        return meter in self.meters and ts in self.meters[meter][0]


METERS = ["m1", "m2", "m3"]


@st.composite
def operations(draw):
    """A stream of operations; timestamps drift upwards with copies and late ones mixed in."""
    now = {m: draw(st.integers(0, 50)) for m in METERS}
    ops = []
    for _ in range(draw(st.integers(1, 60))):
        kind = draw(st.sampled_from(["fresh", "fresh", "fresh", "doubtful", "doubtful", "seed", "forget",
                                     "add", "contains"]))
        meter = draw(st.sampled_from(METERS))
        if kind in ("fresh", "doubtful"):
            batch = []
            for _ in range(draw(st.integers(0, 6))):
                m = draw(st.sampled_from(METERS))
                step = draw(st.sampled_from([1, 1, 1, 2, 5, 0, -1, -3, -20]))  # mostly ascending
                now[m] = max(0, now[m] + step)
                batch.append(Reading(m, now[m]))
            ops.append((kind, batch))
        elif kind == "seed":
            stamps = draw(st.lists(st.integers(0, now[meter] + 5), max_size=8))
            ops.append((kind, meter, stamps, draw(st.sampled_from([None, True, False]))))
        else:
            ops.append((kind, meter, draw(st.integers(max(0, now[meter] - 10), now[meter] + 2))))
    return ops


def _columns(batch: list[Reading]) -> tuple[list[str], list[int]]:
    return [r.meter for r in batch], [r.ts_ms for r in batch]


@settings(max_examples=400, deadline=None)
@given(window=st.integers(0, 6), ops=operations(), compiled=st.booleans())
def test_the_index_answers_as_the_plain_reference(window, ops, compiled):
    """`compiled`: `fresh` given the readings' columns, as admission's compiled pass gives them:
    the rule's compiled loop (accounting/ingest/_readings.c) takes the leading readings it covers."""
    index, reference = DedupIndex(window=window), ReferenceIndex(window)
    for op in ops:
        kind = op[0]
        if kind in ("fresh", "doubtful"):
            got_doubtful: list | None = [] if kind == "doubtful" else None
            want_doubtful: list | None = [] if kind == "doubtful" else None
            columns = _columns(op[1]) if compiled else None
            assert index.fresh("s", list(op[1]), got_doubtful, columns) == reference.fresh(op[1], want_doubtful)
            assert got_doubtful == want_doubtful
        elif kind == "seed":
            index.seed("s", op[1], list(op[2]), op[3])
            reference.seed(op[1], list(op[2]), op[3])
        elif kind == "forget":
            index.forget("s", op[1], op[2])
            reference.forget(op[1], op[2])
        elif kind == "add":
            index.add("s", op[1], op[2])
            reference.fresh([Reading(op[1], op[2])])
        else:
            assert index.contains("s", op[1], op[2]) == reference.contains(op[1], op[2])
    for meter in METERS:  # every timestamp the two remember, and the same floor
        for ts in range(0, 200):
            assert index.contains("s", meter, ts) == reference.contains(meter, ts), (meter, ts)
        mine = index._meters.get("s", {}).get(meter)
        theirs = reference.meters.get(meter)
        assert (mine.floor if mine else None) == (theirs[2][0] if theirs else None)


def test_an_index_of_ascending_readings_keeps_no_set_and_a_late_one_makes_it_one():
    """The rule (every reading newer than all remembered) is an ascending list: copies are found
    in it without a set; a new reading out of order turns it into a set, until it leaves the window."""
    index = DedupIndex(window=4)
    assert index.fresh("s", [Reading("m", t) for t in range(10)]) == [Reading("m", t) for t in range(10)]
    meter = index._meters["s"]["m"]
    assert meter.seen is None and meter.floor == 5 and meter.order[meter.head:] == [6, 7, 8, 9]
    doubtful: list = []
    assert index.fresh("s", [Reading("m", 8), Reading("m", 3)], doubtful) == []
    assert doubtful == [(SEEN, Reading("m", 8)), (BEYOND, Reading("m", 3))]
    assert meter.seen is None  # a copy and a reading beyond the window: still the list
    assert index.fresh("s", [Reading("m", 20), Reading("m", 15)]) == [Reading("m", 20), Reading("m", 15)]
    assert meter.seen == {8, 9, 20, 15} and index.contains("s", "m", 15) and not index.contains("s", "m", 7)
    # in order again: once 15, the late one, has been evicted the list is ascending and the set goes
    assert index.fresh("s", [Reading("m", t) for t in (21, 22, 23)]) == [Reading("m", t) for t in (21, 22, 23)]
    assert meter.seen == {15, 21, 22, 23}  # 15 is still in the window
    assert index.fresh("s", [Reading("m", 24)]) == [Reading("m", 24)]
    assert meter.seen is None and meter.order[meter.head:] == [21, 22, 23, 24] and meter.floor == 20
    assert index.contains("s", "m", 22) and not index.contains("s", "m", 15)
    doubtful = []
    assert index.fresh("s", [Reading("m", 19), Reading("m", 23), Reading("m", 25)], doubtful) == [Reading("m", 25)]
    assert doubtful == [(BEYOND, Reading("m", 19)), (SEEN, Reading("m", 23))]


def test_a_forgotten_reading_keeps_the_set_until_it_leaves_the_window():
    """A reading the store refused is forgotten: not remembered, though it keeps its place in
    the window (and becomes the floor when evicted); the list alone could not say so."""
    index = DedupIndex(window=3)
    index.fresh("s", [Reading("m", t) for t in (1, 2, 3)])
    meter = index._meters["s"]["m"]
    index.forget("s", "m", 2)
    assert meter.seen == {1, 3} and not index.contains("s", "m", 2)
    assert index.fresh("s", [Reading("m", 4)]) == [Reading("m", 4)]  # evicts 1: 2 still in the window
    assert meter.seen == {3, 4} and not index.contains("s", "m", 2)
    assert index.fresh("s", [Reading("m", 5)]) == [Reading("m", 5)]  # evicts 2: the list agrees again
    assert meter.seen is None and meter.floor == 2 and meter.order[meter.head:] == [3, 4, 5]


def test_a_second_seed_that_raises_the_floor_is_not_lowered_by_the_next_reading():
    """A seed that raises the floor above timestamps the list remembers (a store with more than
    the window) must keep it: the next in-order reading's eviction took the oldest remembered
    for the newest evicted and lowered the floor, so a copy at or below the true floor passed as
    fresh instead of being checked against the store (found by comparing with the reference)."""
    index, reference = DedupIndex(window=2), ReferenceIndex(2)
    for target in (index, reference):
        args = ("s",) if target is index else ()
        target.seed(*args, "m", [0, 1, 10], None)
        target.seed(*args, "m", [10, 10, 1, 1], False)
    got, want = [], []
    assert index.fresh("s", [Reading("m", 10), Reading("m", 12)], got) == reference.fresh(
        [Reading("m", 10), Reading("m", 12)], want)
    assert got == want == [(SEEN, Reading("m", 10))]
    assert index._meters["s"]["m"].floor == reference.meters["m"][2][0] == 9
    late = []
    assert index.fresh("s", [Reading("m", 5)], late) == []
    assert late == [(BEYOND, Reading("m", 5))]


_SLOTS = ("order", "head", "newest", "seen", "floor", "mark")


@settings(max_examples=300, deadline=None)
@given(window=st.integers(0, 6), ops=operations())
def test_the_compiled_loop_leaves_each_meter_index_as_the_python_loop_does(window, ops):
    """Slot for slot: the list, its head, the newest, the set, the floor and the mark."""
    from accounting.ingest import dedup

    assert dedup._readings is not None, "accounting/ingest/_readings.c was not built (see setup.py)"
    python, compiled = DedupIndex(window=window), DedupIndex(window=window)
    for op in ops:
        if op[0] in ("fresh", "doubtful"):
            want: list | None = [] if op[0] == "doubtful" else None
            got: list | None = [] if op[0] == "doubtful" else None
            assert compiled.fresh("s", list(op[1]), got, _columns(op[1])) == python.fresh("s", list(op[1]), want)
            assert got == want
        elif op[0] == "seed":
            for index in (python, compiled):
                index.seed("s", op[1], list(op[2]), op[3])
        elif op[0] == "forget":
            for index in (python, compiled):
                index.forget("s", op[1], op[2])
        elif op[0] == "add":
            for index in (python, compiled):
                index.add("s", op[1], op[2])
        for meter in METERS:
            mine, theirs = compiled._meters.get("s", {}).get(meter), python._meters.get("s", {}).get(meter)
            assert (mine is None) == (theirs is None)
            if mine is not None:
                assert [getattr(mine, k) for k in _SLOTS] == [getattr(theirs, k) for k in _SLOTS], meter


def test_the_compiled_loop_refuses_what_it_cannot_read():
    from accounting.ingest.dedup import _readings

    index = DedupIndex(window=4)
    index.fresh("s", [Reading("m1", 5)])
    meters = index._meters["s"]
    assert _readings.fresh_run(meters, ["m1", "m1"], [6, 7], 4) == 2
    assert _readings.fresh_run(meters, ["m1"], [7], 4) == 0  # not newer: the Python loop decides
    assert _readings.fresh_run(meters, ["m9"], [8], 4) == 0  # no index yet
    assert _readings.fresh_run(meters, ["m1"], [2**64], 4) == 0  # beyond int64
    assert _readings.fresh_run(meters, ["m1"], [8.0], 4) == 0  # not an int
    with pytest.raises(ValueError, match="differ in length"):
        _readings.fresh_run(meters, ["m1"], [], 4)
