"""Store-and-forward under real faults: Mosquitto stopped and restarted, the gateway SIGKILLed.

The check is always by exact count: every poll the gateway made is received exactly once
after dedup on (meter, ts_ms) or is still in its spool, and per meter the readings arrive
in time order.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter

import pytest

from gateway.service import GatewayService
from tests.gateway.conftest import REPO, simulated_site
from tests.gateway.test_end_to_end import spool_keys

PERIOD_S = 0.1


def assert_in_order(collector):
    """Per meter, first arrivals (after dedup on (meter, ts_ms)) strictly increase in ts_ms."""
    for meter, ts in collector.unique().items():
        assert ts == sorted(ts), f"{meter}: readings arrived out of order"


def count_answers(plant) -> Counter:
    """Count, per meter, the reads the simulator answered (one per poll: both profiles plan one request)."""
    answered: Counter = Counter()
    for meter_id, device in plant.devices.items():
        async def read(fc, address, count, _read=device.read, _id=meter_id):
            words = await _read(fc, address, count)
            answered[_id] += 1
            return words
        device.read = read
    return answered


@pytest.mark.timeout(120)
@pytest.mark.parametrize("outage_s", [pytest.param(3, id="3s"), pytest.param(60, id="60s", marks=pytest.mark.slow)])
def test_broker_outage_loses_nothing(tmp_path, mosquitto, plant_factory, collector_factory, outage_s):
    site_file, site = simulated_site(tmp_path, mosquitto.port, period_s=PERIOD_S)
    plant_factory(site)
    collector = collector_factory(mosquitto.host, mosquitto.port)
    service = GatewayService(site, spool_path=tmp_path / "spool.sqlite", status_interval_s=0.5)
    service.start()
    try:
        collector.wait_for(lambda: len(collector.batches) >= 5)
        mosquitto.stop()
        time.sleep(outage_s)
        during = service.health()
        assert not during["connected"] and during["spool_depth"] > 0.8 * 3 * outage_s / PERIOD_S
        mosquitto.start()
        collector.wait_for(lambda: service.health()["spool_depth"] < 10 and service.health()["connected"], 60)
    finally:
        service.stop()
    health = json.loads((tmp_path / "spool.sqlite.status.json").read_text())
    left = spool_keys(tmp_path / "spool.sqlite")
    expected = health["polls"] - len(left)
    collector.wait_for(lambda: sum(map(len, collector.unique().values())) >= expected, 30)
    received = {(r["meter"], r["ts_ms"]) for r in collector.readings()}
    assert len(received) == expected and not received & left, "every poll received exactly once or still spooled"
    assert_in_order(collector)
    assert any(b["backlog"] for b in collector.batches), "the outage's readings came as backlog"
    assert health["poll_errors"] == 0


@pytest.mark.timeout(120)
def test_sigkill_while_publishing_loses_nothing(tmp_path, mosquitto, plant_factory, collector_factory,
                                                gateway_process):
    site_file, site = simulated_site(tmp_path, mosquitto.port, period_s=PERIOD_S, batch_max_readings=20,
                                     publish_interval_s=0.5)
    answered = count_answers(plant_factory(site))
    collector = collector_factory(mosquitto.host, mosquitto.port)
    gw = gateway_process(site_file, "--spool", str(tmp_path / "spool.sqlite"))
    gw.start()
    collector.wait_for(lambda: len(collector.batches) >= 6)
    # Kill it with readings waiting in the spool for their batch.
    collector.wait_for(lambda: len(spool_keys(tmp_path / "spool.sqlite")) >= 5)
    answered_before_kill = dict(answered)
    assert gw.signal(signal.SIGKILL) == -signal.SIGKILL
    time.sleep(0.5)  # let what was on the wire arrive
    answered_at_kill = dict(answered)
    restarted_ms = int(time.time() * 1000)
    before = {(r["meter"], r["ts_ms"]) for r in collector.readings()}
    spooled = spool_keys(tmp_path / "spool.sqlite")
    db = sqlite3.connect(tmp_path / "spool.sqlite")
    unacked = [seq for (seq,) in db.execute("SELECT seq FROM batch ORDER BY seq")]
    db.close()
    arrived_before = len(collector.batches)
    max_seq_before = max(b["seq"] for b in collector.batches)
    assert spooled, "the kill left readings in the spool"
    # The broker published the last will: the retained status says offline.
    collector.wait_for(lambda: collector.status and collector.status[-1]["state"] == "offline", 10)
    # `tanji gateway status` works with the gateway down, from the spool and the status file.
    status = subprocess.run([sys.executable, "-m", "tanji", "gateway", "status", "--config", str(site_file),
                             "--spool", str(tmp_path / "spool.sqlite"), "--json"],
                            capture_output=True, text=True, cwd=REPO)
    assert status.returncode == 1, "the gateway is down, so is its status"
    health = json.loads(status.stdout)
    assert health["spool_depth"] == len(spooled) and set(health["meters"]) == {"incomer", "line-a-meter", "plc-a"}
    text = subprocess.run([sys.executable, "-m", "tanji", "gateway", "status", "--config", str(site_file),
                           "--spool", str(tmp_path / "spool.sqlite")], capture_output=True, text=True,
                          cwd=REPO).stdout
    assert f"spool: {len(spooled)} readings waiting" in text and "plc-a" in text

    gw.start()
    collector.wait_for(lambda: spooled <= {(r["meter"], r["ts_ms"]) for r in collector.readings()}, 30)
    collector.wait_for(lambda: max(b["seq"] for b in collector.batches) > max_seq_before + 3)
    assert gw.signal(signal.SIGTERM) == 0

    after = {(r["meter"], r["ts_ms"]) for r in collector.readings()}
    assert before | spooled <= after, "nothing committed before the kill is missing"
    # Exact count: every answer the meters gave the killed gateway is delivered, except at most the
    # one per meter that was still being processed when the process died (never committed).
    for meter, ts in collector.unique().items():
        first_run = sum(1 for t in ts if t < restarted_ms)
        assert answered_before_kill[meter] - 1 <= first_run <= answered_at_kill[meter], meter
    assert_in_order(collector)
    # Batches unacknowledged at the kill are replayed first, with their own seq, as backlog.
    replayed = collector.batches[arrived_before:arrived_before + len(unacked)]
    assert [(b["seq"], b["backlog"]) for b in replayed] == [(seq, True) for seq in unacked]
    seqs = [b["seq"] for b in collector.batches]
    assert all(s2 > s1 or b2["backlog"] for s1, s2, b2 in zip(seqs, seqs[1:], collector.batches[1:], strict=False)), \
        "seq only goes back for a replay"
    assert max(seqs) > max_seq_before, "numbering continued after the restart"


@pytest.mark.timeout(60)
def test_spool_write_failures_hold_readings_until_the_disk_recovers(tmp_path, mosquitto, plant_factory,
                                                                    collector_factory):
    """The spool refuses writes for a while (SQLite's query_only, as a full or read-only disk would):
    readings wait in memory and none is lost."""
    site_file, site = simulated_site(tmp_path, mosquitto.port, period_s=PERIOD_S)
    plant_factory(site)
    collector = collector_factory(mosquitto.host, mosquitto.port)
    service = GatewayService(site, spool_path=tmp_path / "spool.sqlite", status_interval_s=0.5)
    service.start()
    try:
        collector.wait_for(lambda: len(collector.batches) >= 3)
        service.spool.db.execute("PRAGMA query_only = ON")
        collector.wait_for(lambda: service.health()["spool_write_errors"] >= 3)
        service.spool.db.execute("PRAGMA query_only = OFF")
        collector.wait_for(lambda: service.health()["spool_depth"] < 10)
    finally:
        service.stop()
    health = json.loads((tmp_path / "spool.sqlite.status.json").read_text())
    left = spool_keys(tmp_path / "spool.sqlite")
    expected = health["polls"] - len(left)
    collector.wait_for(lambda: sum(map(len, collector.unique().values())) >= expected, 30)
    assert sum(map(len, collector.unique().values())) == expected
    assert health["unspooled_dropped"] == 0
    assert_in_order(collector)


@pytest.mark.timeout(60)
def test_broker_down_at_start_then_up(tmp_path, mosquitto, plant_factory, collector_factory):
    """The gateway starts polling and spooling with no broker, and delivers it all once there is one."""
    site_file, site = simulated_site(tmp_path, mosquitto.port, period_s=PERIOD_S)
    plant_factory(site)
    collector = collector_factory(mosquitto.host, mosquitto.port)
    collector.wait_for(lambda: collector.client.is_connected())
    mosquitto.stop()
    service = GatewayService(site, spool_path=tmp_path / "spool.sqlite", status_interval_s=0.5)
    service.start()
    try:
        time.sleep(2)
        assert not service.health()["connected"] and service.health()["spool_depth"] >= 30
        mosquitto.start()
        collector.wait_for(lambda: service.health()["connected"] and service.health()["spool_depth"] < 10, 30)
    finally:
        service.stop()
    health = json.loads((tmp_path / "spool.sqlite.status.json").read_text())
    expected = health["polls"] - len(spool_keys(tmp_path / "spool.sqlite"))
    collector.wait_for(lambda: sum(map(len, collector.unique().values())) >= expected, 30)
    assert sum(map(len, collector.unique().values())) == expected
    assert collector.batches[0]["backlog"], "readings from before the first connection are backlog"
    assert_in_order(collector)
