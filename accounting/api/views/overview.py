"""The live overview: which line is burning carbon right now, and why.

`GET /api/v1/sites/{site}/overview` and the stream's `overview` message carry this body:
every cost centre ranked by its carbon rate now (kgCO2e/h, location- or market-based, see
`accounting.api.lines` for each figure's definition), with its power, running state, kWh and
kgCO2e per unit this hour against a baseline; the grid factor in effect with its dataset and
source; what changed lately; the active alarms; and information that needs no action.

Baseline: the same local hour on the last `BASELINE_DAYS` days on which the line produced,
pooled (their kWh over their units), so one odd day does not set it. It is computed from the
engine's footprints of those hours and cached for a few minutes per hour: closed hours do not
move, and the overview is recomputed for every stream update.
"""

from __future__ import annotations

import threading
import time
import weakref
from datetime import datetime, timedelta
from typing import Any, Literal

from accounting.api import windows
from accounting.api.deps import site_tz
from accounting.api.types import AccountingServiceLike, GridFactorsLike, OperatorLogLike
from accounting.api.views import lines
from accounting.engine.kernels_energy import HOUR_MS
from tanji.site import Site

Basis = Literal["location", "market"]

BASELINE_DAYS = 7
BASELINE_TTL_S = 300.0
RECENT_CHANGES = 20
ACTIVE_ALARMS = 50

_cache: weakref.WeakKeyDictionary[Any, dict[tuple[str, int], tuple[float, dict[str, Any]]]] = (
    weakref.WeakKeyDictionary())
_cache_lock = threading.Lock()


def _now_ms() -> int:
    return int(time.time() * 1000)


def factor_in_effect(svc: AccountingServiceLike, site: Site, hour_ms: int) -> dict[str, Any]:
    """The grid factor of the hour with its provenance; only provenance from the footprints when
    the service cannot say (then the values are None)."""
    if isinstance(svc, GridFactorsLike):
        doc = svc.grid_factors(site.id, hour_ms, hour_ms + HOUR_MS)
        hours = doc.pop("hours", [])
        return {**doc, **(hours[0] if hours else {"hour_start_ms": hour_ms, "location_kg_per_kwh": None,
                                                  "residual_kg_per_kwh": None})}
    return {"hour_start_ms": hour_ms, "location_kg_per_kwh": None, "residual_kg_per_kwh": None}


def _same_hours(site: Site, hour_ms: int, days: int) -> list[int]:
    """The same local hour on each of the previous `days` days (calendar days: DST-proof)."""
    tz = site_tz(site)
    local = datetime.fromtimestamp(hour_ms / 1000, tz)
    return [int((local - timedelta(days=d)).timestamp() * 1000) for d in range(1, days + 1)]


def baseline(svc: AccountingServiceLike, site: Site, hour_ms: int) -> dict[str, Any]:
    """Per line: the same hour on recent production days, pooled; cached BASELINE_TTL_S."""
    with _cache_lock:
        per_service = _cache.setdefault(svc, {})
        hit = per_service.get((site.id, hour_ms))
        if hit is not None and time.monotonic() - hit[0] < BASELINE_TTL_S:
            return hit[1]
    pooled: dict[str, dict[str, Any]] = {c.id: {"days": 0, "units": 0.0, "energy_kwh": 0.0, "kgco2e_location": 0.0,
                                                 "kgco2e_market": 0.0, "rate_kg": 0.0, "rate_days": 0}
                                         for c in site.cost_centres}
    for h in _same_hours(site, hour_ms, BASELINE_DAYS):
        records = svc.footprints(site.id, start_ms=h, end_ms=h + HOUR_MS)
        per_line = lines.by_line(site, records)
        series = svc.hourly_series(site.id, h, h + HOUR_MS)
        metered = (series[0].get("cost_centres_kwh") or {}) if series else {}
        factor = factor_in_effect(svc, site, h).get("location_kg_per_kwh")
        for c in site.cost_centres:
            line, acc = per_line[c.id], pooled[c.id]
            produced = line["units"] > 0
            if produced:
                acc["days"] += 1
                for k in lines.ADDITIVE:
                    acc[k] += line[k]
            kwh = metered.get(c.id)
            if kwh and factor is not None and (produced or c.kind != "production"):
                acc["rate_kg"] += kwh * factor  # an hour's kWh is its average kW
                acc["rate_days"] += 1
    out = {}
    for cid, acc in pooled.items():
        out[cid] = {"days": acc["days"],
                    "kwh_per_unit": lines.per_unit(acc["energy_kwh"], acc["units"]),
                    "kgco2e_per_unit_location": lines.per_unit(acc["kgco2e_location"], acc["units"]),
                    "kgco2e_per_unit_market": lines.per_unit(acc["kgco2e_market"], acc["units"]),
                    "carbon_rate_location_kg_per_h": acc["rate_kg"] / acc["rate_days"] if acc["rate_days"] else None}
    with _cache_lock:
        _cache.setdefault(svc, {})[(site.id, hour_ms)] = (time.monotonic(), out)
    return out


