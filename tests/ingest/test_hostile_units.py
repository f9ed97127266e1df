"""Issue #14's hostile inputs, one by one, at admission and store level (no broker).

Each test names the finding it proves fixed; each failed before the fix (an OverflowError or
RecursionError out of `admit`, -5 kWh stored as good, 4.6e18 missing batches, a verbatim
1 MiB quarantine record, a conflicting copy stored or counted as a plain duplicate).
"""

from __future__ import annotations

import hashlib
import json
import queue
import time

import pytest

from accounting.ingest import admission as admission_module
from accounting.ingest.admission import Admission
from accounting.ingest.dedup import DedupIndex
from accounting.ingest.quarantine import QuarantinePolicy
from accounting.ingest.sequence import SequenceTracker
from accounting.ingest.subscriber import InboundMessage, MessageInbox
from accounting.store.sqlite import SqliteStore
from tanji import wire
from tanji.errors import WireFormatError
from tests.ingest.traffic import HOUR_MS, hour_start

NOW = int(time.time() * 1000)
SITE, GW = "cq-battery", "gw-cq-01"
TOPIC = wire.readings_topic(SITE, GW)
STATUS = wire.status_topic(SITE, GW)


def _msg(topic: str, payload: bytes) -> InboundMessage:
    return InboundMessage(topic, payload, 1, 1, NOW, 1)


def _batch(readings: list[dict], seq: int = 1) -> bytes:
    return wire.encode_batch(SITE, GW, seq, readings)


def _incomer(ts: int, kwh: float | str, quality: str = "good", **extra) -> dict:
    return {"meter": "incomer", "ts_ms": ts, "quality": quality, "values": {"energy_import_kwh": kwh}, **extra}


def _admission(cq_site, lookup=None, **policy) -> Admission:
    return Admission({cq_site.id: cq_site}, DedupIndex(), SequenceTracker(), QuarantinePolicy(**policy),
                     lookup=lookup)


def _raw(ts: int, value: str) -> bytes:
    """A batch whose energy value is written as given (json.dumps cannot write a 401-digit float)."""
    return (b'{"v":1,"site":"%s","gateway":"%s","seq":1,"sent_ms":%d,"backlog":false,"readings":'
            b'[{"meter":"incomer","ts_ms":%d,"quality":"good","values":{"energy_import_kwh":%s}}]}'
            % (SITE.encode(), GW.encode(), NOW, ts, value.encode()))


def test_item1_a_401_digit_integer_is_quarantined_not_an_overflow(cq_site):
    out = _admission(cq_site).admit([_msg(TOPIC, _raw(NOW, "9" * 401)), _msg(TOPIC, _raw(NOW + 1, "7"))])
    assert [(q.reason, q.detail) for q in out.quarantined] == [
        ("not_finite", "readings[0].values.energy_import_kwh is an integer too large for a float")]
    assert [r.values for r in out.rows] == [{"energy_import_kwh": 7}]


@pytest.mark.parametrize("payload", [b"[" * 100_000, b'{"a":' * 50_000, b"[{" * 30_000])
def test_item1_deep_nesting_is_refused_before_any_parser_recurses(cq_site, payload):
    with pytest.raises(WireFormatError) as refused:
        wire.decode_batch(payload)
    assert refused.value.reason == "too_deep"
    out = _admission(cq_site).admit([_msg(TOPIC, payload), _msg(TOPIC, _raw(NOW, "7"))])
    assert [q.reason for q in out.quarantined] == ["too_deep"] and len(out.rows) == 1


def test_item1_status_topics_are_bounded_too(cq_site):
    deep_small = b"[" * 60_000  # under the status size cap: the depth check refuses it
    out = _admission(cq_site).admit([
        _msg(STATUS, b"[" * 100_000), _msg(STATUS, deep_small),
        _msg(STATUS, wire.status_payload(SITE, GW, "online", pad="x" * wire.MAX_STATUS_BYTES)),
        _msg(STATUS, b'{"v":1,"site":"cq-battery","gateway":"gw-cq-01","state":"online","ts_ms":1,"x":1e999}'),
        _msg(STATUS, b'{"v":1,"site":"cq-battery","gateway":"gw-cq-01","state":"online","ts_ms":1,"x":"\\ud800"}'),
        _msg(STATUS, wire.status_payload(SITE, GW, "online", polls=3))])
    assert [q.reason for q in out.quarantined] == ["too_large", "too_deep", "too_large", "bad_status", "bad_status"]
    assert out.statuses[(SITE, GW)]["polls"] == 3


