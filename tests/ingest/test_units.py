"""Dedup, sequence gaps, admission reasons and store idempotency, without a broker."""

from __future__ import annotations

import collections
import time

from accounting.ingest.admission import Admission
from accounting.ingest.dedup import DedupIndex
from accounting.ingest.sequence import SequenceTracker
from accounting.ingest.subscriber import InboundMessage, subscriptions
from accounting.store.influx import InfluxStore
from accounting.store.sqlite import SqliteStore
from tests.ingest.traffic import HOUR_MS, hour_start, plant_batches


def _msg(topic: str, payload: bytes) -> InboundMessage:
    return InboundMessage(topic, payload, 1, 1, int(time.time() * 1000), 1)


def test_sequence_gaps_open_and_fill():
    t = SequenceTracker()
    assert t.observe("s", "g", 5) == 0
    assert t.observe("s", "g", 9) == 3          # 6, 7, 8 missing
    assert t.gaps() == {"g": 3}
    t.observe("s", "g", 7)                       # a replay fills the middle
    assert t.gaps() == {"g": 2}
    t.observe("s", "g", 6)
    t.observe("s", "g", 8)
    t.observe("s", "g", 9)                       # a duplicate is not a gap
    assert t.gaps() == {"g": 0} and t.gap_events == 1
    restored = SequenceTracker()
    restored.restore(t.state())
    assert restored.observe("s", "g", 11) == 1


def test_dedup_window_is_bounded_and_exact_within_it():
    d = DedupIndex(window=3)
    for ts in (1, 2, 3, 4):
        assert not d.contains("s", "m", ts)
        d.add("s", "m", ts)
    assert d.contains("s", "m", 4) and d.contains("s", "m", 2)
    assert not d.contains("s", "m", 1)          # evicted: the idempotent store decides
    assert not d.contains("s", "other", 4)


def test_dedup_fresh_keeps_first_copies_in_order_and_remembers_them():
    d = DedupIndex(window=2)
    R = collections.namedtuple("R", "meter ts_ms")
    batch = [R("a", 1), R("b", 1), R("a", 1), R("a", 2), R("a", 3)]
    assert d.fresh("s", batch) == [R("a", 1), R("b", 1), R("a", 2), R("a", 3)]
    assert d.fresh("s", [R("a", 3), R("b", 1), R("a", 1), R("c", 1)]) == [R("a", 1), R("c", 1)]  # a@1 evicted
    assert d.fresh("other-site", [R("a", 3)]) == [R("a", 3)]
    d.add("s", "c", 2)
    assert d.contains("s", "c", 1) and d.contains("s", "c", 2) and d.fresh("s", [R("c", 2)]) == []


def test_admission_drops_duplicates_and_names_reasons(cq_site):
    t0 = hour_start(int(time.time() * 1000)) - HOUR_MS
    [b1, b2] = plant_batches(cq_site, start_ms=t0, step_ms=1000, polls=4, polls_per_batch=2)
    admission = Admission({cq_site.id: cq_site}, DedupIndex(), SequenceTracker())
    out = admission.admit([_msg(b1.topic, b1.payload), _msg(b1.topic, b1.payload), _msg(b2.topic, b2.payload),
                           _msg("tanji/v1/elsewhere/gw-cq-01/readings", b1.payload),
                           _msg("tanji/v1/cq-battery/gw-cq-01/status",
                                b'{"v":1,"site":"cq-battery","gateway":"gw-cq-01","state":"online","ts_ms":1}')])
    assert len(out.rows) == b1.readings + b2.readings
    assert out.duplicates == b1.readings
    assert [q.reason for q in out.quarantined] == ["unknown_site"]
    assert out.statuses[("cq-battery", "gw-cq-01")]["state"] == "online"


def test_subscriptions_are_shared_for_readings_only():
    assert subscriptions(["a"], "grp") == ["$share/grp/tanji/v1/a/+/readings", "tanji/v1/a/+/status"]
    assert subscriptions(["a"], None)[0] == "tanji/v1/a/+/readings"


def _rows(cq_site):
    t0 = hour_start(int(time.time() * 1000)) - HOUR_MS
    batches = plant_batches(cq_site, start_ms=t0, step_ms=1000, polls=10)
    admission = Admission({cq_site.id: cq_site}, DedupIndex(), SequenceTracker())
    return admission.admit([_msg(b.topic, b.payload) for b in batches]).rows, t0


def test_sqlite_store_is_idempotent_and_reads_back(cq_site, tmp_path):
    rows, t0 = _rows(cq_site)
    store = SqliteStore(tmp_path / "s.sqlite")
    assert store.write_readings(rows) == len(rows)
    assert store.write_readings(rows) == 0       # a redelivered message stores nothing
    assert store.count_readings() == len(rows)
    back = store.read_readings(cq_site.id, "plc-a", t0, t0 + HOUR_MS)
    assert [r.ts_ms for r in back] == sorted(r.ts_ms for r in rows if r.meter == "plc-a")
    assert back[0].values == {"units_total": 0.0, "batch_id": 7.0, "line_running": 1.0}
    assert store.latest(cq_site.id)["incomer"].ts_ms == t0 + 9000
    store.close()


def test_influx_store_replay_is_exactly_once(cq_site, influx, tmp_path):
    rows, t0 = _rows(cq_site)
    store = InfluxStore(influx.url, token="t", bucket=influx.db, spill_dir=tmp_path / "spill")
    store.write_readings(rows)
    store.write_readings(rows[:20])              # replay of a part
    assert store.count_readings(cq_site.id) == len(rows)
    back = store.read_readings(cq_site.id, "incomer", t0, t0 + HOUR_MS)
    assert len(back) == 10 and back[0].values["energy_import_kwh"] == 1000.0
    assert store.recent_timestamps(cq_site.id, "incomer", 3) == [t0 + 7000, t0 + 8000, t0 + 9000]
    assert set(store.latest(cq_site.id)) == {m.id for m in cq_site.meters}
    store.close()


def test_live_footprints_are_stored_for_the_open_hour(cq_site, tmp_path):
    from accounting.service import AccountingService

    t0 = hour_start(int(time.time() * 1000))
    batches = plant_batches(cq_site, start_ms=t0, step_ms=1000, polls=10)
    store = SqliteStore(tmp_path / "s.sqlite")
    service = AccountingService([cq_site], store, broker_port=1)  # never started: no broker needed
    service.restore()
    service.pipeline.run_cycle([_msg(b.topic, b.payload) for b in batches])
    service.store_footprints()
    stored = store.read_footprints(cq_site.id, t0, t0 + HOUR_MS)
    assert {f["product_id"] for f in stored} == {"pack-48v-100ah", "ess-5kwh"}
    live = service.footprints(cq_site.id, start_ms=t0, end_ms=t0 + HOUR_MS)
    assert sorted(stored, key=lambda f: f["product_id"]) == sorted(live, key=lambda f: f["product_id"])
    store.close()
