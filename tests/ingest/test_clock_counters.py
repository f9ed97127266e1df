"""Issue #14 item 5 against the real service (real Mosquitto, SQLite): gateway clocks that go
backwards, and a PLC counter that went back to a saved count. Each failed before its fix, with
the figures in its docstring.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import time

import pytest
from fastapi.testclient import TestClient

from accounting.api.app import create_app
from accounting.service import AccountingService
from accounting.store.sqlite import SqliteStore
from tanji import wire
from tests.ingest.test_hostile_service import GW, SITE, subscribed
from tests.ingest.test_sigkill import _accounting, _count
from tests.ingest.traffic import HOUR_MS, Publisher, hour_start, wait_until

KW = 36.0  # every energy meter draws this; every PLC counts a unit every second poll


def _values(meter, k: int) -> dict[str, float]:
    if meter.role == "production_counter":
        return {"units_total": float(k // 2), "batch_id": 7.0, "line_running": 1.0}
    return {"energy_import_kwh": 1000.0 + KW * k / 3600, "energy_export_kwh": 0.0, "power_kw": KW}


def _batches(site, t0: int, polls: int, stamp, per_batch: int = 5) -> list[tuple[str, bytes]]:
    """Poll k of every meter at true time t0 + k s, stamped `stamp(k, true_ts)`, in seq order."""
    [gateway] = site.gateways
    out = []
    for seq, first in enumerate(range(0, polls, per_batch)):
        readings = [{"meter": m.id, "ts_ms": stamp(k, t0 + 1000 * k), "quality": "good", "values": _values(m, k)}
                    for k in range(first, min(first + per_batch, polls)) for m in gateway.meters]
        out.append((wire.readings_topic(SITE, GW), wire.encode_batch(SITE, GW, seq, readings)))
    return out


def _units(service: AccountingService, meter: str, lo: int, hi: int) -> float:
    _, units = service.engine(SITE).hourly_energy(meter, "units_total", lo, hi)
    return float(units.sum())


@pytest.mark.timeout(180)
def test_a_gateway_clock_stepped_back_an_hour_for_60_s_books_nothing_early(mosquitto, cq_site, tmp_path):
    """Before: a gateway clock stepped back one hour for 60 s put 420 readings (60 polls of 7
    meters) an hour early, stored as good; the engine took the registers' drops back to true
    time for resets (here the incomer's 1,000 kWh register was booked whole; on the plant of
    the report 30,415 units for 49). Now they are quarantined as
    `clock_backwards` (a later batch stamped earlier than its meter's readings of an earlier
    one) and the totals are those of the registers."""
    store = SqliteStore(tmp_path / "tanji.sqlite")
    service = AccountingService([cq_site], store, broker_host=mosquitto.host, broker_port=mosquitto.port)
    service.start()
    publisher = Publisher(mosquitto.host, mosquitto.port)
    try:
        subscribed(service, publisher)
        t0 = hour_start(int(time.time() * 1000)) - 2 * HOUR_MS
        polls, meters = 400, len(cq_site.gateways[0].meters)
        stepped = range(100, 160)
        batches = _batches(cq_site, t0, polls, lambda k, ts: ts - HOUR_MS if k in stepped else ts)
        publisher.publish_all(batches)
        good = (polls - len(stepped)) * meters
        assert wait_until(lambda: service.stats.accepted == good and service.stats.received == len(batches), 60), \
            service.stats.to_dict()
        stats = service.stats.to_dict()
        assert stats["quarantined_by_reason"] == {"clock_backwards": len(stepped) * meters}
        assert store.count_readings(SITE) == good
        lo, hi = t0 - 2 * HOUR_MS, t0 + HOUR_MS
        _, kwh = service.engine(SITE).hourly_energy("incomer", "energy_import_kwh", lo, hi)
        assert kwh.sum() == pytest.approx(KW * (polls - 1) / 3600, rel=1e-9)  # 3.99 kWh, every Wh of it
        assert _units(service, "plc-a", lo, hi) == _units(service, "plc-b", lo, hi) == (polls - 1) // 2
        # the 61 s the readings were missing are spread, and the flags say so
        flags = TestClient(create_app(service)).get(
            "/api/v1/meters/incomer/flags", params={"start": str(t0), "end": str(t0 + HOUR_MS)}).json()
        [imp] = [c for c in flags["channels"] if c["channel"] == "energy_import_kwh"]
        assert imp["readings"] == polls - len(stepped)
        assert imp["flagged"] == [{"ts_ms": t0 + 1000 * 160, "value": pytest.approx(1000.0 + KW * 160 / 3600),
                                   "flags": ["gap_spread"]}]
    finally:
        publisher.close()
        service.stop()


@pytest.mark.timeout(180)
def test_a_plc_counter_back_at_a_saved_count_is_rebased_and_flagged(mosquitto, cq_site, tmp_path):
    """Before: a PLC simulator restart took units_total 11,507 → 11,489 and 11,489 units were
    booked (a drop was a reset whatever its size; PLC counters had no plausibility cap). Now the
    generic PLC profile caps units_total at 360,000 units/h: the drop is a glitch for the gap
    threshold (3 polls), then rebased (nothing booked for it), and the flags route lists it."""
    store = SqliteStore(tmp_path / "tanji.sqlite")
    service = AccountingService([cq_site], store, broker_host=mosquitto.host, broker_port=mosquitto.port)
    service.start()
    publisher = Publisher(mosquitto.host, mosquitto.port)
    try:
        subscribed(service, publisher)
        t0 = hour_start(int(time.time() * 1000)) - HOUR_MS
        counts = [11_505, 11_506, 11_507, 11_489, 11_489, 11_490, 11_490, 11_491, 11_492, 11_493, 11_493,
                  11_494, 11_495, 11_496]
        readings = [{"meter": "plc-a", "ts_ms": t0 + 1000 * k, "quality": "good",
                     "values": {"units_total": float(n), "batch_id": 7.0, "line_running": 1.0}}
                    for k, n in enumerate(counts)]
        publisher.publish_all([(wire.readings_topic(SITE, GW), wire.encode_batch(SITE, GW, seq, readings[i:i + 2]))
                               for seq, i in enumerate(range(0, len(readings), 2))])
        assert wait_until(lambda: service.stats.accepted == len(counts), 60), service.stats.to_dict()
        assert _units(service, "plc-a", t0, t0 + HOUR_MS) == 2 + (11_496 - 11_490)
        r = TestClient(create_app(service)).get("/api/v1/meters/plc-a/flags",
                                                params={"site": SITE, "start": str(t0), "end": str(t0 + HOUR_MS)})
        assert r.status_code == 200, r.text
        [units] = [c for c in r.json()["channels"] if c["channel"] == "units_total"]
        assert units["readings"] == len(counts)
        assert [(f["ts_ms"] - t0, f["value"], f["flags"]) for f in units["flagged"]] == [
            (3000, 11_489, ["implausible"]), (4000, 11_489, ["implausible"]), (5000, 11_490, ["implausible"]),
            (6000, 11_490, ["rebased"])]
        assert units["hours"] == [{"start_ms": t0, "flags": ["implausible", "rebased"]}]
        client = TestClient(create_app(service))
        assert client.get("/api/v1/meters/nope/flags").status_code == 404
        assert client.get("/api/v1/meters/plc-a/flags", params={"start": str(t0 - 40 * 86_400_000),
                                                                 "end": str(t0)}).status_code == 422
    finally:
        publisher.close()
        service.stop()


def _order_newest(state) -> int | None:
    """The oldest of the meters' newest timestamps in the state directory's meter order file."""
    try:
        with sqlite3.connect(state / "meter_order.sqlite", timeout=10) as conn:
            return conn.execute("SELECT MIN(ts_ms) FROM meter_order").fetchone()[0]
    except sqlite3.OperationalError:
        return None


def _quarantined(db, reason: str) -> int:
    try:
        with sqlite3.connect(db, timeout=10) as conn:
            return conn.execute("SELECT COUNT(*) FROM quarantine WHERE reason = ?", (reason,)).fetchone()[0]
    except sqlite3.OperationalError:
        return 0


@pytest.mark.timeout(240)
def test_the_meters_order_survives_a_restart_so_a_clock_gone_back_right_after_it_is_caught(
        mosquitto, cq_site, tmp_path):
    """Before: the order (each meter's newest reading and its batch) was kept in memory only, so
    after a restart the first batch stamped an hour back (seq 10, after batches 0..9 up to
    t0 + 49 s) was learnt from, not caught: its 35 readings were stored as good an hour early.
    Now the order is in the state directory (meter_order.sqlite, written before each cycle is
    stored): after a SIGKILL and a restart of the real `tanji accounting` process, the 35 are
    quarantined as `clock_backwards` and the 35 readings after them stored."""
    db, state = tmp_path / "tanji.sqlite", tmp_path / "state"
    log = tmp_path / "accounting.log"
    meters = len(cq_site.gateways[0].meters)
    t0 = hour_start(int(time.time() * 1000)) - HOUR_MS
    stepped = range(50, 55)
    batches = _batches(cq_site, t0, 60, lambda k, ts: ts - HOUR_MS if k in stepped else ts)  # seq 0..11
    publisher = Publisher(mosquitto.host, mosquitto.port)

    def ready(times: int) -> bool:
        return log.read_text(errors="replace").count("ready: restored, subscribed and caught up") >= times

    proc = _accounting(mosquitto, db, state, "g1", log)
    try:
        assert wait_until(lambda: ready(1) or proc.poll() is not None, 120), log.read_text(errors="replace")[-2000:]
        publisher.publish_all(batches[:10])
        assert wait_until(lambda: _count(db) == 50 * meters, 60), _count(db)
        # the order is written at most once a second (meter_order.FLUSH_INTERVAL_S): wait for it
        assert wait_until(lambda: _order_newest(state) == t0 + 49_000, 30), _order_newest(state)
        os.killpg(proc.pid, signal.SIGKILL)  # no final checkpoint, nothing closed
        proc.wait()
        proc = _accounting(mosquitto, db, state, "g1", log)
        assert wait_until(lambda: ready(2) or proc.poll() is not None, 120), log.read_text(errors="replace")[-2000:]
        publisher.publish_all(batches[10:])
        assert wait_until(lambda: _count(db) == 55 * meters and _quarantined(db, "clock_backwards") == 5 * meters, 60), \
            (_count(db), _quarantined(db, "clock_backwards"))
        assert "meter order restored: the newest reading of 7 meters" in log.read_text(errors="replace")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        publisher.close()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    with sqlite3.connect(db) as conn:
        early = conn.execute("SELECT COUNT(*) FROM readings WHERE ts_ms < ?", (t0,)).fetchone()[0]
    assert early == 0  # nothing an hour early
    assert _count(db) == 55 * meters and _quarantined(db, "clock_backwards") == 5 * meters


@pytest.mark.timeout(180)
def test_a_backfill_batch_is_admitted_as_late_readings_and_unmarked_is_clock_backwards(mosquitto, cq_site, tmp_path):
    """docs/wire-format.md, "Backfill": polls 20..29 missed live are published after polls 30..59
    (a later seq, older stamps). Unmarked, their 70 readings are quarantined as clock_backwards;
    the same readings with `backfill: true` are stored as late readings (70 more stored). The
    totals are the registers' either way; the backfill only refines how they spread."""
    store = SqliteStore(tmp_path / "tanji.sqlite")
    service = AccountingService([cq_site], store, broker_host=mosquitto.host, broker_port=mosquitto.port)
    service.start()
    publisher = Publisher(mosquitto.host, mosquitto.port)
    try:
        subscribed(service, publisher)
        [gateway] = cq_site.gateways
        meters = len(gateway.meters)
        t0 = hour_start(int(time.time() * 1000)) - 2 * HOUR_MS

        def readings(polls) -> list[dict]:
            return [{"meter": m.id, "ts_ms": t0 + 1000 * k, "quality": "good", "values": _values(m, k)}
                    for k in polls for m in gateway.meters]

        topic = wire.readings_topic(SITE, GW)
        live = [list(range(0, 10)), list(range(10, 20)), list(range(30, 45)), list(range(45, 60))]
        publisher.publish_all([(topic, wire.encode_batch(SITE, GW, seq, readings(p))) for seq, p in enumerate(live)])
        assert wait_until(lambda: service.stats.accepted == 50 * meters, 60), service.stats.to_dict()
        missed = range(20, 30)
        publisher.publish_all([(topic, wire.encode_batch(SITE, GW, 4, readings(missed)))])
        assert wait_until(lambda: service.stats.to_dict()["quarantined_by_reason"].get("clock_backwards") == 10 * meters,
                          60), service.stats.to_dict()
        assert store.count_readings(SITE) == 50 * meters
        publisher.publish_all([(topic, wire.encode_batch(SITE, GW, 5, readings(missed), backfill=True))])
        assert wait_until(lambda: service.stats.accepted == 60 * meters, 60), service.stats.to_dict()
        assert store.count_readings(SITE) == 60 * meters
        assert service.stats.to_dict()["quarantined_by_reason"] == {"clock_backwards": 10 * meters}
        _, kwh = service.engine(SITE).hourly_energy("incomer", "energy_import_kwh", t0, t0 + HOUR_MS)
        assert kwh.sum() == pytest.approx(KW * 59 / 3600, rel=1e-9)
        flags = TestClient(create_app(service)).get(
            "/api/v1/meters/incomer/flags", params={"start": str(t0), "end": str(t0 + HOUR_MS)}).json()
        [imp] = [c for c in flags["channels"] if c["channel"] == "energy_import_kwh"]
        assert imp["readings"] == 60 and imp["flagged"] == []  # the 11 s hole is filled: no gap_spread
    finally:
        publisher.close()
        service.stop()
