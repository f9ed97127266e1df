"""Site file → engine topology: the one place that maps `tanji.site.Site` to `SiteTopology`.

The site file speaks the integrator's language (a meter's profile, its CT ratio, a cost
centre's allocation key as written on the plant's cost sheet); the engine speaks channels,
limits and sharing keys. Keeping the translation here means neither side learns the other's
vocabulary, and a mapping choice is made once, visibly.
"""

from __future__ import annotations

import math

from accounting.errors import TopologyError
from accounting.factors.regions import grid_region_for_province
from accounting.factors.selection import effective_matching_mode
from accounting.topology import PRODUCT_KEYS, CostCentre, Meter, Product, SiteTopology
from tanji.profile import Register
from tanji.quantities import BATCH_ID
from tanji.roles import counters_for
from tanji.site import CostCentre as SiteCostCentre
from tanji.site import Meter as SiteMeter
from tanji.site import Site


def _meter(m: SiteMeter) -> Meter:
    """The counters the meter's role brings (`tanji.roles`), and a PLC's batch number."""
    names = [r.name for r in m.profile.registers]
    counters = counters_for(m.role, names)
    channels = list(m.counters)
    if m.role == "production_counter" and BATCH_ID in names:
        channels.append(BATCH_ID)
    # The engine has one rollover per meter: that of its first counter (in catalogue order) that wraps.
    registers = {r.name: r for r in m.profile.registers}
    rollover = next((_rollover_in_channel_units(m, registers[c]) for c in counters if registers[c].rollover), 0.0)
    # A production counter's cap is in units per hour: the site file's max_power_kw (read as
    # units/h), else its profile's max_units_per_h (docs/accounting.md).
    max_power = (m.plausible_max_power_kw() if m.role != "production_counter"
                 else (m.max_power_kw or m.profile.max_units_per_h or 0.0))
    return Meter(
        meter_id=m.id,
        role=m.role,  # type: ignore[arg-type]  # the same four roles, validated by both sides
        channels=tuple(channels),
        cost_centre=m.cost_centre,
        rollover_kwh=float(rollover),
        max_power_kw=0.0 if math.isinf(max_power) else float(max_power),
        accuracy_class_pct=m.profile.accuracy_pct,
        poll_period_s=m.poll_period_s,
        replacements=m.replacements,
    )


def _rollover_in_channel_units(m: SiteMeter, r: Register) -> float:
    """A profile's rollover is a raw register value; the engine sees scaled, ratio-applied kWh (or units)."""
    return float(r.rollover or 0.0) * r.scale * r.ratio(m.ct_ratio, m.vt_ratio)


def _cost_centre(c: SiteCostCentre, production: list[SiteCostCentre]) -> CostCentre:
    """Utilities are shared among lines by `units`, `fixed` shares, or `floor_area` (as fixed shares)."""
    if c.kind == "production":
        return CostCentre(c.id, "production", "energy", {}, c.key_uncertainty_pct)
    if c.allocation_key == "units":
        return CostCentre(c.id, "utility", "units", {}, c.key_uncertainty_pct)
    if c.allocation_key == "fixed":
        return CostCentre(c.id, "utility", "fixed", dict(c.fixed_shares), c.key_uncertainty_pct)
    if c.allocation_key == "floor_area":
        shares = {p.id: p.floor_area_m2 or 0.0 for p in production}
        return CostCentre(c.id, "utility", "fixed", shares, c.key_uncertainty_pct)
    raise TopologyError(f"utility {c.id!r}: allocation_key {c.allocation_key!r} is not supported for "
                        "sharing a utility among lines; use units, fixed or floor_area")


def site_topology(site: Site) -> SiteTopology:
    """The engine's view of a site file."""
    production = [c for c in site.cost_centres if c.kind == "production"]
    centres = {c.id: c for c in site.cost_centres}
    products = []
    for p in site.products:
        line = centres[p.cost_centre]
        key = line.allocation_key if line.allocation_key in PRODUCT_KEYS else "units"
        per_unit = {"units": 1.0, "mass": p.mass_kg, "standard_time": (p.standard_time_s or 0) / 60}[key]
        if not per_unit:
            raise TopologyError(f"product {p.id!r}: line {line.id} allocates by {key}, "
                                f"but the product declares no {'mass_kg' if key == 'mass' else 'standard_time_s'}")
        products.append(Product(
            product_id=p.id, line=p.cost_centre, units_meter=p.counter_meter, units_channel=p.counter_channel,
            allocation_key=key, key_per_unit=float(per_unit), key_uncertainty_pct=line.key_uncertainty_pct,
            upstream_kgco2e_per_unit=p.upstream_kgco2e_per_unit, battery_kwh_per_unit=p.declared_unit_kwh,
            name=p.name))
    return SiteTopology(
        site_id=site.id,
        grid_region=site.grid_region or grid_region_for_province(site.province),
        meters=tuple(_meter(m) for m in site.meters),
        cost_centres=tuple(_cost_centre(c, production) for c in site.cost_centres),
        products=tuple(products),
        matching_mode=effective_matching_mode(site),  # type: ignore[arg-type]  # hourly exemption applied
        timezone=site.zone.key,
        remainder_key=site.remainder_key,  # type: ignore[arg-type]  # validated by tanji.site
        remainder_shares=dict(site.remainder_shares),
        remainder_key_uncertainty_pct=site.remainder_key_uncertainty_pct,
    )
