"""The spool on its own: ordering, sequence numbers across reopen, acks, the size policy."""

from __future__ import annotations

import json

from gateway.service import encode_batch_body
from gateway.spool import Spool
from tanji.wire import Reading, decode_batch, encode_batch


def readings(n: int, meter: str = "m1", start: int = 1_767_225_600_000, counter: bool = True) -> list[Reading]:
    name = "energy_import_kwh" if counter else "power_kw"
    return [Reading(meter, start + i, "good", {name: float(i)}) for i in range(n)]


def test_batches_in_order_with_persistent_seq(tmp_path):
    spool = Spool(tmp_path / "s.sqlite")
    spool.add(readings(25))
    a, b, c = spool.next_batch(10), spool.next_batch(10), spool.next_batch(10)
    assert (a.seq, b.seq, c.seq) == (0, 1, 2) and (a.n, b.n, c.n) == (10, 10, 5)
    assert [r["ts_ms"] for r in json.loads(a.body) + json.loads(b.body)] == sorted(
        r["ts_ms"] for r in json.loads(a.body) + json.loads(b.body))
    assert spool.next_batch(10) is None
    spool.ack(a.seq)
    assert spool.depth == 15
    spool.close()
    # Reopened (a gateway restart): unacked batches come back with their seq, numbering goes on.
    spool = Spool(tmp_path / "s.sqlite")
    assert [x.seq for x in spool.pending_batches()] == [1, 2] and spool.depth == 15
    spool.add(readings(1, start=1_767_225_700_000))
    assert spool.next_batch(10).seq == 3
    spool.ack(1)
    spool.ack(1)  # a duplicate PUBACK is harmless
    assert spool.depth == 6


def test_fast_encoder_matches_tanji_wire(tmp_path):
    spool = Spool(tmp_path / "s.sqlite")
    rs = readings(3) + [Reading("m2", 1_767_225_600_500, "comm_error", {}),
                        Reading("m3", 1_767_225_600_600, "out_of_range", {"power_factor": 1.5, "frequency_hz": None},
                                {"power_factor": "out_of_range", "frequency_hz": "out_of_range"})]
    spool.add(rs)
    batch = spool.next_batch(100)
    fast = encode_batch_body("s", "g", batch.seq, batch.body, backlog=True, sent_ms=1_767_225_601_000)
    reference = encode_batch("s", "g", batch.seq, rs, backlog=True, sent_ms=1_767_225_601_000)
    assert json.loads(fast) == json.loads(reference)
    decode_batch(fast, "tanji/v1/s/g/readings", now_ms=1_767_225_601_000)


def test_size_cap_drops_gauges_first_then_thins_counters(tmp_path):
    spool = Spool(tmp_path / "s.sqlite", max_bytes=400_000)
    for i in range(40):  # interleave a counter meter and a gauge-only meter
        spool.add(readings(100, "counter-meter", start=1_767_225_600_000 + i * 100)
                  + readings(100, "gauge-meter", start=1_767_225_600_000 + i * 100, counter=False))
    spool.check_size()
    assert spool.used_bytes() <= 400_000
    assert spool.dropped > 0 and spool.alarm
    rows = spool.db.execute("SELECT meter, COUNT(*) FROM reading GROUP BY meter").fetchall()
    kept = dict(rows)
    assert kept["counter-meter"] + kept.get("gauge-meter", 0) + spool.dropped == 8000
    assert kept["counter-meter"] > kept.get("gauge-meter", 0), "gauges go first"
    assert spool.depth == sum(kept.values())
    # Counter thinning keeps the newest readings and the first, so the kWh total is intact.
    ts = [t for (t,) in spool.db.execute("SELECT ts_ms FROM reading WHERE meter='counter-meter' ORDER BY id")]
    assert ts[-1] == 1_767_225_600_000 + 39 * 100 + 99
    assert ts[0] == 1_767_225_600_000


def test_alarm_at_80_percent_without_dropping(tmp_path):
    spool = Spool(tmp_path / "s.sqlite", max_bytes=1_000_000)
    while not spool.alarm:
        spool.add(readings(200))
        spool.check_size()
    assert spool.dropped == 0 and 0.8 <= spool.used_bytes() / 1_000_000 < 1.0
