"""Energy is the integral of power, runs are reproducible, and the truth is bucketed by hour."""

from __future__ import annotations

import math

import pytest

from simulators.clock import ManualClock
from simulators.load_profile import Schedule, Shifts
from simulators.plant import PlantSimulator
from simulators.scenario import load_scenario
from tests.simulators.conftest import MORNING_S, REPO


def test_counters_are_the_integral_of_the_power_they_show(cq_site):
    plant = PlantSimulator.from_site(cq_site, seed=11, clock=ManualClock(MORNING_S))
    meter = plant.device("line-a-meter")
    start = meter.values()["energy_import_kwh"]
    integral = 0.0
    for _ in range(900):  # 15 minutes, one power reading per 1 s profile cell
        integral += meter.values()["power_kw"] / 3600.0
        plant.clock.advance(1.0)
    assert meter.values()["energy_import_kwh"] - start == pytest.approx(integral, rel=1e-12)


def test_truth_splits_energy_at_hour_boundaries(cq_site):
    start = math.floor(MORNING_S / 3600) * 3600 + 3000  # 10 minutes before the hour
    plant = PlantSimulator.from_site(cq_site, seed=11, clock=ManualClock(start))
    plant.clock.advance(1200)
    truth = plant.truth()
    first, second = (truth.hour("incomer", "energy_import_kwh", h) for h in (start - 3000, start + 600))
    assert first > 0 and second > 0
    assert first + second == pytest.approx(truth.total("incomer", "energy_import_kwh"), rel=1e-12)
    assert first == pytest.approx(second, rel=0.15)  # ten minutes each side of the hour


def test_same_seed_same_plant_different_seed_different_plant():
    scenario = load_scenario(REPO / "simulators" / "scenarios" / "cq-battery.yaml")

    def run(seed: int) -> dict:
        plant = PlantSimulator(scenario, seed=seed, clock=ManualClock(MORNING_S))
        plant.clock.advance(1800)
        return plant.truth().totals

    assert run(1) == run(1)
    assert run(1) != run(2)


def test_lines_stop_outside_their_shifts_and_during_machine_stops():
    day_shift = Schedule(Shifts(((8.0, 20.0),)), stops_per_h=4, stop_mean_s=60, seed=3)
    midnight_china = 1748793600.0  # 2025-06-02 00:00 China time
    assert not day_shift.running(midnight_china + 7 * 3600)
    day = [day_shift.running(midnight_china + 8 * 3600 + s) for s in range(0, 12 * 3600, 10)]
    assert 0.85 < sum(day) / len(day) < 0.99  # about 4 one-minute stops an hour
    night = Schedule(Shifts(((22.0, 6.0),)))  # a night shift passes midnight
    assert night.running(midnight_china + 3600) and not night.running(midnight_china + 12 * 3600)


def test_units_come_every_few_seconds_while_lines_run(cq_site):
    """The demo's promise: units on each line within seconds, energy all the time."""
    plant = PlantSimulator.from_site(cq_site, seed=0, clock=ManualClock(MORNING_S))
    plant.clock.advance(30)
    truth = plant.truth()
    for plc in ("plc-a", "plc-b"):
        assert truth.total(plc, "units_total") >= 3
    for meter in ("incomer", "line-a-meter", "line-b-meter", "air-meter", "hvac-meter"):
        assert truth.total(meter, "energy_import_kwh") > 0