def test_depth_check_ignores_brackets_in_strings_and_is_linear():
    assert not wire.deeper_than(b'{"a":"[[[[[[[[[[[[[","b":["\\"[[[[[[[[[[[[["]}', 2)
    assert wire.deeper_than(b'{"a":"[[[[[[[[[[[[[","b":["\\"[[[[[[[[[[[[["]}', 1)
    assert wire.deeper_than(b'"\\\\"[[[', 2) and not wire.deeper_than(b'"\\\\"[[[', 3)  # escaped backslash
    assert wire.deeper_than(b"[" * 1_000_000, 8)
    assert not wire.deeper_than(b"[]" * 500_000, 1)
    assert not wire.deeper_than(b'"' + b'\\"' * 500_000, 0)  # no regex backtracking on escapes
    valid = wire.encode_batch(SITE, GW, 1, [_incomer(NOW, 1.0)])
    assert not wire.deeper_than(valid, 4) and wire.deeper_than(valid, 3)
    assert not any(wire.deeper_than(valid[:cut], 8) for cut in range(len(valid)))  # truncated: not_json


def test_any_exception_quarantines_only_its_message(cq_site, monkeypatch):
    real = admission_module.batch_decoder.decode_batch
    calls = []

    def flaky(payload, site, gateway, now_ms):
        calls.append(payload)
        if len(calls) == 1:
            raise KeyError("a bug nobody foresaw")
        return real(payload, site, gateway, now_ms)

    monkeypatch.setattr(admission_module.batch_decoder, "decode_batch", flaky)
    out = _admission(cq_site).admit([_msg(TOPIC, _raw(NOW, "5")), _msg(TOPIC, _raw(NOW + 1, "6"))])
    assert [(q.reason, q.detail) for q in out.quarantined] == [("internal_error", "KeyError: 'a bug nobody foresaw'")]
    assert [r.ts_ms for r in out.rows] == [NOW + 1]


def test_item8_physically_impossible_values_are_quarantined_alone(cq_site):
    readings = [_incomer(NOW, -5.0), _incomer(NOW + 1, 1e308), _incomer(NOW + 2, 12.5),
                _incomer(NOW + 3, -5.0, "out_of_range", value_quality={"energy_import_kwh": "out_of_range"}),
                {"meter": "plc-a", "ts_ms": NOW, "quality": "good", "values": {"units_total": -1.0}}]
    out = _admission(cq_site).admit([_msg(TOPIC, _batch(readings))])
    assert [q.reason for q in out.quarantined] == ["impossible_value"] * 3
    assert "energy_import_kwh = -5.0 claimed good is outside the possible range [0, 1e+12] kWh" \
        in out.quarantined[0].detail
    assert json.loads(out.quarantined[1].payload)["readings"] == [readings[1]]
    # the good reading, and the one the gateway itself flagged, are stored (flagged: unusable for the engine)
    assert [(r.ts_ms, r.quality) for r in out.rows] == [(NOW + 2, "good"), (NOW + 3, "out_of_range")]


def test_item8_an_absurd_seq_opens_no_gap_and_a_real_renumbering_is_followed(cq_site):
    adm = _admission(cq_site)
    adm.admit([_msg(TOPIC, _batch([_incomer(NOW, 1.0)], seq=10))])
    adm.admit([_msg(TOPIC, _batch([_incomer(NOW + 1, 1.0)], seq=2**62))])
    assert adm.sequences.gaps() == {GW: 0} and adm.sequences.anomalies == {GW: 1}
    adm.admit([_msg(TOPIC, _batch([_incomer(NOW + 2, 1.0)], seq=13))])  # the real stream goes on
    assert adm.sequences.gaps() == {GW: 2}
    # a gateway that really starts again from 0 (new spool): two batches in a row re-anchor
    adm.admit([_msg(TOPIC, _batch([_incomer(NOW + 3, 1.0)], seq=2_000_000))])
    adm.admit([_msg(TOPIC, _batch([_incomer(NOW + 4, 1.0)], seq=2_000_001))])
    adm.admit([_msg(TOPIC, _batch([_incomer(NOW + 5, 1.0)], seq=2_000_003))])
    assert adm.sequences.gaps() == {GW: 3} and adm.sequences.anomalies == {GW: 2}


