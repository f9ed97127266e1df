"""The grid factor in effect: per hour, the factors the engine applies, and where they come from.

An operator sees a carbon rate move when the load moves or when the factor moves (an hourly or
monthly dataset changes with the hour or the month). Showing the factor's value with its
dataset, version and source makes both visible. The values are the engine's own lookups
(`FactorDataset.location_factors` / `residual_factors` for the site's grid region and UTC
offset), so they are the ones its footprints were computed with.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from accounting.engine.engine import Engine
from accounting.engine.kernels_energy import HOUR_MS

#: A range is cut to this many hours (a month and a half): the API's time picker asks no more.
MAX_HOURS = 24 * 46


def grid_factors(engine: Engine, start_ms: int, end_ms: int) -> dict[str, Any]:
    """The dataset's provenance and, per hour from the one holding start_ms to end_ms, the factors (kg/kWh).

    `uncovered_basis` says what energy no instrument covers gets in the market-based method
    (`residual_mix`, `fossil_only` or `grid_average`); `residual_kg_per_kwh` is that factor, None
    for the grid average (the location factor, the GHG Protocol Scope 2 fallback where no
    residual mix is published: information, not a fault).
    """
    ds, topo = engine.dataset, engine.topology
    first = start_ms - start_ms % HOUR_MS  # the hour containing start_ms
    hours = np.arange(first, end_ms, HOUR_MS, dtype=np.int64)[:MAX_HOURS]
    location = ds.location_factors(topo.grid_region, hours, topo.zone)
    residual = ds.residual_factors(topo.grid_region, hours, topo.zone)
    return {
        "dataset_id": ds.dataset_id, "dataset_version": ds.version, "publisher": ds.publisher,
        "publication_date": ds.publication_date, "source_reference": ds.source_reference,
        "unit": ds.unit, "gas_basis": ds.gas_basis, "granularity": ds.granularity,
        "region": engine.factor_region, "matching_mode": engine.matching_mode,
        "uncertainty_pct_95": ds.uncertainty_pct_95,
        "residual_mix": residual is not None,
        "uncovered_basis": ds.uncovered_basis(topo.grid_region),
        "factor_selection": getattr(ds, "selection", None),
        "hours": [{"hour_start_ms": int(h), "location_kg_per_kwh": float(loc),
                   "residual_kg_per_kwh": None if residual is None else float(residual[i])}
                  for i, (h, loc) in enumerate(zip(hours.tolist(), location.tolist(), strict=True))],
    }
