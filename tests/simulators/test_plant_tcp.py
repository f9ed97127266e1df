"""A site's SDM630 meters and PLC counters, served by PlantSimulator and read with pymodbus."""

from __future__ import annotations

from simulators.clock import ManualClock
from simulators.plant import PlantSimulator
from tests.simulators.conftest import MORNING_S, as_f32, f32


def test_sdm630_input_registers_at_documented_addresses(cq_site, client_for):
    incomer = cq_site.meter("incomer")
    with PlantSimulator.from_site(cq_site, seed=3, clock=ManualClock(MORNING_S)) as plant:
        # Manual numbers 30001.. are 0-based protocol addresses 0..: 30073 (Import kWh) is 72.
        words = client_for(incomer).read_input_registers(0, count=76, device_id=incomer.unit_id).registers
        truth = plant.device("incomer").values()
    ct = incomer.ct_ratio
    assert f32(words, 0) == as_f32(truth["voltage_l1_v"])
    assert f32(words, 4) == as_f32(truth["voltage_l3_v"])
    assert f32(words, 6) == as_f32(truth["current_l1_a"] / ct)
    assert f32(words, 52) == as_f32(truth["power_kw"] * 1000 / ct)  # 30053, W, secondary side
    assert f32(words, 62) == as_f32(truth["power_factor"])
    assert f32(words, 70) == as_f32(truth["frequency_hz"])
    assert f32(words, 72) == as_f32(truth["energy_import_kwh"] / ct)
    assert f32(words, 74) == 0.0  # morning, no PV: nothing exported
    assert words[12:52] == [0] * 40  # unmapped registers inside the block read as 0
    # The numbers are a consistent three-phase picture of the plant.
    assert 200 < f32(words, 0) < 260
    p_phases = sum(truth[f"voltage_l{i}_v"] * truth[f"current_l{i}_a"] for i in (1, 2, 3)) * truth["power_factor"]
    assert abs(p_phases / 1000 - truth["power_kw"]) < 1e-9 * truth["power_kw"]


def test_incomer_is_the_sum_of_the_plant(cq_site):
    plant = PlantSimulator.from_site(cq_site, seed=3, clock=ManualClock(MORNING_S))
    p = {m.id: plant.device(m.id).values()["power_kw"] for m in cq_site.meters if m.role != "production_counter"}
    submeters = sum(v for k, v in p.items() if k != "incomer")
    assert 0 < submeters < p["incomer"] < submeters + 20  # plus the unmetered remainder (~10 kW)


def test_plc_counter_holding_registers_low_word_first(cq_site, client_for):
    plc = cq_site.meter("plc-a")
    with PlantSimulator.from_site(cq_site, seed=3, clock=ManualClock(MORNING_S)) as plant:
        plant.device("plc-a").model.set_shown("units_total", 0x12345)
        words = client_for(plc).read_holding_registers(0, count=7, device_id=plc.unit_id).registers
        truth = plant.device("plc-a").values()
    # 40001 units_total uint32 CDAB: low word first.
    assert words[0] | words[1] << 16 == 0x12345
    assert words[0:2] == [0x2345, 0x0001]
    assert words[4] | words[5] << 16 == truth["batch_id"]
    assert words[6] == 1  # 40007 line_running: lines run around the clock by default


def test_units_and_energy_rise_together_and_match_truth(cq_site, client_for):
    plc, meter = cq_site.meter("plc-a"), cq_site.meter("line-a-meter")
    clock = ManualClock(MORNING_S)
    with PlantSimulator.from_site(cq_site, seed=3, clock=clock) as plant:
        plc_client, meter_client = client_for(plc), client_for(meter)
        first = plc_client.read_holding_registers(0, count=2, device_id=plc.unit_id).registers
        kwh0 = f32(meter_client.read_input_registers(72, count=2, device_id=meter.unit_id).registers, 0)
        before = plant.truth()
        clock.advance(600.0)
        after = plant.truth()
        second = plc_client.read_holding_registers(0, count=2, device_id=plc.unit_id).registers
        kwh1 = f32(meter_client.read_input_registers(72, count=2, device_id=meter.unit_id).registers, 0)
    units = (second[0] | second[1] << 16) - (first[0] | first[1] << 16)
    assert units > 50  # a 4 s takt makes ~150 units in 10 minutes, minus stops
    truth_units = after.total("plc-a", "units_total") - before.total("plc-a", "units_total")
    assert units == truth_units
    kwh = (kwh1 - kwh0) * meter.ct_ratio
    truth_kwh = after.total("line-a-meter", "energy_import_kwh") - before.total("line-a-meter", "energy_import_kwh")
    assert truth_kwh > 5  # ~75 kW for 10 minutes
    assert abs(kwh - truth_kwh) < 1e-3  # float32 registers: ~7 significant digits of a ~1000 kWh counter