def test_item6_quarantine_records_are_bounded_in_size_and_rate(cq_site, tmp_path):
    garbage = b"\xff" + b"x" * (wire.MAX_PAYLOAD_BYTES - 1)
    clock = [0.0]
    adm = _admission(cq_site, payload_max_bytes=1024, payloads_per_s=1.0, payload_burst=3, clock=lambda: clock[0])
    out = adm.admit([_msg(TOPIC, garbage) for _ in range(5)])
    assert [q.reason for q in out.quarantined] == ["not_json"] * 5
    assert [len(q.payload) for q in out.quarantined] == [1024, 1024, 1024, 0, 0]  # burst 3, then rate
    assert {q.payload_bytes for q in out.quarantined} == {len(garbage)}
    assert {q.sha256 for q in out.quarantined} == {hashlib.sha256(garbage).hexdigest()}
    assert [q.payload_dropped for q in out.quarantined] == [False, False, False, True, True]
    clock[0] = 1.0  # a second later, one more payload is kept
    assert len(adm.admit([_msg(TOPIC, garbage)]).quarantined[0].payload) == 1024
    store = SqliteStore(tmp_path / "s.sqlite", quarantine_max_rows=4)
    store.quarantine(out.quarantined)
    kept = store.quarantined(limit=10)
    assert len(kept) == 4 and kept[0].payload_bytes == len(garbage)
    store.close()


def test_quarantine_text_is_bounded_and_valid_utf8(cq_site, tmp_path):
    body = {"v": 1, "site": SITE, "gateway": GW, "seq": 1, "sent_ms": NOW, "backlog": False,
            "readings": [], **{"\ud800" + "k" * 1000: 1}}
    payload = json.dumps(body).encode()  # lone surrogate as a JSON escape: json.loads returns it
    out = _admission(cq_site).admit([_msg(TOPIC, payload)])
    [q] = out.quarantined
    assert q.reason == "schema" and len(q.detail) < 600
    store = SqliteStore(tmp_path / "s.sqlite")
    store.quarantine([q])  # before: UnicodeEncodeError on every retry, the store thread stuck for good
    assert store.quarantined()[0].detail == q.detail
    store.close()


def _stored(store: SqliteStore, rows) -> None:
    assert store.write_readings(rows) == len(rows)


def test_item8_conflicting_copy_first_wins_in_the_window_and_beyond_it(cq_site, tmp_path):
    store = SqliteStore(tmp_path / "s.sqlite")
    adm = _admission(cq_site, lookup=store.find_readings)
    adm.dedup = DedupIndex(window=8)
    t0 = hour_start(NOW) - HOUR_MS
    first = adm.admit([_msg(TOPIC, _batch([_incomer(t0, 10.0)]))])
    # a copy in the same cycle as its first, before anything is stored
    same_cycle = adm.admit([_msg(TOPIC, _batch([_incomer(t0 + 1, 11.0), _incomer(t0 + 1, 99.0)]))])
    assert [r.values for r in same_cycle.rows] == [{"energy_import_kwh": 11.0}]
    assert same_cycle.conflicts == [(SITE, "incomer")]
    _stored(store, first.rows + same_cycle.rows)
    newer = adm.admit([_msg(TOPIC, _batch([_incomer(t0 + 1000 * k, 10.0 + k) for k in range(2, 40)]))])
    _stored(store, newer.rows)
    # t0 fell out of the 8-reading window long ago: only the store knows its first value
    again = adm.admit([_msg(TOPIC, _batch([_incomer(t0, 10.0)])), _msg(TOPIC, _batch([_incomer(t0, 55.0)])),
                       _msg(TOPIC, _batch([_incomer(t0 + 39_000, 49.0)])),  # in the window: same value
                       _msg(TOPIC, _batch([_incomer(t0 + 39_000, 48.0)]))])  # in the window: conflict
    assert again.rows == [] and again.duplicates == 2
    assert again.conflicts == [(SITE, "incomer"), (SITE, "incomer")]
    assert [q.reason for q in again.quarantined] == ["conflict", "conflict"]
    assert "differs from the first copy good {'energy_import_kwh': 10.0}, which is kept" in again.quarantined[0].detail
    # a late reading older than the window that was never stored is new after all
    late = adm.admit([_msg(TOPIC, _batch([_incomer(t0 + 500, 10.5), _incomer(t0 + 500, 10.5)]))])
    assert [r.ts_ms for r in late.rows] == [t0 + 500] and late.duplicates == 1 and not late.conflicts
    store.close()


def test_inbox_is_bounded_by_bytes_as_well_as_count():
    inbox = MessageInbox(maxsize=100, max_bytes=3 * 1024)
    big = InboundMessage("t", b"x" * 1024, 1, 0, 0, 0)
    for _ in range(3):
        inbox.put(big, timeout=0.1)
    with pytest.raises(queue.Full):  # a QoS 0 flood waits instead of filling memory
        inbox.put(big, timeout=0.05)
    inbox.get()
    inbox.put(big, timeout=0.1)
    huge = MessageInbox(maxsize=10, max_bytes=10)
    huge.put(big, timeout=0.1)  # one message larger than the bound still gets through an empty inbox
    assert huge.qsize() == 1