def information(site: Site, factor: dict[str, Any], records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the operator should know but cannot act on: shown as information, never as a warning."""
    info = []
    basis = factor.get("uncovered_basis") or ("grid_average" if factor.get("residual_mix") is False else None)
    if basis == "grid_average" or any(r.get("uncovered_basis") == "grid_average" for r in records):
        info.append({"kind": "no_residual_mix", "subject": factor.get("region") or site.id,
                     "message": "no residual-mix factor is published for this grid region: market-based "
                                "figures use the grid (location) factor where no certificate or contract "
                                "covers the energy (GHG Protocol Scope 2 fallback)"})
    if factor.get("matching_mode") and factor["matching_mode"] != "hourly":
        info.append({"kind": "matched_share_needs_hourly", "subject": factor["matching_mode"],
                     "message": f"certificates are matched {factor['matching_mode']}: an hourly-matched share "
                                "exists under hourly matching only"})
    return info


def overview(svc: AccountingServiceLike, site: Site, basis: Basis = "location",
             now_ms: int | None = None) -> dict[str, Any]:
    """The overview body of one site (see the module docstring)."""
    now = _now_ms() if now_ms is None else now_ms
    hour, _ = windows.window_bounds("hour", now, site_tz(site))  # the one definition of "now" windows
    rows = {r.get("meter"): r for r in svc.meter_status(site.id)}
    factor = factor_in_effect(svc, site, hour)
    records = svc.footprints(site.id, start_ms=hour, end_ms=hour + HOUR_MS)
    this_hour = lines.by_line(site, records)
    base = baseline(svc, site, hour)
    alarms = svc.alarms(site.id, active=True, limit=ACTIVE_ALARMS) if isinstance(svc, OperatorLogLike) else []
    offline = lines.offline_meters(alarms)
    out_lines = []
    for c in lines.centres(site):
        power = lines.power_kw(site, c.id, rows, offline)
        figures = this_hour[c.id]
        mkt = lines.market_factor(figures, factor)
        meters = lines.submeters(site, c.id) + lines.counters(site, c.id)
        out_lines.append({
            "id": c.id, "name": c.name or c.id, "kind": c.kind,
            "state": lines.state(site, c.id, rows, offline), "power_kw": power,
            "carbon_rate_location_kg_per_h": lines.carbon_rate(power, factor.get("location_kg_per_kwh")),
            "carbon_rate_market_kg_per_h": lines.carbon_rate(power, mkt),
            "market_kg_per_kwh": mkt,
            "hour": figures, "baseline": base.get(c.id),
            "products": lines.products_of(site, c.id),
            "meters": [m.id for m in meters],
            "meters_offline": [m.id for m in meters if m.id in offline],
        })
    key = f"carbon_rate_{basis}_kg_per_h"
    out_lines.sort(key=lambda line: -(line[key] if line[key] is not None else -1.0))
    for rank, line in enumerate(out_lines, 1):
        line["rank"] = rank
    names = {p.id: p.name for p in site.products}
    body: dict[str, Any] = {
        "site_id": site.id, "site_name": site.name or site.id, "timezone": site.timezone, "now_ms": now,
        "hour_start_ms": hour, "basis": basis, "factor": factor, "lines": out_lines,
        "products": [{**r, "name": names.get(r.get("product_id"), r.get("product_id"))} for r in records],
        "information": information(site, factor, records),
        "changes": svc.plant_changes(site.id, limit=RECENT_CHANGES) if isinstance(svc, OperatorLogLike) else [],
        "alarms": alarms,
    }
    return body


