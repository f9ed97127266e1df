"""Device physics: what a meter, a PV inverter or a PLC counter measures at each instant.

A model integrates its power source (simulators.load_profile) cell by cell into cumulative
counters, so energy is exactly the integral of the power it reports, and tells the ground
truth every increment as it counts it. Values are physical and primary-side (kWh, kW, A at
the busbar, not at the CT's secondary): turning them into register words is
simulators.register_bank's job.

Each device has its own clock (plant time + offset): a clock jump fault moves it, and the
device re-lives or skips time without its counters ever running backwards.
"""

from __future__ import annotations

import math

from simulators.ground_truth import GroundTruth
from simulators.load_profile import CHINA_UTC_OFFSET_S, PowerSource, Schedule, cell_start
from simulators.randomness import signed, uniform


class DeviceModel:
    """Clock, cumulative counters and what they show (true count + a preset the faults move)."""

    counter_names: tuple[str, ...] = ()
    #: Registers a Modbus write may set (see `command`); a meter's are all read-only.
    writable: tuple[str, ...] = ()

    def __init__(self, meter_id: str, truth: GroundTruth, start_s: float, step_s: float) -> None:
        self.meter_id = meter_id
        self.truth = truth
        self.step_s = step_s
        self.t = start_s  # device time integrated up to
        self.clock_offset_s = 0.0
        self.counts = dict.fromkeys(self.counter_names, 0.0)  # physical, since the simulation began
        self.preset = dict.fromkeys(self.counter_names, 0.0)  # shown = counts + preset

    def shown(self, name: str) -> float:
        return self.counts[name] + self.preset[name]

    def set_shown(self, name: str, value: float) -> None:
        """Make the counter read `value` from now on (initial reading, meter swap, near-wrap preset)."""
        self.preset[name] = value - self.counts[name]

    def command(self, name: str, value: float, plant_t: float) -> None:
        """A value written to one of the `writable` registers (Modbus write)."""

    def advance(self, plant_t: float) -> None:
        """Integrate up to plant time `plant_t` (a no-op if already there)."""
        target = plant_t + self.clock_offset_s
        if target > self.t:
            self._integrate(target, None)

    def jump_clock(self, plant_t: float, seconds: float) -> None:
        """Move the device clock. Forward: the skipped span is counted at once (attributed to
        now). Backward: the device re-lives the span; its counters keep rising."""
        self.advance(plant_t)
        if seconds > 0:
            self._integrate(self.t + seconds, plant_t)
        else:
            self.t += seconds
        self.clock_offset_s += seconds

    def _integrate(self, target: float, attribute_at: float | None) -> None:
        step = self.step_s
        t = self.t
        while t < target:
            b = min(cell_start(t, step) + step, target)
            self._accumulate(t, b, attribute_at if attribute_at is not None else t - self.clock_offset_s)
            t = b
        self.t = target

    def _count(self, name: str, amount: float, plant_t: float) -> None:
        self.counts[name] += amount
        self.truth.add(self.meter_id, name, plant_t, amount)

    def _accumulate(self, a: float, b: float, plant_t: float) -> None:
        """Count what happened in [a, b) of device time, which lies inside one profile cell."""
        raise NotImplementedError

    def values(self, plant_t: float) -> dict[str, float]:
        """Every quantity this device can show, physical and primary-side, at plant time."""
        raise NotImplementedError


class ElectricMeter(DeviceModel):
    """A three-phase four-wire meter on a power source; import/export by the sign of the flow.

    Phases share the power unevenly (a fixed imbalance per meter), voltages and frequency
    jitter around nominal, the power factor is fixed per meter: a consistent set, so that
    P = Σ V·I·pf to rounding.
    """

    counter_names = ("energy_import_kwh", "energy_export_kwh")

    def __init__(self, meter_id: str, truth: GroundTruth, start_s: float, step_s: float,
                 source: PowerSource, seed: int, nominal_v: float = 230.0) -> None:
        super().__init__(meter_id, truth, start_s, step_s)
        self.source = source
        self.seed = seed
        self.nominal_v = nominal_v
        self.pf = 0.90 + 0.08 * uniform(seed, 1)
        weights = [1.0 + 0.04 * signed(seed, 2, phase) for phase in range(3)]
        self.shares = tuple(w / sum(weights) for w in weights)

    def _accumulate(self, a: float, b: float, plant_t: float) -> None:
        kwh = self.source.power_kw(a) * (b - a) / 3600.0
        if kwh >= 0:
            self._count("energy_import_kwh", kwh, plant_t)
        else:
            self._count("energy_export_kwh", -kwh, plant_t)

    def power_kw(self, plant_t: float) -> float:
        return self.source.power_kw(plant_t + self.clock_offset_s)

    def values(self, plant_t: float) -> dict[str, float]:
        d = plant_t + self.clock_offset_s
        p = self.source.power_kw(d)
        k = math.floor(d / self.step_s)
        pf = self.pf if p else 1.0
        out = {
            "power_kw": p,
            "reactive_power_kvar": abs(p) * math.tan(math.acos(pf)),
            "power_factor": pf,
            "frequency_hz": 50.0 + 0.03 * signed(self.seed, 3, k),
        }
        for phase in range(3):
            v = self.nominal_v * (1.0 + 0.01 * signed(self.seed, 4 + phase, k))
            out[f"voltage_l{phase + 1}_v"] = v
            out[f"current_l{phase + 1}_a"] = abs(p) * self.shares[phase] * 1000.0 / (v * pf)
        for name in self.counter_names:
            out[name] = self.shown(name)
        return out


