"""Every meter model read with the pymodbus client at its manual's addresses, over TCP and RTU.

Values are decoded here with struct, independently of tanji.codec, and compared exactly with
what the device model says it shows (a ManualClock keeps both at one instant).
"""

from __future__ import annotations

import math
import struct
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

        # Janitza UMG 604: float32 big-endian at 19000.., power in W, Q in var at 19042; energy in Wh
        # at the all-tariff totals 9851 / 9863 (holding).
        m = site.meter("incomer")
        w = client_for(m).read_holding_registers(19000, count=52, device_id=m.unit_id).registers
        e = client_for(m).read_holding_registers(9851, count=14, device_id=m.unit_id).registers
        v = show("incomer")
        assert f32(w, 0) == as_f32(v["voltage_l1_v"])
        assert f32(w, 12) == as_f32(v["current_l1_a"] / m.ct_ratio)
        assert f32(w, 26) == as_f32(v["power_kw"] * 1000 / m.ct_ratio)
        assert f32(w, 42) == as_f32(v["reactive_power_kvar"] * 1000 / m.ct_ratio)
        assert f32(w, 50) == as_f32(v["frequency_hz"])
        assert f32(e, 0) == as_f32(v["energy_import_kwh"] * 1000 / m.ct_ratio)
        assert f32(e, 12) == as_f32(v["energy_export_kwh"] * 1000 / m.ct_ratio)

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

        # Carlo Gavazzi EM24 E1: int32 low word first, V*10, A*1000, W*10, Hz*10 at 0x33, kWh*10 at 0x34/0x4E (input).
        m = site.meter("smt-2-meter")
        w = client_for(m).read_input_registers(0, count=80, device_id=m.unit_id).registers
        v = show("smt-2-meter")
        assert i32(w, 0, low_word_first=True) == round(v["voltage_l1_v"] * 10)
        assert i32(w, 12, low_word_first=True) == round(v["current_l1_a"] / m.ct_ratio * 1000)
        assert i32(w, 40, low_word_first=True) == round(v["power_kw"] * 10000 / m.ct_ratio)
        assert w[0x33] == round(v["frequency_hz"] * 10)
        assert i32(w, 0x34, low_word_first=True) == math.floor(v["energy_import_kwh"] / m.ct_ratio * 10 + 1e-6)
        assert i32(w, 0x4E, low_word_first=True) == math.floor(v["energy_export_kwh"] / m.ct_ratio * 10 + 1e-6)
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
            # The RS-485 EM24 map (not the E1 one): kWh(+) TOT at 0x42, low word first, kWh*10.
            w = rtu.read_input_registers(0x42, count=2, device_id=hvac.unit_id).registers
            assert i32(w, 0, True) == math.floor(show("hvac-meter")["energy_import_kwh"] / hvac.ct_ratio * 10 + 1e-6)
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


def test_int64_wh_counters_are_exact_beyond_float32_and_uint32(tmp_path):
    """A 64-bit Wh counter (Janitza-style 'long64', big-endian ABCD) encodes exactly, decoded with struct.

    The profile is synthetic: the shipped Janitza map keeps float32 energy until the int64
    addresses are confirmed against the unit's address list (see its notes).
    """
    from simulators.register_bank import RegisterBank, wrap_value
    from tanji.profile import load_profile

    path = tmp_path / "int64-meter.yaml"
    path.write_text(
        "model: int64-test\nvendor: Test\ntitle: synthetic int64 counter map\n"
        "source: synthetic, for the simulator test only\naccuracy_class: '0.5'\n"
        "function: holding\nbyte_order: ABCD\n"
        "registers:\n"
        "  - {name: power_kw, address: 100, type: float32, scale: 0.001, unit: kW, apply_ratio: ct}\n"
        "  - {name: energy_import_kwh, address: 102, type: int64, scale: 0.001, unit: kWh, apply_ratio: ct}\n"
        "  - {name: energy_export_kwh, address: 106, type: uint64, scale: 0.001, unit: kWh, apply_ratio: ct}\n")
    profile = load_profile(path)
    bank = RegisterBank(profile, ct_ratio=200)
    assert wrap_value(profile.register("energy_import_kwh")) == 1 << 63
    # 9 870 000 024.6 Wh at the CT secondary (CT 200): past uint32, and float32 could not hold the last Wh.
    import_kwh, export_kwh = 9_870_000_024.6 * 200 / 1000, 12_345.678 * 200
    w = bank.read(3, 100, 10, {"power_kw": 1.5, "energy_import_kwh": import_kwh,
                               "energy_export_kwh": export_kwh})
    raw_import = struct.unpack(">q", struct.pack(">4H", *w[2:6]))[0]
    raw_export = struct.unpack(">Q", struct.pack(">4H", *w[6:10]))[0]
    assert raw_import == math.floor(import_kwh / 200 / 0.001 + 1e-6) == 9_870_000_024
    assert raw_import > 2**32 and float(struct.unpack(">f", struct.pack(">f", raw_import))[0]) != raw_import
    assert raw_export == math.floor(export_kwh / 200 / 0.001 + 1e-6) == 12_345_678
    assert w[2] == raw_import >> 48  # most significant word first (ABCD)
    assert struct.unpack(">f", struct.pack(">HH", w[0], w[1]))[0] == struct.unpack(">f", struct.pack(">f", 1500 / 200))[0]
