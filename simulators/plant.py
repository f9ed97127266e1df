"""A whole simulated plant, served over Modbus from a background thread of the caller's process.

    plant = PlantSimulator.from_site(site, seed=0, time_scale=1.0)
    plant.start()                       # every TCP meter at its site host/port/unit_id
    plant.inject("line-a-meter", "offline", duration_s=30)
    snapshot = plant.truth()            # exact kWh and units so far, per meter and hour
    plant.stop()

The plant is built from the site file (what exists) and a scenario (how it behaves): line
meters and PLC counters of one production cost centre share the line's schedule, so energy
and units rise and pause together; the grid incomer measures every submeter, an unmetered
remainder and minus the PV, so it exports when the sun outshines the load.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from typing import Any

from simulators.clock import PlantClock
from simulators.device import SimulatedDevice
from simulators.ground_truth import GroundTruth, TruthSnapshot
from simulators.load_profile import Daylight, Load, NetFlow, PowerSource, Schedule, Shifts
from simulators.models import DeviceModel, ElectricMeter, ProductionCounter, PvInverter, TariffMeter
from simulators.randomness import derive_seed, uniform
from simulators.register_bank import Dlt645Bank, RegisterBank
from simulators.scenario import LineBehaviour, MeterBehaviour, Scenario
from simulators.server import ModbusEndpoints, SerialLine
from tanji.site import Meter, Site

log = logging.getLogger(__name__)

# Defaults by what a meter measures (kW); a scenario overrides any of them per meter.
_LINE_LOAD = {"base_kw": 15.0, "run_kw": 60.0, "noise_pct": 3.0}
_UTILITY_LOAD = {"base_kw": 25.0, "run_kw": 0.0, "noise_pct": 5.0}
_PV_PEAK_KW = 300.0


def _pick(value: Any, default: Any) -> Any:
    return default if value is None else value


class PlantSimulator:
    """Every meter, PV inverter and PLC counter of a site, with their physics and faults."""

    def __init__(self, scenario: Scenario, *, seed: int | None = None, time_scale: float | None = None,
                 start_s: float | None = None, clock: PlantClock | None = None,
                 serial_devices: dict[str, str] | None = None) -> None:
        """Build the plant; nothing listens until start(). `seed`/`time_scale` override the
        scenario's; `clock` (e.g. a ManualClock in tests) replaces the real-time one;
        `serial_devices` maps RS-485 bus ids to the simulator's end of each line (a pty)."""
        self.scenario = scenario
        self.serial_devices = {**scenario.buses, **(serial_devices or {})}
        self.site = scenario.site
        self.seed = scenario.seed if seed is None else seed
        self.clock = clock or PlantClock(start_s, scenario.time_scale if time_scale is None else time_scale)
        self.truth_record = GroundTruth()
        self.lock = threading.Lock()
        self.devices: dict[str, SimulatedDevice] = {}
        self.endpoints = ModbusEndpoints()
        self._schedules: dict[str, Schedule] = {}
        self._sources: dict[str, PowerSource] = {}
        self._build()

    @classmethod
    def from_site(cls, site: Site, seed: int = 0, time_scale: float = 1.0, start_s: float | None = None,
                  clock: PlantClock | None = None, serial_devices: dict[str, str] | None = None) -> PlantSimulator:
        """A plant with default behaviour for every meter of `site` (no scenario file needed)."""
        return cls(Scenario(site=site), seed=seed, time_scale=time_scale, start_s=start_s, clock=clock,
                   serial_devices=serial_devices)

    # -- building ---------------------------------------------------------------------------

    def _behaviour(self, meter: Meter) -> MeterBehaviour:
        return self.scenario.meters.get(meter.id, MeterBehaviour())

    def _seed(self, meter: Meter) -> int:
        own = self._behaviour(meter).seed
        return derive_seed(self.seed if own is None else own, meter.id)

    def _schedule(self, centre: str) -> Schedule:
        """The shared running schedule of a production cost centre (one per line)."""
        if centre not in self._schedules:
            line = self.scenario.lines.get(centre, LineBehaviour())
            self._schedules[centre] = Schedule(Shifts(line.shifts), line.stops_per_h, line.stop_mean_s,
                                               derive_seed(self.seed, "line:" + centre))
        return self._schedules[centre]

    def _load(self, meter: Meter) -> Load:
        b = self._behaviour(meter)
        centre = next((c for c in self.site.cost_centres if c.id == meter.cost_centre), None)
        production = centre is not None and centre.kind == "production"
        defaults = _LINE_LOAD if production else _UTILITY_LOAD
        line = b.line or (meter.cost_centre if production else None)
        if line is not None:
            schedule: Schedule | None = self._schedule(line)
        elif b.shifts is not None:
            schedule = Schedule(Shifts(b.shifts), seed=self._seed(meter))
        else:
            schedule = None
        return Load(
            base_kw=_pick(b.base_kw, defaults["base_kw"]),
            run_kw=_pick(b.run_kw, defaults["run_kw"]),
            schedule=schedule,
            noise_pct=_pick(b.noise_pct, defaults["noise_pct"]),
            daily_swing_pct=_pick(b.daily_swing_pct, 0.0),
            seed=self._seed(meter),
            step_s=self.scenario.step_s,
        )

    def _daylight(self, meter: Meter) -> Daylight:
        b = self._behaviour(meter)
        return Daylight(peak_kw=_pick(b.peak_kw, _PV_PEAK_KW), sunrise_h=_pick(b.sunrise_h, 6.0),
                        sunset_h=_pick(b.sunset_h, 18.5), cloud_pct=_pick(b.cloud_pct, 30.0),
                        seed=self._seed(meter), step_s=self.scenario.step_s)

    def _build(self) -> None:
        meters = self.site.meters
        for m in meters:
            if m.role == "submeter":
                self._sources[m.id] = self._load(m)
            elif m.role == "pv":
                self._sources[m.id] = self._daylight(m)
        loads = tuple(s for m in meters if m.role == "submeter" for s in [self._sources[m.id]])
        generators = tuple(self._sources[m.id] for m in meters if m.role == "pv")
        remainder = Load(self.scenario.unmetered_kw, noise_pct=5.0, seed=derive_seed(self.seed, "unmetered"),
                         step_s=self.scenario.step_s)
        for m in meters:
            if m.role == "grid_import":
                self._sources[m.id] = NetFlow(loads + (remainder,), generators)
        for m in meters:
            self._add_device(m, self._model(m))

    def _model(self, meter: Meter) -> DeviceModel:
        b = self._behaviour(meter)
        seed = self._seed(meter)
        start, step = self.clock.start_s, self.scenario.step_s
        if meter.role == "production_counter":
            model: DeviceModel = ProductionCounter(
                meter.id, self.truth_record, start, step, self._schedule(b.line or meter.cost_centre or meter.id),
                seed, takt_s=_pick(b.takt_s, 4.0), reject_pct=_pick(b.reject_pct, 1.0),
                batch_size=_pick(b.batch_size, 200), first_batch=_pick(b.first_batch, 1 + int(uniform(seed, 8) * 9000)))
            initial = _pick(b.initial, float(int(uniform(seed, 9) * 100000)))
            model.set_shown("units_total", initial)
            return model
        names = {r.name for r in meter.profile.registers}
        source = self._sources[meter.id]
        nominal_v = meter.profile.nominal_voltage_v or 230.0
        if meter.role == "pv" and "energy_generated_kwh" in names:
            model = PvInverter(meter.id, self.truth_record, start, step, source, seed, nominal_v)
            model.set_shown("energy_generated_kwh", _pick(b.initial, round(uniform(seed, 9) * 200000, 1)))
            return model
        if meter.role == "pv":  # a plain meter on the PV feeder: generation flows out through it
            source = NetFlow((), (source,))
        kind = TariffMeter if "energy_import_t1_kwh" in names else ElectricMeter
        model = kind(meter.id, self.truth_record, start, step, source, seed, nominal_v)
        initial = _pick(b.initial, round(1000 + uniform(seed, 9) * 50000, 1))
        model.set_shown("energy_import_kwh", initial)
        if isinstance(model, TariffMeter):  # the tariff registers add up to the total from the start
            shares = (0.1, 0.3, 0.4, 0.2)
            for t, share in enumerate(shares[:-1], start=1):
                model.set_shown(f"energy_import_t{t}_kwh", round(initial * share, 2))
            model.set_shown("energy_import_t4_kwh", initial - sum(round(initial * x, 2) for x in shares[:-1]))
        return model

    def _add_device(self, meter: Meter, model: DeviceModel) -> None:
        dlt = meter.protocol == "dlt645"
        bank = (Dlt645Bank if dlt else RegisterBank)(meter.profile, meter.ct_ratio, meter.vt_ratio)
        device = SimulatedDevice(meter.id, model, bank, self.clock, self.lock, self._seed(meter))
        self.devices[meter.id] = device
        who = {"address": meter.address} if dlt else {"unit_id": meter.unit_id}
        gateway = self.site.gateway(meter.gateway)
        if meter.transport == "tcp":
            endpoint = gateway.endpoint(meter.endpoint)
            if dlt or (endpoint is not None and endpoint.framing == "rtu"):
                self.endpoints.add_serial_tcp(meter.host, meter.port, device,
                                              baudrate=endpoint.baudrate if endpoint else None, **who)
            else:
                self.endpoints.add_tcp(meter.host, meter.port, meter.unit_id, device)
            return
        bus = next(b for b in gateway.buses if b.id == meter.bus)
        line = SerialLine(self.serial_devices.get(bus.id, bus.device), bus.baudrate, bus.parity, bus.stopbits,
                          bus.bytesize)
        if any(m.protocol == "dlt645" for m in gateway.meters if m.bus == bus.id):
            self.endpoints.add_serial_pty(line, device, **who)
        else:
            self.endpoints.add_rtu(line, meter.unit_id, device)

    # -- running ----------------------------------------------------------------------------

    def start(self) -> None:
        """Listen on every port and serial line; returns once all listen (raises if one cannot)."""
        for line in self.describe():
            log.info("serving %s", line)
        self.endpoints.start()
        if self.scenario.faults:
            self.endpoints.spawn(self._run_fault_schedule())

    def stop(self) -> None:
        self.endpoints.stop()

    def __enter__(self) -> PlantSimulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _run_fault_schedule(self) -> None:
        for fault in sorted(self.scenario.faults, key=lambda f: f.at_s):
            while (delay := self.clock.real_seconds_until(self.clock.start_s + fault.at_s)) > 0:
                await asyncio.sleep(min(delay, 1.0))
            log.info("fault %s on %s %s", fault.kind, fault.meter, fault.params)
            with contextlib.suppress(ValueError):  # e.g. rollover on a float counter: logged by inject
                self.inject(fault.meter, fault.kind, fault.duration_s, **fault.params)

    def describe(self) -> list[str]:
        """One line per port or serial line: what is served where (logged at start-up)."""
        out = []
        for (host, port), units in self.endpoints.tcp.items():
            out.append(f"tcp {host}:{port} " + ", ".join(
                f"unit {u}={d.meter_id} ({d.bank.profile.model})" for u, d in sorted(units.items())))
        for line, units in self.endpoints.rtu.items():
            out.append(f"rtu {line.device} {line.baudrate} {line.parity}{line.bytesize}{line.stopbits} " + ", ".join(
                f"unit {u}={d.meter_id} ({d.bank.profile.model})" for u, d in sorted(units.items())))
        for server in [*self.endpoints.serial_tcp.values(), *self.endpoints.serial_pty.values()]:
            out.append(server.describe())
        return out

    # -- faults and truth -------------------------------------------------------------------

    def device(self, meter_id: str) -> SimulatedDevice:
        try:
            return self.devices[meter_id]
        except KeyError:
            raise KeyError(f"no simulated meter {meter_id!r}; the plant has {sorted(self.devices)}") from None

    def inject(self, meter_id: str, fault: str, duration_s: float | None = None, **params: Any) -> None:
        """Start a fault on a meter now (see simulators.faults for kinds and parameters)."""
        try:
            self.device(meter_id).inject(fault, duration_s, **params)
        except ValueError:
            log.exception("cannot inject %s on %s", fault, meter_id)
            raise

    def hold_line(self, centre: str, held: bool = True) -> None:
        """Stop a production line now (its PLC's stop command), or let it run its schedule again.

        The same as writing 0 or 1 to the PLC's `line_running` register over Modbus: the line
        meter's running load and the PLC's counting stop together."""
        if centre not in self._schedules:
            raise KeyError(f"no production line {centre!r}; the plant has {sorted(self._schedules)}")
        with self.lock:
            now = self.clock.now()
            hold = self._schedules[centre].hold
            hold.hold(now) if held else hold.release(now)
            self.truth_record.event(now, centre, "line_hold" if held else "line_release")

    def clear(self, meter_id: str, fault: str | None = None) -> None:
        """End one fault condition on a meter, or all of them."""
        self.device(meter_id).clear(fault)

    def truth(self) -> TruthSnapshot:
        """The ground truth up to now: every device is first brought up to the present."""
        with self.lock:
            now = self.clock.now()
            for device in self.devices.values():
                device.model.advance(now)
            return self.truth_record.snapshot(now)
