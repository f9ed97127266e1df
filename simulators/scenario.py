"""Scenario files: how a plant described by a site file behaves when simulated.

The site file (firmware-config/sites/*.yaml) stays the one source of truth for *what* the
plant is (meters, addresses, roles, cost centres, products) and is what gets deployed; a
scenario (simulators/scenarios/*.yaml) names that file and adds only *how* it behaves: load
sizes, shifts, takt times, PV size, seeds, scheduled faults, where RTU buses are attached.
Every key is optional; PlantSimulator fills in defaults by meter role. Errors name the file,
the line and the fix, like every other Tanji config file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simulators.faults import CONDITIONS, FaultError, fault_params
from tanji.config_file import Section, load_yaml
from tanji.errors import ConfigError
from tanji.site import Site, load_site

_SHIFT = re.compile(r"^(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})$")
_NUMBERS = ("base_kw", "run_kw", "noise_pct", "daily_swing_pct", "peak_kw", "sunrise_h", "sunset_h",
            "cloud_pct", "takt_s", "reject_pct", "initial")


@dataclass(frozen=True, slots=True)
class LineBehaviour:
    """When a production cost centre runs; its line meter and its PLC counter share it."""

    shifts: tuple[tuple[float, float], ...] = ((0.0, 24.0),)
    stops_per_h: float = 2.0
    stop_mean_s: float = 20.0


@dataclass(frozen=True, slots=True)
class MeterBehaviour:
    """Per-meter overrides; None means 'the default for this meter's role'."""

    base_kw: float | None = None
    run_kw: float | None = None
    noise_pct: float | None = None
    daily_swing_pct: float | None = None
    line: str | None = None
    shifts: tuple[tuple[float, float], ...] | None = None
    peak_kw: float | None = None
    sunrise_h: float | None = None
    sunset_h: float | None = None
    cloud_pct: float | None = None
    takt_s: float | None = None
    reject_pct: float | None = None
    batch_size: int | None = None
    first_batch: int | None = None
    initial: float | None = None
    seed: int | None = None


@dataclass(frozen=True, slots=True)
class ScheduledFault:
    """A fault that starts `at_s` plant seconds after the simulation starts."""

    meter: str
    kind: str
    at_s: float
    duration_s: float | None
    params: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Scenario:
    site: Site
    seed: int = 0
    time_scale: float = 1.0
    step_s: float = 1.0
    unmetered_kw: float = 10.0
    lines: dict[str, LineBehaviour] = field(default_factory=dict)
    meters: dict[str, MeterBehaviour] = field(default_factory=dict)
    buses: dict[str, str] = field(default_factory=dict)
    faults: tuple[ScheduledFault, ...] = ()
    file: str | None = None


def parse_shifts(section: Section, key: str) -> tuple[tuple[float, float], ...]:
    """`["06:00-14:00", "22:00-06:00"]` → ((6.0, 14.0), (22.0, 6.0)); a window may pass midnight."""
    windows = []
    for text in section.get(key, list):
        match = _SHIFT.match(str(text))
        if not match:
            raise section.error(key, f"{text!r} is not a shift", 'write shifts as ["06:00-14:00", "14:00-22:00"]')
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        if h1 > 24 or h2 > 24 or m1 > 59 or m2 > 59:
            raise section.error(key, f"{text!r} is not a time of day", "use hours 00-24 and minutes 00-59")
        windows.append((h1 + m1 / 60.0, h2 + m2 / 60.0))
    if not windows:
        raise section.error(key, "no shifts listed", 'list at least one, e.g. ["00:00-24:00"]')
    return tuple(windows)


def _line(section: Section) -> LineBehaviour:
    line = LineBehaviour(
        shifts=parse_shifts(section, "shifts") if "shifts" in section else LineBehaviour.shifts,
        stops_per_h=section.number("stops_per_h", LineBehaviour.stops_per_h, minimum=0),
        stop_mean_s=section.number("stop_mean_s", LineBehaviour.stop_mean_s, positive=True),
    )
    section.reject_unknown()
    return line


