"""The shared vocabulary reaches the engine whole: every counter of the catalogue is counted.

`tanji.quantities` is the one list of quantities; the site file → engine mapping
(`accounting.site_topology`) takes each meter's counters by its role (`tanji.roles`). Adding a
counter is one catalogue entry: these tests build, for every counter there is, a plant whose
probe meter has a profile mapping only that counter, run it through the site file, the
mapping and the engine, and check the counter moves the numbers its flow says it moves.
"""

from __future__ import annotations

import numpy as np
import pytest

from accounting.engine import Engine
from accounting.engine.kernels_energy import HOUR_MS
from accounting.factors.selection import dataset_for
from accounting.site_topology import site_topology
from accounting.topology import COUNTER_CHANNELS
from tanji.config_file import parse_yaml
from tanji.profile import PROFILES_DIR, load_profiles, parse_profile
from tanji.quantities import COUNTED, COUNTERS, QUANTITIES
from tanji.roles import METER_ROLES, ROLE_FLOWS
from tanji.site import load_site, parse_site_text

T0 = 1_741_910_400_000  # 2025-03-14T00:00Z
REPO_SITES = ("firmware-config/sites/cq-battery.yaml", "firmware-config/sites/js-electronics.yaml",
              "docker/sites/cq-battery.yaml")


def _probe_profile(counter: str):  # noqa: ANN202
    unit = QUANTITIES[counter].unit
    text = (f"model: probe-{counter}\nvendor: test\ntitle: probe\nsource: test\naccuracy_class: '1'\n"
            f"registers:\n  - {{name: {counter}, address: 0, type: float32, unit: '{unit}'}}\n")
    return parse_profile(parse_yaml(text, f"probe-{counter}.yaml"))


def _probe_role(counter: str) -> str:
    """A role that brings this counter's flow to the books (submeter before pv: a line's meter)."""
    flow = QUANTITIES[counter].flow
    return next(r for r in ("submeter", "pv", "production_counter", "grid_import") if flow in ROLE_FLOWS[r])


def _probe_site(counter: str):  # noqa: ANN202
    role = _probe_role(counter)
    profiles = {**load_profiles(PROFILES_DIR), f"probe-{counter}": _probe_profile(counter)}
    probe_centre = ", cost_centre: line" if role in ("submeter", "production_counter") else ""
    units = f"{{meter: probe, channel: {counter}}}" if role == "production_counter" else \
        "{meter: plc, channel: units_total}"
    text = f"""
site: {{id: probe-site, province: Jiangsu, remainder_key: units}}
gateways:
  - id: gw
    meters:
      - {{id: incomer, role: grid_import, profile: eastron-sdm630, host: 127.0.0.1, port: 5020, unit_id: 1}}
      - {{id: probe, role: {role}, profile: probe-{counter}, host: 127.0.0.1, port: 5020, unit_id: 2{probe_centre}}}
      - {{id: plc, role: production_counter, profile: generic-plc-counter, host: 127.0.0.1, port: 5020, unit_id: 3, cost_centre: line}}
cost_centres:
  - {{id: line, kind: production}}
products:
  - {{id: widget, cost_centre: line, counter: {units}}}
"""
    return parse_site_text(text, "probe.yaml", profiles)


def test_the_engine_counts_every_counter_of_the_catalogue() -> None:
    assert frozenset(COUNTED) == COUNTER_CHANNELS
    parts = set(COUNTERS) - set(COUNTED)
    assert all(QUANTITIES[QUANTITIES[p].part_of].flow == QUANTITIES[p].flow for p in parts)


def test_every_role_names_flows_of_the_catalogue() -> None:
    flows = {QUANTITIES[c].flow for c in COUNTED}
    assert set(ROLE_FLOWS) == set(METER_ROLES)
    assert set().union(*ROLE_FLOWS.values()) == flows, "a counter flow no meter role brings to the books"


@pytest.mark.parametrize("counter", COUNTED)
def test_a_counter_goes_from_site_file_to_footprint(counter: str) -> None:
    site = _probe_site(counter)
    topology = site_topology(site)
    assert counter in topology.meter("probe").channels
    engine = Engine(topology, dataset_for(site))
    hours = np.arange(T0, T0 + 3 * HOUR_MS + 1, 60_000, dtype=np.int64)
    ramp = np.linspace(0.0, 30.0, hours.size)
    keys = [(m, c) for m, c in engine.channel_keys if c in COUNTERS]
    channels = np.repeat([engine.channel_index(m, c) for m, c in keys], hours.size)
    # The incomer draws three times what the probe counts and feeds nothing back.
    scale = {("incomer", "energy_import_kwh"): 3.0, ("incomer", "energy_export_kwh"): 0.0}
    values = np.concatenate([ramp * scale.get(k, 1.0) for k in keys])
    engine.ingest(channels, np.tile(hours, len(keys)), values)
    _, counted = engine.hourly_energy("probe", counter, T0, T0 + 3 * HOUR_MS)
    assert counted.sum() == pytest.approx(30.0)
    [fp] = engine.footprints(T0, T0 + 3 * HOUR_MS)
    flow = QUANTITIES[counter].flow
    balance = engine.site_balance(T0, T0 + 3 * HOUR_MS).columns
    if flow == "production":
        assert fp.units == pytest.approx(30.0)
    elif flow == "generation":
        assert balance["pv_kwh"].sum() == pytest.approx(30.0)
    else:  # a submeter's import, minus its export, is its line's metered energy
        sign = {"import": 1.0, "export": -1.0}[flow]
        assert balance["submetered_kwh"].sum() == pytest.approx(sign * 30.0)


@pytest.mark.parametrize("path", REPO_SITES)
def test_every_shipped_site_file_maps_to_an_engine_topology(path: str) -> None:
    """js-electronics' PV inverter counts `energy_generated_kwh`: once refused as 'needs energy channels only'."""
    from pathlib import Path

    site = load_site(Path(__file__).resolve().parents[2] / path)
    topology = site_topology(site)
    for meter in site.meters:
        assert topology.meter(meter.id).counter_channels, f"{meter.id} brings no counter to the books"
    Engine(topology, dataset_for(site))
