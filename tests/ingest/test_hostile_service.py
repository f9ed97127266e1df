"""Issue #14's findings against the real service: real Mosquitto, real `tanji accounting`
processes (or the service in-process where a test needs its internals), SQLite and InfluxDB.

Each test failed before its fix, with the figures in its docstring.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from accounting.service import AccountingService
from accounting.store.influx import InfluxStore
from accounting.store.sqlite import SqliteStore
from tanji import wire
from tests.ingest.conftest import REPO
from tests.ingest.traffic import HOUR_MS, Publisher, hour_start, plant_batches, wait_until
from tests.services import free_port

SITE_FILE = REPO / "firmware-config/sites/cq-battery.yaml"
SITE, GW = "cq-battery", "gw-cq-01"


def _count(db: Path, table: str = "readings") -> int:
    try:
        with sqlite3.connect(db, timeout=10) as conn:
            return conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def _reasons(db: Path) -> dict[str, int]:
    with sqlite3.connect(db, timeout=10) as conn:
        return dict(conn.execute("SELECT reason, COUNT(*) FROM quarantine GROUP BY reason").fetchall())


def accounting_process(mosquitto, db: Path, state: Path, http_port: int, *extra: str,
                       prelude: str = "") -> subprocess.Popen:
    """`tanji accounting` as docs/deploy.md starts it (`prelude`: Python run first, for fault injection)."""
    args = ["--log-level", "WARNING", "accounting", "--config", str(SITE_FILE),
            "--broker", f"{mosquitto.host}:{mosquitto.port}", "--store", f"sqlite:{db}",
            "--state-dir", str(state), "--client-id", "accounting-under-test",
            "--http-port", str(http_port), *extra]
    code = f"{prelude}\nimport sys\nfrom tanji.cli import main\nsys.exit(main({args!r}))"
    return subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                            start_new_session=True)


def prime(publisher: Publisher, first, done) -> None:
    """Publish `first` until `done()`: the service is then subscribed (a fresh broker drops what
    nobody has subscribed to yet). Copies are harmless: dedup."""
    for _ in range(120):
        publisher.publish_all([first])
        if wait_until(done, 1.0):
            return
    raise AssertionError("the service never took a message")


def subscribed(service: AccountingService, publisher: Publisher) -> None:
    """Wait until the in-process service is subscribed: a (not retained) status gets through."""
    probe = wire.status_payload(SITE, GW, "online", probe=True)
    for _ in range(180):
        publisher.publish(wire.status_topic(SITE, GW), probe).wait_for_publish(10)
        if wait_until(lambda: service.gateway_status()[0]["status"] is not None, 1.0):
            return
    raise AssertionError("the service never subscribed")


def get(port: int, path: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except OSError:
        return 0, {}


def stop(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.wait()


def poison(ts: int) -> list[tuple[str, bytes, bool]]:
    """The messages of finding 1: (topic, payload, retained)."""
    readings, status = wire.readings_topic(SITE, GW), wire.status_topic(SITE, GW)
    big_int = (b'{"v":1,"site":"%s","gateway":"%s","seq":0,"sent_ms":%d,"backlog":false,"readings":'
               b'[{"meter":"incomer","ts_ms":%d,"quality":"good","values":{"energy_import_kwh":%s}}]}'
               % (SITE.encode(), GW.encode(), ts, ts, b"9" * 401))
    return [(readings, big_int, False), (readings, b"[" * 100_000, False), (status, b"[" * 60_000, True)]


@pytest.mark.timeout(240)
def test_item1_one_message_no_longer_stops_accounting(mosquitto, cq_site, tmp_path):
    """Before: the 401-digit integer (OverflowError) or 100,000 `[` (RecursionError) killed the
    ingest thread; /health said ok; 175 of 700 later readings were stored, and a retained status
    poison killed fresh client ids in a row (0 of 70 stored). Now: each is quarantined with a
    reason, every later reading is stored, and the same holds after a restart."""
    db, state, port = tmp_path / "tanji.sqlite", tmp_path / "state", free_port()
    t0 = hour_start(int(time.time() * 1000)) - HOUR_MS
    first = plant_batches(cq_site, start_ms=t0, step_ms=5_000, polls=100, polls_per_batch=2)  # 7 meters
    later = plant_batches(cq_site, start_ms=t0 + 100 * 5_000, step_ms=5_000, polls=10, polls_per_batch=2, seq0=50)
    assert sum(b.readings for b in first) == 700 and sum(b.readings for b in later) == 70
    publisher = Publisher(mosquitto.host, mosquitto.port)
    proc = accounting_process(mosquitto, db, state, port)
    try:
        assert wait_until(lambda: get(port, "/api/v1/health")[0] == 200, 90)
        prime(publisher, first[0], lambda: _count(db) > 0)
        for topic, payload, retain in poison(t0):
            publisher.publish(topic, payload, retain=retain).wait_for_publish(10)
        publisher.publish_all(first[1:])
        assert wait_until(lambda: _count(db) == 700, 60), _count(db)
        status, health = get(port, "/api/v1/health")
        assert status == 200 and health["status"] == "ok", health
        assert health["stats"]["quarantined_by_reason"] == {"not_finite": 1, "too_deep": 2}
        # Restart: the retained poison is delivered again to the new session; ingest goes on.
        stop(proc)
        proc = accounting_process(mosquitto, db, state, port)
        publisher.publish_all(later)  # queued in the session while it starts
        assert wait_until(lambda: _count(db) == 770, 60), _count(db)
        assert wait_until(lambda: get(port, "/api/v1/health")[0] == 200, 60)
        # The retained status comes with the new subscription, maybe after the queued readings.
        assert wait_until(lambda: _reasons(db) == {"not_finite": 1, "too_deep": 3}, 60), _reasons(db)
        assert wait_until(lambda: get(port, "/api/v1/health")[1]["stats"]["quarantined_by_reason"] == {"too_deep": 1},
                          30), get(port, "/api/v1/health")  # the retained status, again (counted after it is stored)
        status, health = get(port, "/api/v1/health")
        assert health["status"] == "ok"
    finally:
        publisher.close()
        stop(proc)


CRASH = """
import accounting.ingest.pipeline as pipeline

