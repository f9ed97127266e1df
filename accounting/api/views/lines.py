"""Lines as the operator sees them: each cost centre's meters, products, power, state, carbon rate.

One definition of every per-line figure the dashboard shows, used by the overview, the history
and the drill-down, so the three never disagree:

- **online**: a meter without an active `meter_offline` alarm (the service's watch decides, one
  rule for the alarm and the screen; a service without an alarm log: every meter).
- **power** (kW): the sum of the newest `power_kw` of the cost centre's submeters that are
  online; None when none of them is.
- **state** of a production line: its PLC's `line_running` register (`running`/`stopped`),
  `unknown` while the PLC is offline; utilities have no state.
- **carbon rate now** (kgCO2e/h): power × the factor in effect this hour. Location-based: the
  grid factor of the hour. Market-based: the line's products' market emissions per kWh this
  hour as the engine booked them (certificates, contracts, PV lower it), or, before the line
  booked any energy this hour, the residual-mix factor (the grid factor when the dataset has
  no residual mix). It counts the line's own meters; utilities shared to it (air, HVAC) are
  in its per-unit figures, not in its rate.
- **per-line totals** of a period: its products' footprint records summed (units, kWh,
  kgCO2e), per unit = total / units. The records are the engine's, so a line's kgCO2e is the
  sum of the figures its products show everywhere else.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tanji.site import CostCentre, Meter, Site

#: Fields of a footprint record that add up over products and periods.
ADDITIVE = ("units", "energy_kwh", "kgco2e_location", "kgco2e_market")


def centres(site: Site) -> list[CostCentre]:
    """Production lines first, then utilities, in site-file order."""
    return sorted(site.cost_centres, key=lambda c: c.kind != "production")


def submeters(site: Site, centre_id: str) -> list[Meter]:
    return [m for m in site.meters if m.cost_centre == centre_id and m.role != "production_counter"]


def counters(site: Site, centre_id: str) -> list[Meter]:
    return [m for m in site.meters if m.cost_centre == centre_id and m.role == "production_counter"]


def products_of(site: Site, centre_id: str) -> list[str]:
    return [p.id for p in site.products if p.cost_centre == centre_id]


def offline_meters(alarms: Iterable[dict[str, Any]]) -> set[str]:
    """Meters with an active `meter_offline` alarm."""
    return {a["subject"] for a in alarms if a.get("kind") == "meter_offline" and a.get("active", True)}


def _value(row: dict[str, Any] | None, name: str) -> float | None:
    value = ((row or {}).get("last_values") or {}).get(name)
    return float(value) if isinstance(value, int | float) else None


def power_kw(site: Site, centre_id: str, rows: dict[str, dict[str, Any]], offline: set[str]) -> float | None:
    """The line's power now: its online submeters' newest `power_kw`, summed."""
    values = [_value(rows.get(m.id), "power_kw") for m in submeters(site, centre_id) if m.id not in offline]
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def state(site: Site, centre_id: str, rows: dict[str, dict[str, Any]], offline: set[str]) -> str | None:
    """`running` / `stopped` from the line's PLC, `unknown` while it is offline; None: no PLC."""
    plcs = counters(site, centre_id)
    if not plcs:
        return None
    flags = [_value(rows.get(m.id), "line_running") for m in plcs if m.id not in offline]
    flags = [f for f in flags if f is not None]
    if not flags:
        return "unknown"
    return "running" if any(f > 0 for f in flags) else "stopped"


def per_unit(total: float | None, units: float | None) -> float | None:
    return total / units if total is not None and units else None


def summed(records: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Products' footprint records added up: totals, per unit, energy-weighted estimated share,
    provisional when any is."""
    out: dict[str, Any] = dict.fromkeys(ADDITIVE, 0.0)
    estimated = 0.0
    provisional = False
    for r in records:
        for k in ADDITIVE:
            out[k] += r.get(k) or 0.0
        estimated += (r.get("share_estimated") or 0.0) * (r.get("energy_kwh") or 0.0)
        provisional = provisional or bool(r.get("provisional"))
    out["kwh_per_unit"] = per_unit(out["energy_kwh"], out["units"])
    out["kgco2e_per_unit_location"] = per_unit(out["kgco2e_location"], out["units"])
    out["kgco2e_per_unit_market"] = per_unit(out["kgco2e_market"], out["units"])
    out["share_estimated"] = estimated / out["energy_kwh"] if out["energy_kwh"] > 0 else 0.0
    out["provisional"] = provisional
    return out


def by_line(site: Site, records: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every cost centre's products summed (utilities have none: zeros)."""
    records = list(records)
    return {c.id: summed(r for r in records if r.get("product_id") in set(products_of(site, c.id)))
            for c in site.cost_centres}


def market_factor(line: dict[str, Any], factor: dict[str, Any]) -> float | None:
    """The market-based kg/kWh of the line this hour (see the module docstring)."""
    if line.get("energy_kwh"):
        return line["kgco2e_market"] / line["energy_kwh"]
    residual = factor.get("residual_kg_per_kwh")
    return residual if residual is not None else factor.get("location_kg_per_kwh")


def carbon_rate(power: float | None, factor_kg_per_kwh: float | None) -> float | None:
    """kgCO2e per hour at `power` kW: kW × kg/kWh."""
    return power * factor_kg_per_kwh if power is not None and factor_kg_per_kwh is not None else None
