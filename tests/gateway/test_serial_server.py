"""Meters behind one serial device server, and DL/T 645 beside Modbus RTU on one bus.

The plant simulator plays the device server (TCP in transparent mode, RTU frames over TCP)
and counts the TCP connections it accepts and the order in which requests reach its line.
"""

from __future__ import annotations

import time
from itertools import pairwise

import pytest

from gateway.service import GatewayService
from simulators.plant import PlantSimulator
from tanji.site import load_site
from tests.gateway.conftest import write_site
from tests.services import free_port

UNITS = 20
DEAD = 7


@pytest.mark.timeout(90)
def test_twenty_unit_ids_one_connection_a_silent_one_costs_only_its_timeout(tmp_path, mosquitto,
                                                                           collector_factory):
    port = free_port()
    meters = [{"id": f"m{u:02d}", "profile": "eastron-sdm630", "endpoint": "sds-1", "unit_id": u,
               "poll_period_s": 0.5, "timeout_s": 0.3} for u in range(1, UNITS + 1)]
    site = load_site(write_site(tmp_path, meters, mosquitto.port, endpoints=[
        {"id": "sds-1", "host": "127.0.0.1", "port": port, "framing": "rtu", "connect_pause_ms": 50,
         "request_pause_ms": 2}]))
    plant = PlantSimulator.from_site(site, seed=0)
    plant.start()
    plant.inject(f"m{DEAD:02d}", "offline")
    collector = collector_factory(mosquitto.host, mosquitto.port)
    service = GatewayService(site, spool_path=tmp_path / "spool.sqlite", status_interval_s=0.5)
    line = plant.endpoints.serial_tcp[("127.0.0.1", port)]
    try:
        service.start()
        collector.wait_for(lambda: all(len(collector.unique().get(f"m{u:02d}", [])) >= 4
                                       for u in range(1, UNITS + 1)), 60)
        health = service.health()
        lines = service.scheduler.line_health()
    finally:
        service.stop()
        plant.stop()

    assert line.connections == 1, "every unit id behind the device server shares one TCP connection"
    assert lines[f"sds-1 (127.0.0.1:{port})"]["connects"] == 1, "a timeout never closes the connection"
    by_meter = {m: [r for r in collector.readings() if r["meter"] == m] for m in health["meters"]}
    for u in range(1, UNITS + 1):
        readings = by_meter[f"m{u:02d}"]
        if u == DEAD:
            assert readings and all(r["quality"] == "comm_error" for r in readings)
            assert health["meters"][f"m{u:02d}"]["consecutive_errors"] >= 2
        else:
            assert readings and all(r["quality"] == "good" for r in readings), u
            assert health["meters"][f"m{u:02d}"]["errors"] == 0
    # One request on the line at a time, and the silent unit costs its own timeout only: between
    # two requests to any one good meter, the dead unit was asked at most once (one timeout), and
    # it was asked far less often than the others (it backs off).
    order = list(line.log)
    for u in (1, 2, DEAD + 1, UNITS):
        seen = [i for i, unit in enumerate(order) if unit == u]
        for a, b in pairwise(seen):
            assert order[a:b].count(DEAD) <= 1, (u, order[a:b])
    assert order.count(DEAD) < order.count(1) / 2


@pytest.mark.timeout(90)
def test_dlt645_and_modbus_rtu_meters_share_one_bus(tmp_path, mosquitto, collector_factory, pty_pair):
    sim_end, gateway_end = pty_pair
    meters = [
        {"id": "incomer", "profile": "dlt645-2007", "transport": "rtu", "bus": "rs485", "address": "000000000001",
         "ct_ratio": 40, "poll_period_s": 0.5},
        {"id": "line-a-meter", "profile": "eastron-sdm630", "transport": "rtu", "bus": "rs485", "unit_id": 1,
         "poll_period_s": 0.5},
        {"id": "sub-2", "profile": "dlt645-2007", "transport": "rtu", "bus": "rs485", "address": "000000000002",
         "poll_period_s": 0.5},
        {"id": "plc", "role": "production_counter", "cost_centre": "line-a", "profile": "generic-plc-counter",
         "transport": "rtu", "bus": "rs485", "unit_id": 2, "poll_period_s": 0.5},
    ]
    site = load_site(write_site(tmp_path, meters, mosquitto.port, buses=[
        {"id": "rs485", "device": gateway_end, "baudrate": 9600, "timeout_s": 0.5, "inter_frame_delay_ms": 4}]))
    plant = PlantSimulator.from_site(site, seed=1, serial_devices={"rs485": sim_end})
    plant.start()
    collector = collector_factory(mosquitto.host, mosquitto.port)
    service = GatewayService(site, spool_path=tmp_path / "spool.sqlite", status_interval_s=0.5)
    try:
        service.start()
        collector.wait_for(lambda: all(len(collector.unique().get(m["id"], [])) >= 3 for m in meters), 60)
        plant.inject("sub-2", "exception", code=2)      # the meter answers "no such data"
        time.sleep(1.5)
        plant.clear("sub-2")
        plant.inject("incomer", "counter_reset")
        collector.wait_for(lambda: any(r["meter"] == "incomer" and r["quality"] == "counter_reset_suspected"
                                       for r in collector.readings()), 30)
        health = service.health()
    finally:
        service.stop()
        plant.stop()
    readings = collector.readings()
    good = {r["meter"] for r in readings if r["quality"] == "good"}
    assert good == {m["id"] for m in meters}
    incomer = next(r for r in readings if r["meter"] == "incomer" and r["quality"] == "good")
    assert incomer["values"]["energy_import_kwh"] > 1000 and 200 < incomer["values"]["voltage_l1_v"] < 250
    failed = [r for r in readings if r["meter"] == "sub-2" and r["quality"] == "comm_error"]
    assert failed, "an error answer fails the poll (comm_error), as a Modbus exception does"
    assert "no such data" in (health["meters"]["sub-2"]["last_error"] or "")
    assert health["meters"]["line-a-meter"]["errors"] == 0 and health["meters"]["plc"]["errors"] == 0


@pytest.mark.timeout(60)
@pytest.mark.parametrize("meters", [1, 2])
def test_broadcast_read_address_finds_the_only_meter_on_a_line(tmp_path, meters):
    """DL/T 645 address discovery (C = 0x13 to AA..AA): one meter answers with its address;
    two meters answer at once and garble the line, so discovery refuses to guess."""
    import asyncio

    from gateway.links import PollError, TcpSerialLine, discover_address
    from tanji.site import Endpoint

    port = free_port()
    endpoint = {"id": "sds", "host": "127.0.0.1", "port": port, "framing": "rtu"}
    site = load_site(write_site(tmp_path, [
        {"id": f"m{i}", "profile": "dlt645-2007", "endpoint": "sds", "address": f"00000000{4711 + i:04d}"}
        for i in range(meters)], 1883, endpoints=[endpoint]))
    plant = PlantSimulator.from_site(site, seed=0)
    plant.start()

    async def discover() -> str:
        line = TcpSerialLine(Endpoint(**endpoint))
        try:
            return await discover_address(line, timeout_s=1.0)
        finally:
            line.close()
    try:
        if meters == 1:
            assert asyncio.run(discover()) == "000000004711"
        else:
            with pytest.raises(PollError):
                asyncio.run(discover())
    finally:
        plant.stop()
