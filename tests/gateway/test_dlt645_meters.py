"""DL/T 645-2007 meters read by the gateway, proven against an independent implementation.

The independent implementation is the PyPI package dlt645 (its meter server and its client;
not written here). Both directions, over TCP (a serial device server in transparent mode) and
over a serial pty (socat): the gateway reads dlt645's meter server and gets what dlt645's own
client reads; dlt645's client reads the gateway's simulator and gets what the gateway reads.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from dlt645 import MeterClientService, MeterServerService

from gateway.service import GatewayService
from simulators.clock import ManualClock
from simulators.plant import PlantSimulator
from tanji import dlt645
from tanji.profile import load_profiles
from tanji.site import load_site
from tests.gateway.conftest import write_site
from tests.services import free_port

PROFILE = load_profiles()["dlt645-2007"]
ADDRESS = "123456789012"
# dlt645 takes an address as the 6 bytes in frame order (its set_address("...") is big-endian
# BCD of the string): the nameplate number 123456789012 goes on the wire as 12 90 78 56 34 12
# (A0, the lowest digit pair, first), so it is handed over as those bytes.
WIRE_ADDRESS = dlt645.address_bytes(ADDRESS)
# A meter's display at one instant: energies with tariffs that add up, a little export.
SHOWN = {"energy_import_kwh": 12345.67, "energy_import_t1_kwh": 1000.01, "energy_import_t2_kwh": 3000.02,
         "energy_import_t3_kwh": 5000.03, "energy_import_t4_kwh": 3345.61, "energy_export_kwh": 12.5,
         "energy_export_t1_kwh": 0.0, "energy_export_t2_kwh": 2.5, "energy_export_t3_kwh": 10.0,
         "energy_export_t4_kwh": 0.0, "voltage_l1_v": 221.3, "voltage_l2_v": 219.8, "voltage_l3_v": 220.4,
         "current_l1_a": 4.125, "current_l2_a": 3.9, "current_l3_a": 4.2, "power_kw": 2.7391,
         "reactive_power_kvar": -0.4123, "power_factor": 0.988, "frequency_hz": 50.01}


def _client_reads(client: MeterClientService) -> dict[str, float]:
    """What the independent client reads, per quantity of our profile."""
    client.set_address(WIRE_ADDRESS.hex())
    out = {}
    for reg in PROFILE.registers:
        item = client.read_00(reg.di) if reg.di >> 24 == 0 else client.read_02(reg.di)
        assert item is not None, f"dlt645's client could not read DI {reg.di:08X}"
        out[reg.name] = item.value
    return out


def _independent_meter(server: MeterServerService) -> MeterServerService:
    server.set_address(bytearray(WIRE_ADDRESS))
    for reg in PROFILE.registers:
        ok = server.set_00(reg.di, SHOWN[reg.name]) if reg.di >> 24 == 0 else server.set_02(reg.di, SHOWN[reg.name])
        assert ok, reg
    return server


def _gateway_readings(tmp_path, mosquitto, collector_factory, site_file, n: int = 3) -> list[dict[str, Any]]:
    site = load_site(site_file)
    collector = collector_factory(mosquitto.host, mosquitto.port)
    service = GatewayService(site, spool_path=tmp_path / "spool.sqlite", status_interval_s=0.5)
    service.start()
    try:
        collector.wait_for(lambda: sum(r["quality"] == "good" for r in collector.readings()) >= n, 30)
    finally:
        service.stop()
    return [r for r in collector.readings() if r["meter"] == "meter"]


def _site(tmp_path, mosquitto, how: dict[str, Any], **gateway: Any):
    return write_site(tmp_path, [{"id": "meter", "profile": "dlt645-2007", "address": ADDRESS,
                                  "poll_period_s": 0.2, "timeout_s": 1.0, **how}], mosquitto.port, **gateway)


@pytest.mark.timeout(90)
def test_gateway_reads_an_independent_meter_server_over_tcp(tmp_path, mosquitto, collector_factory):
    port = free_port()
    server = _independent_meter(MeterServerService.new_tcp_server("127.0.0.1", port, 5.0))
    assert server.start()
    try:
        time.sleep(0.3)
        client = MeterClientService.new_tcp_client("127.0.0.1", port, 5.0)
        independent = _client_reads(client)
        client.disconnect()
        site_file = _site(tmp_path, mosquitto, {"endpoint": "sds"}, endpoints=[
            {"id": "sds", "host": "127.0.0.1", "port": port, "framing": "rtu"}])
        readings = _gateway_readings(tmp_path, mosquitto, collector_factory, site_file)
    finally:
        server.stop()
    assert independent == pytest.approx(SHOWN)
    good = [r for r in readings if r["quality"] == "good"]
    assert good and all(r["values"] == pytest.approx(independent) for r in good)


@pytest.mark.timeout(90)
def test_gateway_reads_an_independent_meter_server_over_a_serial_pty(tmp_path, mosquitto, collector_factory,
                                                                     pty_pair):
    sim_end, gateway_end = pty_pair
    server = _independent_meter(MeterServerService.new_rtu_server(sim_end, 8, 1, 9600, "N", 5.0))
    assert server.start()
    try:
        site_file = _site(tmp_path, mosquitto, {"transport": "rtu", "bus": "rs485"}, buses=[
            {"id": "rs485", "device": gateway_end, "baudrate": 9600, "timeout_s": 1.0, "inter_frame_delay_ms": 5}])
        readings = _gateway_readings(tmp_path, mosquitto, collector_factory, site_file)
    finally:
        server.stop()
    good = [r for r in readings if r["quality"] == "good"]
    assert good and all(r["values"] == pytest.approx(SHOWN) for r in good)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("medium", ["tcp", "pty"])
def test_independent_client_reads_the_simulator_as_the_gateway_does(tmp_path, mosquitto, collector_factory,
                                                                  pty_pair, medium):
    """The simulator's DL/T 645 meter, frozen at one instant, read by dlt645's client and by the gateway."""
    sim_end, gateway_end = pty_pair
    port = free_port()
    if medium == "tcp":
        how, extra = {"endpoint": "sds"}, {"endpoints": [{"id": "sds", "host": "127.0.0.1", "port": port,
                                                          "framing": "rtu"}]}
    else:
        how, extra = {"transport": "rtu", "bus": "rs485"}, {"buses": [
            {"id": "rs485", "device": gateway_end, "timeout_s": 1.0, "inter_frame_delay_ms": 5}]}
    site_file = _site(tmp_path, mosquitto, {**how, "ct_ratio": 10}, **extra)
    site = load_site(site_file)
    plant = PlantSimulator.from_site(site, clock=ManualClock(1_750_000_000.0), serial_devices={"rs485": sim_end})
    plant.clock.advance(7200)  # two hours of load: every counter has moved
    plant.start()
    try:
        if medium == "tcp":
            client = MeterClientService.new_tcp_client("127.0.0.1", port, 5.0)
        else:
            client = MeterClientService.new_rtu_client(gateway_end, 9600, 8, 1, "N", 5.0)
        independent = _client_reads(client)
        client.disconnect()
        readings = _gateway_readings(tmp_path, mosquitto, collector_factory, site_file)
    finally:
        plant.stop()
    shown = plant.device("meter").values()
    assert independent["energy_import_kwh"] > 0 and independent["voltage_l1_v"] > 200
    # The meter is on a 10:1 CT: it shows secondary values; the gateway sends primary ones.
    primary = {name: value * (10 if reg.apply_ratio in ("ct", "ctvt") else 1)
               for reg in PROFILE.registers for name, value in [(reg.name, independent[reg.name])]}
    good = [r for r in readings if r["quality"] == "good"]
    assert good and all(r["values"] == pytest.approx(primary, abs=1e-6) for r in good)
    assert primary["energy_import_kwh"] == pytest.approx(shown["energy_import_kwh"], abs=0.1)
    tariffs = sum(primary[f"energy_import_t{t}_kwh"] for t in (1, 2, 3, 4))
    assert tariffs == pytest.approx(primary["energy_import_kwh"], abs=0.1 * 4), "tariffs add up to the total"