# A time-of-use table as Chinese provincial grids publish them (尖 sharp, 峰 peak, 平 flat,
# 谷 valley → tariffs 1-4 of a DL/T 645 meter), by local hour.
TARIFF_BY_HOUR = (4, 4, 4, 4, 4, 4, 4, 4, 2, 2, 2, 3, 3, 3, 3, 3, 3, 2, 2, 1, 1, 2, 2, 4)


class TariffMeter(ElectricMeter):
    """A multi-tariff meter: besides the totals it counts each tariff's share (which add up to them)."""

    counter_names = ("energy_import_kwh", "energy_export_kwh",
                     *(f"energy_{d}_t{t}_kwh" for d in ("import", "export") for t in (1, 2, 3, 4)))

    def _accumulate(self, a: float, b: float, plant_t: float) -> None:
        kwh = self.source.power_kw(a) * (b - a) / 3600.0
        tariff = TARIFF_BY_HOUR[int(((a + CHINA_UTC_OFFSET_S) % 86400.0) // 3600)]
        direction = "import" if kwh >= 0 else "export"
        self._count(f"energy_{direction}_kwh", abs(kwh), plant_t)
        self._count(f"energy_{direction}_t{tariff}_kwh", abs(kwh), plant_t)


class PvInverter(ElectricMeter):
    """A grid-tied PV inverter: counts the energy it generates; power_kw is its AC output (≥ 0)."""

    counter_names = ("energy_generated_kwh",)

    def _accumulate(self, a: float, b: float, plant_t: float) -> None:
        self._count("energy_generated_kwh", max(0.0, self.source.power_kw(a)) * (b - a) / 3600.0, plant_t)


class ProductionCounter(DeviceModel):
    """A line PLC: one unit every `takt_s` while the line runs, some rejected, in batches.

    Units are whole: the PLC counts a unit when its cycle completes, so the count a poll sees
    is the floor of the integrated progress, and the truth gets each unit at its exact time.
    """

    counter_names = ("units_total", "units_rejected_total")
    writable = ("line_running", "units_total", "units_rejected_total")

    def __init__(self, meter_id: str, truth: GroundTruth, start_s: float, step_s: float,
                 schedule: Schedule, seed: int, takt_s: float = 4.0, reject_pct: float = 1.0,
                 batch_size: int = 200, first_batch: int = 1) -> None:
        super().__init__(meter_id, truth, start_s, step_s)
        self.schedule = schedule
        self.seed = seed
        self.takt_s = takt_s
        self.reject_pct = reject_pct
        self.batch_size = batch_size
        self.first_batch = first_batch
        self.progress = 0.0  # units' worth of cycle time completed
        self.made = 0  # whole units completed (good + rejected)

    def _accumulate(self, a: float, b: float, plant_t: float) -> None:
        if not self.schedule.running(cell_start(a, self.step_s)):
            return
        self.progress += (b - a) / self.takt_s
        while self.made + 1 <= self.progress:
            self.made += 1
            at = plant_t + (b - a) - (self.progress - self.made) * self.takt_s
            rejected = uniform(self.seed, 5, self.made) < self.reject_pct / 100.0
            self._count("units_rejected_total" if rejected else "units_total", 1.0, at)

    def running(self, plant_t: float) -> bool:
        return self.schedule.running(cell_start(plant_t + self.clock_offset_s, self.step_s))

    def command(self, name: str, value: float, plant_t: float) -> None:
        """What may be written to a line PLC: `line_running` 0 stops the line (its meter's load
        with it, they share the schedule), 1 lets it run its schedule again; a counter register
        is preset to the value written (a PLC restarted from a stale value)."""
        if name == "line_running":
            t = plant_t + self.clock_offset_s
            if value == 0:
                self.schedule.hold.hold(t)
            else:
                self.schedule.hold.release(t)
        else:
            self.set_shown(name, value)

    def values(self, plant_t: float) -> dict[str, float]:
        return {
            "units_total": self.shown("units_total"),
            "units_rejected_total": self.shown("units_rejected_total"),
            "batch_id": float(self.first_batch + self.made // self.batch_size),
            "line_running": 1.0 if self.running(plant_t) else 0.0,
        }