class InjectedCrash(BaseException):
    '''Below everything a stage catches: stands for a bug that kills its thread.'''

def crash(self, cycles):
    raise InjectedCrash("injected: the engine thread dies")

pipeline.Pipeline._deliver = crash
"""


@pytest.mark.timeout(180)
def test_item1_a_stage_that_dies_fails_health_and_exits_non_zero(mosquitto, cq_site, tmp_path):
    """Before: a dead ingest thread left a live-looking process (/health ok, exit never)."""
    db, state, port = tmp_path / "tanji.sqlite", tmp_path / "state", free_port()
    t0 = hour_start(int(time.time() * 1000)) - HOUR_MS
    proc = accounting_process(mosquitto, db, state, port, prelude=CRASH)
    publisher = Publisher(mosquitto.host, mosquitto.port)
    try:
        assert wait_until(lambda: get(port, "/api/v1/health")[0] == 200, 90)
        [batch] = plant_batches(cq_site, start_ms=t0, step_ms=5_000, polls=2, polls_per_batch=2)
        prime(publisher, batch, lambda: proc.poll() is not None)
        assert proc.wait(60) == 1  # the supervisor restarts it
    finally:
        publisher.close()
        stop(proc)


@pytest.mark.timeout(120)
def test_item1_health_says_failed_while_the_process_goes_down(mosquitto, cq_site, tmp_path):
    """/health answers 503 `failed` once a stage has died (what a liveness probe sees)."""
    from fastapi.testclient import TestClient

    from accounting.api.app import create_app

    store = SqliteStore(tmp_path / "tanji.sqlite")
    service = AccountingService([cq_site], store, broker_host=mosquitto.host, broker_port=mosquitto.port)

    class InjectedCrash(BaseException):
        pass

    def crash(cycles):
        raise InjectedCrash("the engine thread dies")
    service.start()
    try:
        client = TestClient(create_app(service))
        assert client.get("/api/v1/health").json()["status"] == "ok"
        t0 = hour_start(int(time.time() * 1000)) - HOUR_MS
        publisher = Publisher(mosquitto.host, mosquitto.port)
        subscribed(service, publisher)
        service.pipeline.deliver = crash
        publisher.publish_all(plant_batches(cq_site, start_ms=t0, step_ms=5_000, polls=2, polls_per_batch=2))
        publisher.close()
        assert service.failed.wait(30)
        r = client.get("/api/v1/health")
        assert r.status_code == 503 and r.json()["status"] == "failed"
        assert "accounting-engine died: InjectedCrash: the engine thread dies" in r.json()["problems"][0]
    finally:
        service.stop()


@pytest.mark.timeout(180)
def test_item6_invalid_payloads_and_oversized_status_are_bounded(mosquitto, cq_site, tmp_path):
    """Before: 200 x 1 MiB invalid payloads grew the store by 246 MB (kept verbatim), and a 1 MB
    retained status was served whole by /api/v1/gateways and to every stream client."""
    from fastapi.testclient import TestClient

    from accounting.api.app import create_app

    db = tmp_path / "tanji.sqlite"
    store = SqliteStore(db)

    def size() -> int:
        return sum(p.stat().st_size for p in tmp_path.glob("tanji.sqlite*"))

    service = AccountingService([cq_site], store, broker_host=mosquitto.host, broker_port=mosquitto.port)
    service.start()
    publisher = Publisher(mosquitto.host, mosquitto.port)
    try:
        subscribed(service, publisher)
        before = size()
        garbage = [(wire.readings_topic(SITE, GW), b"\xff" * (1024 * 1024 - i)) for i in range(200)]
        publisher.publish_all(garbage)
        big_status = wire.status_payload(SITE, GW, "online", pad="x" * 1_000_000)
        publisher.publish(wire.status_topic(SITE, GW), big_status, retain=True).wait_for_publish(10)
        assert wait_until(lambda: service.stats.quarantined == 201, 60), service.stats.to_dict()
        assert service.stats.quarantined_by_reason == {"not_json": 200, "too_large": 1}
        with sqlite3.connect(db) as conn:
            payload, declared = conn.execute("SELECT SUM(LENGTH(payload)), SUM(payload_bytes) FROM quarantine").fetchone()
        assert payload <= 201 * 16 * 1024  # what is kept
        assert declared == sum(len(p) for _, p in garbage) + len(big_status)  # what was sent, recorded
        growth = size() - before
        print(f"store grew by {growth / 1e6:.1f} MB for 200 x 1 MiB invalid payloads (before the fix: 246 MB)")
        assert growth < 10e6
        [gateway] = TestClient(create_app(service)).get("/api/v1/gateways").json()
        assert gateway["status"]["probe"] is True and "pad" not in gateway["status"]  # the 1 MB one is not served
    finally:
        publisher.close()
        service.stop()


def _incomer(ts: int, kwh: float) -> dict:
    return {"meter": "incomer", "ts_ms": ts, "quality": "good", "values": {"energy_import_kwh": kwh}}


@pytest.mark.timeout(180)
@pytest.mark.parametrize("backend", ["sqlite", "influx"])
def test_item8_values_and_conflicts_follow_one_rule_in_every_store(backend, mosquitto, cq_site, tmp_path, request):
    """Before: -5 kWh and 1e308 kWh were stored as good; seq = 2**62 set seq_gaps to 4.6e18; a
    conflicting value after 4,096 newer readings was kept by SQLite (counted a duplicate) but
    overwrote the first in InfluxDB (counted accepted), so store and engine disagreed."""
    if backend == "sqlite":
        store = SqliteStore(tmp_path / "tanji.sqlite")
    else:
        influx = request.getfixturevalue("influx")
        store = InfluxStore(influx.url, token="t", org="tanji", bucket=influx.db, spill_dir=tmp_path / "spill")
    t0 = hour_start(int(time.time() * 1000)) - 2 * HOUR_MS
    n = 4200
    service = AccountingService([cq_site], store, broker_host=mosquitto.host, broker_port=mosquitto.port)
    service.start()
    publisher = Publisher(mosquitto.host, mosquitto.port)
    topic = wire.readings_topic(SITE, GW)
    try:
        subscribed(service, publisher)
        live = [(topic, wire.encode_batch(SITE, GW, seq, [_incomer(t0 + 1000 * k, 1000.0 + 0.01 * k)
                                                          for k in range(seq * 100, (seq + 1) * 100)]))
                for seq in range(n // 100)]
        publisher.publish_all(live)
        assert wait_until(lambda: service.stats.accepted == n, 60), service.stats.to_dict()
        hostile = [
            # batch 0 again (its seq: a replay; a later seq with these stamps is a clock gone backwards)
            (topic, wire.encode_batch(SITE, GW, 0, [_incomer(t0 + 2000, 1000.0 + 0.01 * 2)])),  # a true copy
            (topic, wire.encode_batch(SITE, GW, 0, [_incomer(t0 + 1000, 5000.0)])),  # conflict, 4,199 readings old
            (topic, wire.encode_batch(SITE, GW, 2**62, [_incomer(t0 + 1000 * n + 1, -5.0),
                                                         _incomer(t0 + 1000 * n + 2, 1e308),
                                                         _incomer(t0 + 1000 * n + 3, 1000.0 + 0.01 * n)])),
        ]
        publisher.publish_all(hostile)
        assert wait_until(lambda: service.stats.received == n // 100 + 3, 60), service.stats.to_dict()
        stats = service.stats.to_dict()
        assert stats["accepted"] == n + 1 and stats["duplicates"] == 1
        assert stats["conflicts"] == {f"{SITE}/incomer": 1}
        assert stats["quarantined_by_reason"] == {"conflict": 1, "impossible_value": 2}
        assert stats["seq_gaps"] == {GW: 0} and stats["seq_anomalies"] == {GW: 1}
        assert store.flush(30)
        assert store.count_readings(SITE) == n + 1
        [kept] = store.read_readings(SITE, "incomer", t0 + 1000, t0 + 1001)
        assert kept.values["energy_import_kwh"] == pytest.approx(1000.01)  # the first value, in every store
        # the engine holds what the store holds: live totals equal a recompute from the store
        live_kwh = sum(f["energy_kwh"] for f in service.footprints(SITE, start_ms=t0, end_ms=t0 + 3 * HOUR_MS))
        from accounting.engine.engine import Engine
        from accounting.ingest.engine_feed import EngineFeed
        from accounting.live.engine_state import dataset_for
        from accounting.site_topology import site_topology
        rebuilt = Engine(site_topology(cq_site), dataset_for(cq_site))
        EngineFeed(rebuilt).feed(store.read_readings(SITE, None, t0, t0 + 3 * HOUR_MS))
        assert live_kwh == pytest.approx(sum(f.energy_kwh for f in rebuilt.footprints(t0, t0 + 3 * HOUR_MS)), rel=1e-12)
    finally:
        publisher.close()
        service.stop()


@pytest.mark.timeout(120)
def test_item9_batch_footprints_are_served_for_a_batch_the_plc_shows(mosquitto, cq_site, tmp_path):
    """Before: GET /api/v1/footprints/batches/{id} answered 404 for every batch the PLC showed
    (the service never passed batch_id to the engine)."""
    from fastapi.testclient import TestClient

    from accounting.api.app import create_app

    store = SqliteStore(tmp_path / "tanji.sqlite")
    service = AccountingService([cq_site], store, broker_host=mosquitto.host, broker_port=mosquitto.port)
    service.start()
    try:
        t0 = hour_start(int(time.time() * 1000)) - HOUR_MS
        batches = plant_batches(cq_site, start_ms=t0, step_ms=10_000, polls=120)  # batch_id 7 on both PLCs
        publisher = Publisher(mosquitto.host, mosquitto.port)
        subscribed(service, publisher)
        publisher.publish_all(batches)
        publisher.close()
        assert wait_until(lambda: service.stats.accepted == sum(b.readings for b in batches), 60)
        client = TestClient(create_app(service))
        r = client.get("/api/v1/footprints/batches/7")
        assert r.status_code == 200, r.text
        by_product = {f["product_id"]: f for f in r.json()}
        assert set(by_product) == {"pack-48v-100ah", "ess-5kwh"}
        assert all(f["batch_id"] == "7" and f["units"] > 0 and f["energy_kwh"] > 0 for f in r.json())
        engine = {f.product_id: f for f in service.engine(SITE).footprints(batch_id=7)}
        for pid, served in by_product.items():  # what the engine computes for the batch, served as it is
            assert (served["units"], served["energy_kwh"]) == (engine[pid].units, engine[pid].energy_kwh)
        assert client.get("/api/v1/footprints/batches/8").status_code == 404
        assert client.get("/api/v1/footprints/batches/B-001").status_code == 404
    finally:
        service.stop()
