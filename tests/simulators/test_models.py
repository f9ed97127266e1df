"""Every meter model read with the pymodbus client at its manual's addresses, over TCP and RTU.

Values are decoded here with struct, independently of tanji.codec, and compared exactly with
what the device model says it shows (a ManualClock keeps both at one instant).
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from pymodbus.client import ModbusSerialClient
from pymodbus.exceptions import ModbusIOException

from simulators.clock import ManualClock
from simulators.plant import PlantSimulator
from simulators.scenario import LineBehaviour, load_scenario
from tests.simulators.conftest import REPO, as_f32, f32, i32, on_free_ports, u32

NOON_S = 1748836800.0  # 2025-06-02 12:00 China time: SMT lines running, sun high
JS = REPO / "simulators" / "scenarios" / "js-electronics.yaml"


def js_plant(sim_end: str, **changes) -> PlantSimulator:
    scenario = load_scenario(JS)
    scenario = replace(scenario, site=on_free_ports(scenario.site), **changes)
    return PlantSimulator(scenario, clock=ManualClock(NOON_S), serial_devices={"rs485-1": sim_end})


def test_every_model_at_its_documented_registers(pty_pair, client_for):
    plant = js_plant(pty_pair[0])
    site = plant.site
    with plant:
        def show(meter_id):
            return plant.device(meter_id).values()

        # Janitza UMG 604: float32 big-endian at 19000.., power in W, energy in Wh (holding).
        m = site.meter("incomer")
        w = client_for(m).read_holding_registers(19000, count=78, device_id=m.unit_id).registers
        v = show("incomer")
        assert f32(w, 0) == as_f32(v["voltage_l1_v"])
        assert f32(w, 12) == as_f32(v["current_l1_a"] / m.ct_ratio)
        assert f32(w, 26) == as_f32(v["power_kw"] * 1000 / m.ct_ratio)
        assert f32(w, 50) == as_f32(v["frequency_hz"])
        assert f32(w, 68) == as_f32(v["energy_import_kwh"] * 1000 / m.ct_ratio)
        assert f32(w, 76) == as_f32(v["energy_export_kwh"] * 1000 / m.ct_ratio)

        # Huawei SUN2000: 32080 active power int32 W, 32106 yield uint32 0.01 kWh (holding).
        m = site.meter("pv-roof")
        w = client_for(m).read_holding_registers(32069, count=39, device_id=m.unit_id).registers
        v = show("pv-roof")
        assert w[0] == round(v["voltage_l1_v"] * 10)
        assert i32(w, 32072 - 32069) == round(v["current_l1_a"] * 1000)
        assert i32(w, 32080 - 32069) == round(v["power_kw"] * 1000)
        assert 50_000 < i32(w, 32080 - 32069) < 400_000  # noon on a 400 kWp roof, some cloud
        assert w[32085 - 32069] == round(v["frequency_hz"] * 100)
        assert u32(w, 32106 - 32069) == math.floor(v["energy_generated_kwh"] * 100 + 1e-6)

        # Acrel ADW300: uint16 V (0.1), uint16 A (0.01), int32 W, int32 kWh (0.01), big-endian.
        m = site.meter("smt-1-meter")
        w = client_for(m).read_holding_registers(20, count=46, device_id=m.unit_id).registers
        v = show("smt-1-meter")
        assert w[0] == round(v["voltage_l1_v"] * 10)
        assert w[6] == round(v["current_l1_a"] / m.ct_ratio * 100)
        assert i32(w, 16) == round(v["power_kw"] * 1000 / m.ct_ratio)
        assert i32(w, 42) == math.floor(v["energy_import_kwh"] / m.ct_ratio * 100 + 1e-6)

        # Carlo Gavazzi EM24: int32 low word first, V*10, A*1000, W*10, kWh*10 (input).
        m = site.meter("smt-2-meter")
        w = client_for(m).read_input_registers(0, count=64, device_id=m.unit_id).registers
        v = show("smt-2-meter")
        assert i32(w, 0, low_word_first=True) == round(v["voltage_l1_v"] * 10)
        assert i32(w, 12, low_word_first=True) == round(v["current_l1_a"] / m.ct_ratio * 1000)
        assert i32(w, 40, low_word_first=True) == round(v["power_kw"] * 10000 / m.ct_ratio)
        assert w[55] == round(v["frequency_hz"] * 10)
        assert i32(w, 62, low_word_first=True) == math.floor(v["energy_import_kwh"] / m.ct_ratio * 10 + 1e-6)
        assert w[0:2] == [i32(w, 0, True) & 0xFFFF, i32(w, 0, True) >> 16]  # LSW really comes first

        # Two unit ids sharing one RS-485 line, read over a pty with the RTU framer.
        rtu = ModbusSerialClient(pty_pair[1], baudrate=9600, timeout=1, retries=0)
        assert rtu.connect()
        try:
            air, hvac = site.meter("air-meter"), site.meter("hvac-meter")
            w = rtu.read_holding_registers(62, count=2, device_id=air.unit_id).registers
            assert i32(w, 0) == math.floor(show("air-meter")["energy_import_kwh"] / air.ct_ratio * 100 + 1e-6)
            w = rtu.read_input_registers(40, count=2, device_id=hvac.unit_id).registers
            assert i32(w, 0, True) == round(show("hvac-meter")["power_kw"] * 10000 / hvac.ct_ratio)
            with pytest.raises(ModbusIOException):  # nobody at unit 13: silence, as on a real bus
                rtu.read_input_registers(40, count=2, device_id=13)
        finally:
            rtu.close()


def test_pv_exports_when_generation_exceeds_the_load(pty_pair):
    stopped = LineBehaviour(shifts=((0.0, 0.0),))  # an empty shift: the lines stand still
    plant = js_plant(pty_pair[0], lines={"smt-1": stopped, "smt-2": stopped})
    assert plant.device("incomer").values()["power_kw"] < 0  # noon: the roof outshines the idle load
    plant.clock.advance(600)
    truth = plant.truth()
    assert truth.total("incomer", "energy_export_kwh") > 5
    assert truth.total("incomer", "energy_import_kwh") == 0
    assert truth.total("plc-smt-1", "units_total") == 0
    assert truth.total("pv-roof", "energy_generated_kwh") > truth.total("incomer", "energy_export_kwh")