def _meter(section: Section, site: Site, lines: set[str]) -> MeterBehaviour:
    values: dict[str, Any] = {k: section.number(k, None, minimum=0) for k in _NUMBERS}
    if values["takt_s"] is not None and values["takt_s"] <= 0:
        raise section.error("takt_s", "must be > 0", "give the seconds per unit, e.g. takt_s: 4")
    line = section.get("line", str, None)
    if line is not None and line not in lines | {c.id for c in site.cost_centres}:
        raise section.error("line", f"no line or cost centre {line!r}", "name a cost centre of the site file")
    behaviour = MeterBehaviour(
        **values,
        line=line,
        shifts=parse_shifts(section, "shifts") if "shifts" in section else None,
        batch_size=section.integer("batch_size", None, minimum=1),
        first_batch=section.integer("first_batch", None, minimum=0, maximum=0xFFFFFFFF),
        seed=section.integer("seed", None),
    )
    section.reject_unknown()
    return behaviour


def _fault(section: Section, site: Site) -> ScheduledFault:
    meter = section.get("meter", str)
    if meter not in {m.id for m in site.meters}:
        raise section.error("meter", f"no meter {meter!r} in {site.file}", "name a meter id of the site file")
    kind = section.get("kind", str)
    params = {k: section.data[k] for k in section if k not in ("meter", "kind", "at_s", "duration_s")}
    try:
        fault_params(kind, params)
    except FaultError as exc:
        raise section.error("kind", str(exc), "see docs/simulators.md, 'Faults'") from None
    duration = section.number("duration_s", None, positive=True)
    if duration is not None and kind not in CONDITIONS:
        raise section.error("duration_s", f"{kind} happens once and has no duration", "remove duration_s")
    return ScheduledFault(meter, kind, section.number("at_s", minimum=0), duration, params)


def parse_scenario(root: Section, base: Path) -> Scenario:
    """Validate a parsed scenario; `base` is the directory relative site paths start from."""
    site_path = base / root.get("site", str, fix="name the site file, e.g. site: ../../firmware-config/sites/cq-battery.yaml")
    site = load_site(site_path)
    line_sections = root.section("lines", None)
    lines = {}
    if line_sections is not None:
        for key in line_sections:
            if key not in {c.id for c in site.cost_centres}:
                raise line_sections.error(key, f"no cost centre {key!r} in {site.file}", "name a cost centre")
            lines[key] = _line(line_sections.section(key))
    meter_sections = root.section("meters", None)
    meters = {}
    if meter_sections is not None:
        for key in meter_sections:
            if key not in {m.id for m in site.meters}:
                raise meter_sections.error(key, f"no meter {key!r} in {site.file}", "name a meter id of the site file")
            meters[key] = _meter(meter_sections.section(key), site, set(lines))
    bus_section = root.section("buses", None)
    buses = {}
    if bus_section is not None:
        bus_ids = {b.id for g in site.gateways for b in g.buses}
        for key in bus_section:
            if key not in bus_ids:
                raise bus_section.error(key, f"no bus {key!r} in {site.file}", "name a bus id of the site file")
            buses[key] = bus_section.get(key, str)
    scenario = Scenario(
        site=site,
        seed=root.integer("seed", 0),
        time_scale=root.number("time_scale", 1.0, positive=True),
        step_s=root.number("step_s", 1.0, positive=True, maximum=3600),
        unmetered_kw=root.number("unmetered_kw", 10.0, minimum=0),
        lines=lines,
        meters=meters,
        buses=buses,
        faults=tuple(_fault(f, site) for f in root.sections("faults", [])),
        file=root.file,
    )
    if 3600 % scenario.step_s:
        raise root.error("step_s", "must divide an hour evenly", "use e.g. 1, 5, 10 or 60")
    root.get("description", str, None)
    root.reject_unknown()
    return scenario


def load_scenario(path: str | Path) -> Scenario:
    """A scenario file, or a site file alone (then every behaviour takes its default)."""
    path = Path(path)
    root = load_yaml(path)
    if isinstance(root.data.get("site"), Section):
        return Scenario(site=load_site(path), file=str(path))
    if not isinstance(root.data.get("site"), str):
        raise ConfigError(str(path), root.line_of("site"), "site", "neither a scenario nor a site file",
                          "a scenario starts with 'site: path/to/site.yaml'; a site file with 'site:' and 'id:'")
    return parse_scenario(root, path.parent)
