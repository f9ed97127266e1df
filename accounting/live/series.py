"""An engine's hours as dashboard rows: consumption, cost centres, emissions and coverage per hour."""

from __future__ import annotations

from typing import Any

import numpy as np

from accounting.engine.engine import Engine
from accounting.engine.kernels_energy import HOUR_MS
from tanji.site import Site


def hourly_series(site: Site, engine: Engine, start_ms: int, end_ms: int) -> list[dict[str, Any]]:
    """Per hour starting in [start_ms, end_ms), for dashboard charts (the caller holds the engine's lock).

    `consumption_kwh`, `allocated_kwh`, `unallocated_kwh` from the engine's site balance;
    `cost_centres_kwh` the net energy of each cost centre's submeters; `kgco2e_location`,
    `kgco2e_market` and `covered_kwh` (PV + contracts + certificates) summed over the
    products, i.e. for the energy allocated to products in that hour; `provisional` until
    the hour closes.
    """
    submeters = [(m.id, m.cost_centre) for m in site.meters if m.role == "submeter" and m.cost_centre]
    balance = engine.site_balance(start_ms, end_ms)
    centre_kwh: dict[int, dict[str, float]] = {}
    for meter_id, centre in submeters:
        hours, imported = engine.hourly_energy(meter_id, "energy_import_kwh", start_ms, end_ms)
        exported = (engine.hourly_energy(meter_id, "energy_export_kwh", start_ms, end_ms)[1]
                    if "energy_export_kwh" in engine.topology.meter(meter_id).channels
                    else np.zeros_like(imported))
        for h, kwh in zip(hours.tolist(), (imported - exported).tolist(), strict=True):
            row = centre_kwh.setdefault(h, {})
            row[centre] = row.get(centre, 0.0) + kwh
    out = []
    cols = balance.columns
    for i, h in enumerate(balance.hour_start_ms.tolist()):
        fps = engine.footprints(h, h + HOUR_MS)
        out.append({
            "hour_start_ms": h,
            "consumption_kwh": float(cols["consumption_kwh"][i]),
            "allocated_kwh": float(cols["allocated_kwh"][i]),
            "unallocated_kwh": float(cols["unallocated_kwh"][i]),
            "cost_centres_kwh": centre_kwh.get(h, {}),
            "kgco2e_location": sum(f.kgco2e_location for f in fps),
            "kgco2e_market": sum(f.kgco2e_market for f in fps),
            "covered_kwh": sum(f.covered_pv_kwh + f.covered_contract_kwh + f.covered_gec_kwh for f in fps),
            "provisional": not bool(balance.closed[i]),
        })
    return out
