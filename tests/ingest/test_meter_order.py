"""The meters' reading order (accounting/ingest/meter_order.py) kept in the state directory."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from accounting.ingest import meter_order
from accounting.ingest.meter_order import MeterOrder


@dataclass
class R:
    meter: str
    ts_ms: int


def test_the_order_is_written_by_flush_and_read_back(tmp_path):
    path = tmp_path / "meter_order.sqlite"
    order = MeterOrder(path)
    order.learn("s", "gw", 7, [R("m1", 1000), R("m2", 2000), R("m1", 1500)])
    order.flush()
    order.learn("s", "gw", 8, [R("m1", 900)])  # older than known: nothing to remember
    order.flush(force=True)
    order.close()
    again = MeterOrder(path)
    assert again.backwards("s", "gw", 9, [R("m1", 1499), R("m1", 1500), R("m2", 1999), R("m3", 1)]) == [0, 2]
    assert again.backwards("s", "gw", 7, [R("m1", 1)]) == []  # the same batch again: a replay
    assert again.backwards("s", "other-gw", 9, [R("m1", 1)]) == []
    again.close()


def test_a_flush_within_the_interval_waits_for_the_next_or_the_close(tmp_path, monkeypatch):
    monkeypatch.setattr(meter_order, "FLUSH_INTERVAL_S", 3600.0)  # no clock in the test
    path = tmp_path / "meter_order.sqlite"
    order = MeterOrder(path)
    order.learn("s", "gw", 1, [R("m", 1000)])
    order.flush()  # the first write
    order.learn("s", "gw", 2, [R("m", 2000)])
    order.flush()  # within the interval: not yet
    assert MeterOrder(path).backwards("s", "gw", 3, [R("m", 1500)]) == []  # the file knows 1000
    order.close()  # writes the rest
    assert MeterOrder(path).backwards("s", "gw", 3, [R("m", 1500)]) == [0]


def test_without_a_flush_nothing_is_written_and_in_memory_keeps_nothing(tmp_path):
    path = tmp_path / "meter_order.sqlite"
    order = MeterOrder(path)
    order.learn("s", "gw", 1, [R("m", 5000)])
    assert order.backwards("s", "gw", 2, [R("m", 4000)]) == [0]
    MeterOrder(path).close()  # a second opener sees what was flushed: nothing
    assert MeterOrder(path).backwards("s", "gw", 2, [R("m", 4000)]) == []
    memory = MeterOrder()
    memory.learn("s", "gw", 1, [R("m", 5000)])
    memory.flush()
    memory.close()


def test_a_corrupt_file_is_set_aside_and_the_order_learnt_again(tmp_path, caplog):
    path = tmp_path / "meter_order.sqlite"
    path.write_bytes(b"not a database at all" * 100)
    order = MeterOrder(path)
    assert order.backwards("s", "gw", 2, [R("m", 1)]) == []
    order.learn("s", "gw", 2, [R("m", 10)])
    order.close()
    [aside] = tmp_path.glob("meter_order.sqlite.bad-*")
    assert aside.read_bytes().startswith(b"not a database")
    assert "unreadable" in caplog.text and str(aside) in caplog.text
    assert MeterOrder(path).backwards("s", "gw", 3, [R("m", 9)]) == [0]


class PlainOrder:
    """The rule of `MeterOrder`, written plainly (no fast path): the reference it must agree with."""

    def __init__(self) -> None:
        self.newest: dict[tuple[str, str, str], tuple[int, int]] = {}

    def backwards(self, site, gateway, seq, readings):
        return [i for i, r in enumerate(readings)
                if (k := self.newest.get((site, gateway, r.meter))) is not None and seq > k[1] and r.ts_ms < k[0]]

    def learn(self, site, gateway, seq, readings):
        for r in readings:
            k = self.newest.get((site, gateway, r.meter))
            if k is None or r.ts_ms > k[0] or (r.ts_ms == k[0] and seq > k[1]):
                self.newest[(site, gateway, r.meter)] = (r.ts_ms, seq)


_batches = st.lists(st.tuples(st.sampled_from(["gw-1", "gw-2"]), st.integers(0, 6),
                              st.lists(st.tuples(st.sampled_from(["m1", "m2", "m3"]), st.integers(0, 8)),
                                       max_size=4)), max_size=12)


@settings(max_examples=300, deadline=None)
@given(before=_batches, after=_batches)
def test_the_fast_path_agrees_with_the_plain_rule_across_a_restart(tmp_path_factory, before, after):
    """Batches in and out of order, a meter twice in a batch, equal stamps, seq going back, and a
    restart from the file in between: the same `backwards` answers and the same order learnt."""
    path = tmp_path_factory.mktemp("order") / "meter_order.sqlite"
    order, plain = MeterOrder(path), PlainOrder()
    for part in (before, after):
        for k, (gateway, seq, readings) in enumerate(part):
            batch = [R(m, ts) for m, ts in readings]
            if k % 2 and batch:  # as admission's compiled pass calls it: its columns given
                earliest, columns = min(ts for _, ts in readings), ([m for m, _ in readings], [ts for _, ts in readings])
            else:
                earliest, columns = None, None
            assert order.backwards("s", gateway, seq, batch, earliest) == plain.backwards("s", gateway, seq, batch)
            order.learn("s", gateway, seq, batch, columns)
            plain.learn("s", gateway, seq, batch)
        assert order.known() == plain.newest
        order.close()
        order = MeterOrder(path)  # restored from the file
    assert order.known() == plain.newest
    order.close()
