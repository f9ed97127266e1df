"""What a new factor version changes for each product: both recomputed, side by side.

`tanji factors diff OLD NEW --site FILE --from DATE --to DATE` and `POST /api/v1/factors/diff`
read the site's stored readings of the period once, run the engine with each dataset (as the
site uses it: province, uncovered-energy rule, its instruments) and return every product's
figures under both, with the differences. Nothing is stored and nothing live changes.
"""

from __future__ import annotations

from typing import Any

from accounting.engine.engine import Engine
from accounting.factors.dataset import FactorDataset
from accounting.instruments import InstrumentPortfolio
from accounting.recompute import LOOKAHEAD_MS, LOOKBACK_MS, readings_arrays
from accounting.site_topology import site_topology
from accounting.store.base import ReadingStore
from tanji.site import Site

_FIGURES = ("kgco2e_location", "kgco2e_market", "kgco2e_per_unit_location", "kgco2e_per_unit_market")


def _delta(old: float | None, new: float | None) -> tuple[float | None, float | None]:
    if old is None or new is None:
        return None, None
    return new - old, (100.0 * (new - old) / old if old else None)


def factor_diff(site: Site, store: ReadingStore, old: FactorDataset, new: FactorDataset, *,
                start_ms: int, end_ms: int, instruments: InstrumentPortfolio | None = None) -> dict[str, Any]:
    """Per product: energy, units, and each figure under ``old`` and ``new`` with the change."""
    topology = site_topology(site)
    engines = [Engine(topology, ds, instruments=instruments) for ds in (old, new)]
    rows = store.read_readings(site.id, None, max(0, start_ms - LOOKBACK_MS), end_ms + LOOKAHEAD_MS)
    readings = readings_arrays(engines[0], rows)
    results = []
    for engine in engines:
        if len(readings[0]):
            engine.ingest(*readings)
        results.append({f.product_id: f.to_dict() for f in engine.footprints(start_ms, end_ms)})
    products = []
    for pid in sorted(set(results[0]) | set(results[1])):
        a, b = results[0].get(pid, {}), results[1].get(pid, {})
        row: dict[str, Any] = {"product_id": pid, "energy_kwh": (a or b).get("energy_kwh"),
                               "units": (a or b).get("units")}
        for name in _FIGURES:
            delta, pct = _delta(a.get(name), b.get(name))
            row[name] = {"old": a.get(name), "new": b.get(name), "delta": delta, "delta_pct": pct}
        products.append(row)
    return {"site_id": site.id, "start_ms": start_ms, "end_ms": end_ms, "readings": int(len(readings[0])),
            "old": {"dataset": old.ref, "factor_region": engines[0].factor_region, "selection": old.selection},
            "new": {"dataset": new.ref, "factor_region": engines[1].factor_region, "selection": new.selection},
            "products": products}
