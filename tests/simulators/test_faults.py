"""Each fault mode, injected at run time or from a scenario file, seen through a pymodbus client."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest
from pymodbus.client import ModbusTcpClient
from pymodbus.exceptions import ModbusIOException

from simulators.clock import ManualClock
from simulators.faults import FaultError
from simulators.plant import PlantSimulator
from simulators.scenario import Scenario, ScheduledFault
from tests.simulators.conftest import MORNING_S, f32


@pytest.fixture
def plant(cq_site):
    with PlantSimulator.from_site(cq_site, seed=5, clock=ManualClock(MORNING_S)) as running:
        yield running


@pytest.fixture
def client(plant):
    meter = plant.site.meter("incomer")
    c = ModbusTcpClient(meter.host, port=meter.port, timeout=0.5, retries=0)
    assert c.connect()
    yield c
    c.close()


def import_kwh(client: ModbusTcpClient, unit: int = 1) -> float:
    return f32(client.read_input_registers(72, count=2, device_id=unit).registers, 0)


def test_offline_device_stays_silent_until_cleared(plant, client):
    plant.inject("incomer", "offline")
    with pytest.raises(ModbusIOException):
        import_kwh(client)
    client.close()
    assert client.connect()
    assert import_kwh(client, unit=2) > 0  # its neighbours on the same port still answer
    plant.clear("incomer")
    assert import_kwh(client) > 0


def test_offline_for_a_duration_ends_by_itself(plant, client):
    plant.inject("incomer", "offline", duration_s=60)
    with pytest.raises(ModbusIOException):
        import_kwh(client)
    client.close()
    plant.clock.advance(61)
    assert client.connect()
    assert import_kwh(client) > 0


def test_slow_device_answers_late(plant, client):
    plant.inject("incomer", "slow", delay_s=0.3)
    start = time.monotonic()
    assert import_kwh(client) > 0
    assert time.monotonic() - start >= 0.3


def test_slow_answer_after_timeout_keeps_its_own_transaction_id(plant):
    """A late answer must not be taken for the answer to the next request."""
    meter = plant.site.meter("incomer")
    c = ModbusTcpClient(meter.host, port=meter.port, timeout=0.2, retries=0)
    assert c.connect()
    try:
        plant.inject("incomer", "slow", delay_s=0.4)
        with pytest.raises(ModbusIOException):
            c.read_input_registers(0, count=2, device_id=1)  # voltage: times out
        plant.clear("incomer")
        time.sleep(0.4)  # the late voltage answer arrives with transaction id 1
        kwh = f32(c.read_input_registers(72, count=2, device_id=1).registers, 0)
        assert kwh == pytest.approx(plant.device("incomer").values()["energy_import_kwh"] / meter.ct_ratio, rel=1e-6)
    finally:
        c.close()


@pytest.mark.parametrize("code", [2, 4, 6, 11])
def test_exception_codes(plant, client, code):
    plant.inject("incomer", "exception", code=code)
    response = client.read_input_registers(72, count=2, device_id=1)
    assert response.isError()
    assert response.exception_code == code


def test_requests_the_real_device_refuses(plant, client):
    # SDM630: at most 80 registers per request (ILLEGAL DATA VALUE), no holding registers here.
    assert client.read_input_registers(0, count=81, device_id=1).exception_code == 3
    assert client.read_holding_registers(0, count=2, device_id=1).exception_code == 2
    assert client.read_input_registers(200, count=2, device_id=1).exception_code == 2


def test_counter_reset_restarts_counters_but_not_the_truth(plant, client):
    plant.clock.advance(60)
    plant.inject("incomer", "counter_reset")
    assert import_kwh(client) == 0.0
    at_reset = plant.truth().total("incomer", "energy_import_kwh")
    plant.clock.advance(60)
    shown = import_kwh(client) * plant.site.meter("incomer").ct_ratio
    truth = plant.truth()
    assert shown == pytest.approx(truth.total("incomer", "energy_import_kwh") - at_reset, abs=1e-4)
    assert at_reset > 3  # the minute before the swap still counts
    assert [e.kind for e in truth.events] == ["counter_reset"]


def test_replace_swaps_the_meter_and_records_both_meters_readings(plant, client):
    """The record a technician writes down: the old meter's final readings and the new one's initial."""
    plant.clock.advance(60)
    ct = plant.site.meter("incomer").ct_ratio
    before = import_kwh(client) * ct
    plant.inject("incomer", "replace", initial=12.5)
    assert import_kwh(client) * ct == pytest.approx(12.5, abs=1e-3)
    [event] = plant.truth().events
    assert event.kind == "replace"
    assert event.params["new_initial"] == {"energy_import_kwh": 12.5, "energy_export_kwh": 12.5}
    assert event.params["old_final"]["energy_import_kwh"] == pytest.approx(before, abs=1e-3)
    at_swap = plant.truth().total("incomer", "energy_import_kwh")
    plant.clock.advance(60)
    counted = plant.truth().total("incomer", "energy_import_kwh") - at_swap
    assert import_kwh(client) * ct == pytest.approx(12.5 + counted, abs=1e-3)  # the new one counts on


def test_plc_counter_rolls_over_at_its_wrap_value(plant):
    meter = plant.site.meter("plc-a")
    c = ModbusTcpClient(meter.host, port=meter.port, timeout=0.5, retries=0)
    assert c.connect()
    try:
        plant.inject("plc-a", "rollover", margin=3)
        w = c.read_holding_registers(0, count=2, device_id=1).registers
        assert w[0] | w[1] << 16 == 2**32 - 3
        units_before = plant.truth().total("plc-a", "units_total")
        plant.clock.advance(60)  # ~15 units at a 4 s takt
        made = plant.truth().total("plc-a", "units_total") - units_before
        w = c.read_holding_registers(0, count=2, device_id=1).registers
        assert made > 3
        assert w[0] | w[1] << 16 == made - 3  # wrapped through 0, nothing lost
    finally:
        c.close()


def test_rollover_needs_an_integer_counter(plant):
    with pytest.raises(ValueError, match="roll over"):
        plant.inject("incomer", "rollover")  # SDM630 counters are float32


def test_garbage_values_are_occasional_and_seeded(plant, client):
    plant.inject("incomer", "garbage", probability=0.5)
    good = plant.device("incomer").values()["energy_import_kwh"] / plant.site.meter("incomer").ct_ratio
    reads = [tuple(client.read_input_registers(72, count=2, device_id=1).registers) for _ in range(40)]
    clean = [r for r in reads if f32(list(r), 0) == pytest.approx(good, rel=1e-6)]
    assert 5 < len(clean) < 35


def test_clock_jump_forward_counts_the_skipped_hour_at_once(plant, client):
    kwh0 = import_kwh(client)
    plant.inject("incomer", "clock_jump", seconds=3600)
    jumped = (import_kwh(client) - kwh0) * plant.site.meter("incomer").ct_ratio
    assert 100 < jumped < 400  # an hour of a ~250 kW plant, in one poll
    truth = plant.truth()
    assert truth.total("incomer", "energy_import_kwh") == pytest.approx(jumped, rel=1e-4)
    hour = int(MORNING_S // 3600 * 3600)
    assert truth.hour("incomer", "energy_import_kwh", hour) == pytest.approx(jumped, rel=1e-4)


def test_clock_jump_backward_never_runs_counters_backwards(plant, client):
    plant.clock.advance(600)
    kwh0 = import_kwh(client)
    plant.inject("incomer", "clock_jump", seconds=-3600)
    assert import_kwh(client) == kwh0
    plant.clock.advance(60)
    assert import_kwh(client) > kwh0


def test_unknown_faults_are_refused(plant):
    with pytest.raises(FaultError, match="unknown fault"):
        plant.inject("incomer", "meltdown")
    with pytest.raises(FaultError, match="delay_s"):
        plant.inject("incomer", "slow", delay=3)


def test_faults_from_the_scenario_timetable(cq_site):
    scenario = replace(Scenario(site=cq_site), faults=(ScheduledFault("incomer", "exception", 30.0, 60.0, {"code": 4}),))
    clock = ManualClock(MORNING_S)
    with PlantSimulator(scenario, clock=clock) as plant:
        meter = plant.site.meter("incomer")
        c = ModbusTcpClient(meter.host, port=meter.port, timeout=0.5, retries=0)
        assert c.connect()
        try:
            assert not c.read_input_registers(72, count=2, device_id=1).isError()
            clock.advance(31)
            deadline = time.monotonic() + 3
            while not c.read_input_registers(72, count=2, device_id=1).isError():
                assert time.monotonic() < deadline, "the scheduled fault never started"
                time.sleep(0.05)
            clock.advance(60)
            assert not c.read_input_registers(72, count=2, device_id=1).isError()
        finally:
            c.close()
