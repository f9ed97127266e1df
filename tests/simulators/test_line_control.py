"""Driving the simulated plant like an operator at the PLC: stop a line, let it run, preset a counter.

The demo's browser tests use this to make a line stop (its ranking must change) and a PLC
counter go backwards (the dashboard must show it), over Modbus like any integrator would.
"""

from __future__ import annotations

import socket
from dataclasses import replace
from pathlib import Path

import pytest
from pymodbus.client import ModbusTcpClient

from simulators.clock import ManualClock
from simulators.plant import PlantSimulator
from simulators.scenario import LineBehaviour, load_scenario

SCENARIO = Path(__file__).resolve().parents[2] / "simulators" / "scenarios" / "cq-battery.yaml"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def plant():
    scenario = load_scenario(SCENARIO)
    meters, plcs = _free_port(), _free_port()
    site = scenario.site.with_meter_addresses(
        {m.id: ("127.0.0.1", plcs if m.role == "production_counter" else meters) for m in scenario.site.meters})
    clock = ManualClock(1_750_024_800.0)
    lines = {line: LineBehaviour(stops_per_h=0) for line in scenario.lines}  # only the operator stops them
    plant = PlantSimulator(replace(scenario, site=site, lines=lines), clock=clock)
    plant.start()
    client = ModbusTcpClient("127.0.0.1", port=plcs)
    client.connect()
    yield plant, clock, client, meters
    client.close()
    plant.stop()


def test_writing_line_running_stops_and_restarts_the_line(plant) -> None:
    sim, clock, client, _ = plant
    running_kw = sim.device("line-b-meter").values()["power_kw"]
    units = sim.device("plc-b").values()["units_total"]
    assert not client.write_register(6, 0, device_id=2).isError()  # plc-b: line_running = 0
    clock.advance(60)
    stopped = sim.device("plc-b").values()
    assert stopped["line_running"] == 0 and stopped["units_total"] == units
    assert sim.device("line-b-meter").values()["power_kw"] < running_kw / 2  # idle load only
    assert sim.device("plc-a").values()["line_running"] == 1  # the other line runs on
    assert not client.write_register(6, 1, device_id=2).isError()
    clock.advance(60)
    assert sim.device("plc-b").values()["units_total"] > units
    assert sim.device("line-b-meter").values()["power_kw"] > running_kw / 2
    assert [e.kind for e in sim.truth().events if e.meter == "plc-b"] == ["write", "write"]


def test_presetting_a_counter_makes_it_go_backwards(plant) -> None:
    sim, _, client, _ = plant
    units = int(sim.device("plc-b").values()["units_total"])
    lower = units - 18
    assert not client.write_registers(0, [lower & 0xFFFF, lower >> 16], device_id=2).isError()  # CDAB
    assert sim.device("plc-b").values()["units_total"] == lower
    back = client.read_holding_registers(0, count=2, device_id=2).registers
    assert back[0] + (back[1] << 16) == lower


def test_meters_and_partial_registers_refuse_writes(plant) -> None:
    sim, _, client, meters = plant
    assert client.write_register(0, 1, device_id=2).exception_code == 2  # half of a uint32 counter
    with ModbusTcpClient("127.0.0.1", port=meters) as meter:
        assert meter.write_register(0, 1, device_id=2).exception_code == 2  # a meter is read-only
    sim.hold_line("line-a")
    assert sim.device("plc-a").values()["line_running"] == 0
    sim.hold_line("line-a", held=False)
    assert sim.device("plc-a").values()["line_running"] == 1
