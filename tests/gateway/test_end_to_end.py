"""The whole gateway against fake meters and a real Mosquitto: `tanji gateway --config` as users run it."""

from __future__ import annotations

import json
import signal
import sqlite3
import time

import pytest

from tests.gateway.conftest import three_meter_site

pytestmark = pytest.mark.timeout(60)


def test_cli_polls_spools_and_publishes_qos1_batches(tmp_path, mosquitto, fake_meters, collector_factory,
                                                     gateway_process):
    site_file, site = three_meter_site(tmp_path, fake_meters, mosquitto.port)
    collector = collector_factory(mosquitto.host, mosquitto.port)
    gw = gateway_process(site_file)
    gw.start()
    collector.wait_for(lambda: all(len(ts) >= 10 for ts in collector.unique().values())
                       and len(collector.unique()) == 3)
    assert gw.signal(signal.SIGTERM) == 0

    readings = collector.readings()
    seqs = [b["seq"] for b in collector.batches]
    assert seqs == list(range(len(seqs))), "one batch per seq, numbered from 0, in order"
    assert all(not b["backlog"] for b in collector.batches)
    assert {b["site"] for b in collector.batches} == {"test-site"}
    # Values in canonical units with the CT ratio applied (current ×CT, power W→kW ×CT).
    incomer = next(r for r in readings if r["meter"] == "incomer")
    assert incomer["quality"] == "good" and "value_quality" not in incomer
    assert incomer["values"]["current_l1_a"] == pytest.approx(2.5 * 40)
    assert incomer["values"]["power_kw"] == pytest.approx(1.5 * 40, rel=1e-6)
    assert incomer["values"]["voltage_l1_v"] == pytest.approx(231.5, rel=1e-6)
    line = next(r for r in readings if r["meter"] == "line-a-meter")
    assert line["values"]["current_l1_a"] == pytest.approx(2.5 * 20)
    plc = [r for r in readings if r["meter"] == "plc-a"]
    assert plc[0]["values"]["batch_id"] == 42 and plc[0]["values"]["line_running"] == 1
    units = [r["values"]["units_total"] for r in plc]
    assert units == sorted(units) and len(set(units)) == len(units), "each poll sees the counter advance"
    # One request per SDM630 poll (the whole map coalesced), one per PLC poll.
    for (_, unit), device in fake_meters.devices.items():
        assert fake_meters.requests[(device_port(fake_meters, device), unit)] == device.reads
    # Per meter: timestamps strictly increasing, about one poll period apart.
    for meter, ts in collector.unique().items():
        assert ts == sorted(ts) and len(set(ts)) == len(ts), meter
        gaps = [b - a for a, b in zip(ts, ts[1:], strict=False)]
        assert 60 <= sorted(gaps)[len(gaps) // 2] <= 160, (meter, gaps)
    # Exact count: every poll is either received or still in the spool (polled after the last
    # publish), never both, never neither.
    status = json.loads((tmp_path / "spool.sqlite.status.json").read_text())
    spooled = spool_keys(tmp_path / "spool.sqlite")
    received = {(r["meter"], r["ts_ms"]) for r in readings}
    assert len(readings) == len(received), "no duplicates without a fault"
    assert not spooled & received
    assert len(spooled) + len(received) == status["polls"]
    time.sleep(0.3)
    assert collector.status and collector.status[-1]["state"] == "offline"
    assert any(s["state"] == "online" for s in collector.status)


def spool_keys(path):
    """(meter, ts_ms) of every reading still in a spool file, queued or batched."""
    db = sqlite3.connect(path)
    keys = {(m, ts) for m, ts in db.execute("SELECT meter, ts_ms FROM reading")}
    for (body,) in db.execute("SELECT body FROM batch"):
        keys |= {(r["meter"], r["ts_ms"]) for r in json.loads(body)}
    db.close()
    return keys


def device_port(fake, device):
    return next(port for (port, _), d in fake.devices.items() if d is device)


def test_a_confirmation_that_arrives_while_the_gateway_stops_still_empties_the_spool(tmp_path, mosquitto,
                                                                                      fake_meters, caplog):
    """A confirmation paho hands over while the gateway sends its offline status runs before the
    spool closes: once it ran after, it failed on the closed database and the confirmed
    batches were sent again at the next start."""
    from gateway.service import GatewayService
    from gateway.spool import Spool
    from tanji.wire import confirm_payload, confirm_topic

    _, site = three_meter_site(tmp_path, fake_meters, mosquitto.port, delivery="confirmed")
    service = GatewayService(site, spool_path=tmp_path / "spool.sqlite", status_interval_s=0.5)
    service.start()
    try:
        deadline = time.monotonic() + 30
        while service.health()["awaiting_confirmation"] < 3 and time.monotonic() < deadline:
            time.sleep(0.05)  # published and acknowledged by the broker; nobody confirms them here
        assert service.health()["awaiting_confirmation"] >= 3
        publisher, stop = service.publisher, service.publisher.stop

        def stop_as_a_confirmation_arrives(health=None):
            """What paho's thread does when accounting's confirmation lands during the stop."""
            awaiting = sorted(service._awaiting)
            service._loop.call_soon_threadsafe(service._on_confirm, confirm_topic(site.id, "gw-1"),
                                               confirm_payload(awaiting))
            confirmed.extend(awaiting)
            stop(health)

        confirmed: list[int] = []
        publisher.stop = stop_as_a_confirmation_arrives
    finally:
        with caplog.at_level("ERROR", logger="tanji.gateway"):
            service.stop()
    assert confirmed, "the stop handed over a confirmation"
    assert not [r for r in caplog.records if r.levelname == "ERROR"], [r.getMessage() for r in caplog.records]
    spool = Spool(tmp_path / "spool.sqlite", 64 * 1024 * 1024)
    try:
        left = {b.seq for b in spool.pending_batches()}
    finally:
        spool.close()
    assert not left & set(confirmed), "confirmed batches left the spool"
