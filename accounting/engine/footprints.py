"""Footprint reduction: hourly energy -> allocation and market matching -> product footprints.

``derive`` runs the allocation and market kernels over a range of hours, widened to whole
matching windows (a civil year under annual matching, a month under monthly) because
certificates are shared across a window; every other step is per hour. A footprint is then a
weighted sum over the hours of its window (weights 1, or the fraction of each hour a
production batch covered), over those hours only, so its value does not depend on how wide
the derivation was. The last derivation is cached until the live state changes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from accounting.engine import kernels_allocation as ka
from accounting.engine.arrays import (
    ONSITE_PV_TECHNOLOGY,
    InstrumentRow,
    TopologyArrays,
    build_market_arrays,
)
from accounting.engine.kernels_energy import HOUR_MS
from accounting.engine.kernels_market import match_market
from accounting.engine.results import ProductFootprint, SiteBalance
from accounting.engine.state import LiveState
from accounting.factors.dataset import FactorDataset
from accounting.topology import SiteTopology
from tanji.civil_calendar import window_bounds


@dataclass(frozen=True)
class Derived:
    """Everything computed from the hourly matrices, for hours ``h_lo..h_lo+n-1``."""

    h_lo: int
    hour_ms: np.ndarray
    energy: np.ndarray
    metered: np.ndarray
    allocated: np.ndarray
    estimated: np.ndarray
    unc: np.ndarray
    units: np.ndarray
    site: np.ndarray
    loc_factor: np.ndarray
    cov_pv: np.ndarray
    cov_contract: np.ndarray
    cov_gec: np.ndarray
    emis_market: np.ndarray
    row_used: np.ndarray
    rows: tuple[InstrumentRow, ...]

    def hour_mask(self, start_ms: int | None, end_ms: int | None) -> np.ndarray:
        sel = np.ones(len(self.hour_ms), bool)
        if start_ms is not None:
            sel &= self.hour_ms >= start_ms
        if end_ms is not None:
            sel &= self.hour_ms < end_ms
        return sel


class FootprintReducer:
    """Derives and reduces one engine's hours; holds no live state of its own but a cache."""

    def __init__(self, topology: SiteTopology, dataset: FactorDataset, arrays: TopologyArrays,
                 matching_mode: str, rows: list[InstrumentRow],
                 ineligible: list[tuple[str, str]]) -> None:
        self.topology = topology
        self.dataset = dataset
        self.arrays = arrays
        self.matching_mode = matching_mode
        self.rows = rows
        self.ineligible = ineligible
        self.factor_region = dataset.region_for(topology.grid_region)
        self.pv_factor = (dataset.technology_factor(ONSITE_PV_TECHNOLOGY)
                          if arrays.pv_channel_array.size else 0.0)
        self.residual_mix = ("available" if dataset.has_residual_mix(topology.grid_region)
                             else "unavailable")
        self._cache: tuple[tuple[int, int, int], Derived] | None = None

    # ------------------------------------------------------------------ derivation
    def window_hours(self, lo: int, hi: int) -> tuple[int, int]:
        """Hours ``lo..hi`` widened to whole matching windows."""
        if self.matching_mode == "hourly":
            return lo, hi
        kind = "year" if self.matching_mode == "annual" else "month"
        tz = self.topology.zone
        start, _ = window_bounds(kind, lo * HOUR_MS, tz)
        _, end = window_bounds(kind, hi * HOUR_MS, tz)
        return -((-start) // HOUR_MS), -((-end) // HOUR_MS) - 1

    def derive(self, state: LiveState, version: int, lo: int | None = None,
               hi: int | None = None) -> Derived | None:
        """Allocation and market matching over hours ``lo..hi`` (absolute, widened to whole
        matching windows, clipped to the hours with data; default all)."""
        span = state.span()
        if span is None:
            return None
        lo = span[0] if lo is None else max(lo, span[0])
        hi = span[1] if hi is None else min(hi, span[1])
        if lo <= hi:
            lo, hi = self.window_hours(lo, hi)
            lo, hi = max(lo, span[0]), min(hi, span[1])
        if lo > hi:
            lo, hi = span[0], span[0] - 1  # an empty range
        key = (version, lo, hi)
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        derived = self._derive(state, lo, hi - lo + 1)
        self._cache = (key, derived)
        return derived

    def _derive(self, state: LiveState, h_lo: int, n: int) -> Derived:
        a = self.arrays
        i0 = h_lo - state.origin
        energy_hc = state.energy[i0:i0 + n] if n > 0 else np.zeros((0, state.n))
        est_hc = state.est[i0:i0 + n] if n > 0 else np.zeros((0, state.n))
        out = ka.allocation_outputs(n, len(a.products))
        ka.allocate_hours(energy_hc, est_hc, a.allocation, out)
        hour_ms = (h_lo + np.arange(n, dtype=np.int64)) * HOUR_MS
        tz = self.topology.zone
        loc = self.dataset.location_factors(self.topology.grid_region, hour_ms, tz)
        res = self.dataset.residual_factors(self.topology.grid_region, hour_ms, tz)
        cons = np.ascontiguousarray(np.column_stack((out.energy, out.site[:, ka.SITE_UNALLOCATED])))
        m = build_market_arrays(hour_ms, self.topology, a, self.rows, self.ineligible,
                                self.matching_mode)
        cov = [np.zeros_like(cons) for _ in range(4)]
        row_used = np.zeros(len(m.row_kwh_array))
        match_market(cons, np.ascontiguousarray(out.site[:, ka.SITE_PV_SELF]), self.pv_factor,
                     np.ascontiguousarray(loc if res is None else res), *m.kernel_windows(), *cov,
                     row_used)
        return Derived(h_lo, hour_ms, out.energy, out.metered, out.allocated, out.estimated,
                       out.unc, out.units, out.site, loc, *cov, row_used, m.rows)

    # ------------------------------------------------------------------ reduction
    def site_balance(self, state: LiveState, d: Derived | None, start_ms: int | None,
                     end_ms: int | None, last_closed: int) -> SiteBalance:
        if d is None:
            empty = np.zeros(0)
            return SiteBalance(np.zeros(0, np.int64), {c: empty for c in ka.SITE_COLUMNS},
                               np.zeros(0, np.int64), np.zeros(0, bool))
        sel = d.hour_mask(start_ms, end_ms)
        hours = d.hour_ms[sel] // HOUR_MS
        return SiteBalance(d.hour_ms[sel],
                           {c: d.site[sel, i].copy() for i, c in enumerate(ka.SITE_COLUMNS)},
                           state.revision[hours - state.origin].copy(), hours <= last_closed)

    def footprint(self, state: LiveState, d: Derived, p: int, w: np.ndarray, lo: int, hi: int,
                  batch: str | None, last_closed: int) -> ProductFootprint:
        """Product ``p`` over the hours of ``d`` weighted by ``w`` (zero: outside)."""
        prod = self.topology.products[p]
        sel = np.flatnonzero(w > 0)
        w = w[sel]

        def total(x: np.ndarray) -> float:
            return float(w @ x[sel, p])

        energy = total(d.energy)
        units = total(d.units)
        kg_loc = float(w @ (d.energy[sel, p] * d.loc_factor[sel]))
        kg_mkt = total(d.emis_market)
        covered = [total(m) for m in (d.cov_pv, d.cov_contract, d.cov_gec)]
        hours = d.hour_ms[sel] // HOUR_MS
        revision = int(state.revision[hours - state.origin].max(initial=0))
        provisional = bool(len(hours) and hours.max() > last_closed)

        def share(x: np.ndarray) -> float:
            return total(x) / energy if energy > 0 else 0.0

        metered, allocated, estimated = share(d.metered), share(d.allocated), share(d.estimated)
        per_unit_loc = kg_loc / units if units > 0 else None
        per_unit_mkt = kg_mkt / units if units > 0 else None
        uncertainty = None
        primary = None
        if energy > 0:
            u_energy = total(d.unc) / energy
            u_factor = self.dataset.uncertainty_pct_95 / 100
            uncertainty = 100 * math.hypot(u_energy, u_factor)
            upstream = (prod.upstream_kgco2e_per_unit or 0.0) * units
            gate = kg_loc / (kg_loc + upstream) if kg_loc + upstream > 0 else 1.0
            primary = (metered + allocated) * gate
        renewable = sum(covered) / energy if energy > 0 else 0.0
        upstream_unit = prod.upstream_kgco2e_per_unit or 0.0
        pcf_mkt = per_unit_mkt + upstream_unit if per_unit_mkt is not None else None
        # EU battery rule: grid electricity at the grid mix, on-site PV (a direct connection) at
        # its own factor; contractual instruments are left out.
        grid_kwh = d.energy[sel, p] - d.cov_pv[sel, p]
        kg_eu = float(w @ (grid_kwh * d.loc_factor[sel] + d.cov_pv[sel, p] * self.pv_factor))
        battery = battery_eu = None
        if prod.battery_kwh_per_unit and units > 0:
            battery = pcf_mkt / prod.battery_kwh_per_unit
            battery_eu = (kg_eu / units + upstream_unit) / prod.battery_kwh_per_unit
        return ProductFootprint(
            product_id=prod.product_id, site_id=self.topology.site_id,
            window_start_ms=int(lo), window_end_ms=int(hi), units=units, energy_kwh=energy,
            kgco2e_location=kg_loc, kgco2e_market=kg_mkt,
            kgco2e_per_unit_location=per_unit_loc, kgco2e_per_unit_market=per_unit_mkt,
            upstream_kgco2e_per_unit=prod.upstream_kgco2e_per_unit,
            dataset_id=self.dataset.dataset_id, dataset_version=self.dataset.version,
            gas_basis=self.dataset.gas_basis, factor_region=self.factor_region,
            matching_mode=self.matching_mode, residual_mix=self.residual_mix,
            share_metered=metered, share_allocated=allocated, share_estimated=estimated,
            primary_data_share=primary, uncertainty_pct_95=uncertainty,
            provisional=provisional, revision=revision, renewable_share=renewable,
            hourly_matched_share=renewable if self.matching_mode == "hourly" else None,
            covered_pv_kwh=covered[0], covered_contract_kwh=covered[1], covered_gec_kwh=covered[2],
            kgco2e_per_battery_kwh_market=battery, batch_id=batch,
            uncovered_basis=self.dataset.uncovered_basis(self.topology.grid_region),
            factor_selection=self.dataset.selection,
            boundary="cradle-to-gate" if prod.upstream_kgco2e_per_unit is not None else "gate-to-gate",
            pcf_kgco2e_per_unit_market=pcf_mkt, battery_kwh_per_unit=prod.battery_kwh_per_unit,
            kgco2e_eu_battery_electricity=kg_eu, kgco2e_per_battery_kwh_eu=battery_eu)

    def instrument_usage(self, d: Derived | None) -> list[dict[str, object]]:
        """kWh available and used of every instrument row, plus ineligible instruments."""
        used = d.row_used if d is not None else np.zeros(0)
        rows = d.rows if d is not None else tuple(self.rows)
        report: list[dict[str, object]] = []
        for i, row in enumerate(rows):
            report.append({"kind": row.kind, "refs": list(row.refs), "period_ms": row.period_ms,
                           "earmark": row.earmark, "available_kwh": row.kwh,
                           "used_kwh": float(used[i]) if i < len(used) else 0.0})
        for ref, reason in self.ineligible:
            report.append({"kind": "ineligible", "refs": [ref], "reason": reason,
                           "available_kwh": 0.0, "used_kwh": 0.0})
        return report


def add_span(weights: np.ndarray, hour_ms: np.ndarray, a: int, b: int) -> None:
    """Add the fraction of each hour covered by [a, b) to ``weights``."""
    first = np.searchsorted(hour_ms, a - HOUR_MS, side="right")
    for i in range(first, len(hour_ms)):
        h0 = int(hour_ms[i])
        if h0 >= b:
            break
        weights[i] += max(0, min(b, h0 + HOUR_MS) - max(a, h0)) / HOUR_MS
