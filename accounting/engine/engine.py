"""The accounting engine: live state, footprints, recomputation and checkpoints.

:class:`Engine` orchestrates; the numbers are made by the kernels (``kernels_*.py``) over the
arrays built in ``arrays.py``. See ``docs/accounting.md`` for the method.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from accounting.engine import kernels_allocation as ka
from accounting.engine.arrays import (
    ONSITE_PV_TECHNOLOGY,
    KeyIndex,
    build_market_arrays,
    build_topology_arrays,
    instrument_rows,
)
from accounting.engine.history import (
    ChannelLog,
    IngestSummary,
    rebuild_channel,
    sort_batch,
)
from accounting.engine.kernels_energy import HOUR_MS, all_valid, counters_to_hours_many
from accounting.engine.kernels_market import match_market
from accounting.errors import CheckpointError, ReadingError, TopologyError
from accounting.factors.dataset import FactorDataset
from accounting.instruments import InstrumentPortfolio
from accounting.topology import MATCHING_MODES, SiteTopology

Readings = tuple[np.ndarray, np.ndarray, np.ndarray]
_CHECKPOINT_FORMAT = 1


@dataclass(frozen=True)
class ProductFootprint:
    """The footprint of one product over one window (or one production batch).

    Energy in kWh, emissions in kgCO2e (kgCO2 when the dataset's gas basis is ``co2``), shares
    as fractions of ``energy_kwh``. Per-unit values are ``None`` when no unit was produced.
    """

    product_id: str
    site_id: str
    window_start_ms: int
    window_end_ms: int
    units: float
    energy_kwh: float
    kgco2e_location: float
    kgco2e_market: float
    kgco2e_per_unit_location: float | None
    kgco2e_per_unit_market: float | None
    upstream_kgco2e_per_unit: float | None
    dataset_id: str
    dataset_version: str
    gas_basis: str
    factor_region: str
    matching_mode: str
    residual_mix: str
    share_metered: float
    share_allocated: float
    share_estimated: float
    primary_data_share: float | None
    uncertainty_pct_95: float | None
    provisional: bool
    revision: int
    renewable_share: float
    hourly_matched_share: float | None
    covered_pv_kwh: float
    covered_contract_kwh: float
    covered_gec_kwh: float
    kgco2e_per_battery_kwh_market: float | None = None
    batch_id: str | None = None
    #: what uncovered energy got: ``residual_mix``, ``fossil_only`` or ``grid_average`` (disclosed)
    uncovered_basis: str = "grid_average"
    #: how the factor was chosen: ``latest_per_hour`` (each hour the latest published vintage
    #: for it, `dataset_version` names every vintage used) or ``pinned`` (one version)
    factor_selection: str = "pinned"
    #: ``gate-to-gate`` (metered electricity only) or ``cradle-to-gate`` (plus the declared
    #: upstream stage): the boundary of ``pcf_kgco2e_per_unit_market`` and the battery figures.
    boundary: str = "gate-to-gate"
    #: The product carbon footprint per unit over ``boundary``, market-based: market per unit
    #: plus the upstream part when declared. What PACT publishes per unit.
    pcf_kgco2e_per_unit_market: float | None = None
    #: kWh of battery energy per unit (EU battery regulation declared unit), None if not a battery.
    battery_kwh_per_unit: float | None = None
    #: Electricity emissions under the EU battery regulation's rule (draft delegated act on the
    #: carbon footprint of EV batteries, 2024): grid-mix (location) factor for grid electricity,
    #: the on-site installation's factor for directly connected (on-site PV) electricity;
    #: certificates and green-power contracts do not lower it.
    kgco2e_eu_battery_electricity: float = 0.0
    #: The EU battery figure: (EU-rule electricity per unit + upstream per unit) per kWh of the
    #: unit's declared battery energy. ``kgco2e_per_battery_kwh_market`` is the market-based
    #: figure on the same boundary, under its own name.
    kgco2e_per_battery_kwh_eu: float | None = None

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict (field names carry the units)."""
        return asdict(self)


@dataclass(frozen=True)
class SiteBalance:
    """Per-hour site balance (kWh), for checking energy conservation and for dashboards.

    ``columns`` maps each name of :data:`kernels_allocation.SITE_COLUMNS` (``import_kwh``,
    ``consumption_kwh``, ``allocated_kwh``, ``unallocated_kwh``, ``alarm`` ...) to an array
    aligned with ``hour_start_ms``. Invariant: ``allocated + unallocated == consumption``.
    """

    hour_start_ms: np.ndarray
    columns: dict[str, np.ndarray]
    revision: np.ndarray
    closed: np.ndarray


@dataclass(frozen=True)
class FootprintResult:
    """A versioned result of an explicit recomputation (never a silent rewrite of live state)."""

    result_id: str
    result_version: int
    dataset_id: str
    dataset_version: str
    matching_mode: str
    footprints: list[ProductFootprint]
    instrument_usage: list[dict[str, object]]
    engine: Engine = field(repr=False)


@dataclass(frozen=True)
class _Derived:
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
    rows: tuple


class Engine:
    """Live accounting of one site: cumulative readings in, product footprints out.

    The engine keeps every reading of the site's counter channels (sorted, unique) and their
    hourly energy; allocation and market matching are recomputed lazily when footprints are
    asked for. Results are a pure function of the set of readings, the topology, the dataset
    version, the instruments and the matching mode — not of arrival order or batch split.

    Example::

        import numpy as np
        from accounting.engine import Engine
        from accounting.factors import load_dataset
        from accounting.topology import CostCentre, Meter, Product, SiteTopology

        topo = SiteTopology(
            site_id="cq-01", grid_region="Southwest",
            meters=(Meter("main", "grid_import", ("energy_import_kwh",), accuracy_class_pct=0.5),
                    Meter("plc1", "production_counter", ("units_total",), cost_centre="L1")),
            cost_centres=(CostCentre("L1"),),
            products=(Product("widget", line="L1", units_meter="plc1"),),
            remainder_key="units")  # unmetered energy follows units produced
        engine = Engine(topo, load_dataset("cn-mee-regional-co2", "2022"))
        main = engine.channel_index("main", "energy_import_kwh")
        plc = engine.channel_index("plc1", "units_total")
        t0 = 1_735_689_600_000  # 2025-01-01T00:00Z
        engine.ingest(np.array([main, main, plc, plc]),
                      np.array([t0, t0 + 3_600_000, t0, t0 + 3_600_000]),
                      np.array([100.0, 150.0, 0.0, 10.0]))
        [fp] = engine.footprints(t0, t0 + 3_600_000)
        fp.kgco2e_location  # 50 kWh x 0.2268 = 11.34
        fp.kgco2e_per_unit_location  # 1.134

    Thread safety: none; one engine per site, driven by one ingest task.
    """

    def __init__(self, topology: SiteTopology, dataset: FactorDataset, *,
                 matching_mode: str | None = None, grace_period_s: float = 900.0,
                 instruments: InstrumentPortfolio | None = None,
                 deliverability: str = "mainland", gap_polls: float = 3.0) -> None:
        """Create an empty engine.

        ``matching_mode`` defaults to the topology's setting. An hour closes once a reading
        ``grace_period_s`` after its end has been seen (or :meth:`close_hours` says so);
        before that its values are provisional. ``deliverability`` is ``mainland`` or
        ``regional`` (instruments must come from the site's regional grid). A gap longer than
        ``gap_polls`` poll periods makes a reading's energy ``gap_spread`` (estimated).
        """
        mode = matching_mode or topology.matching_mode
        if mode not in MATCHING_MODES:
            raise TopologyError(f"matching_mode must be one of {MATCHING_MODES}")
        if instruments is not None and instruments.site_id != topology.site_id:
            raise TopologyError("the instrument portfolio belongs to another site")
        self.topology = topology
        self.dataset = dataset
        self.matching_mode = mode
        self.grace_period_s = float(grace_period_s)
        self.instruments = instruments
        self.deliverability = deliverability
        self.gap_polls = float(gap_polls)
        self.factor_region = dataset.region_for(topology.grid_region)
        self._arrays = build_topology_arrays(topology, gap_polls)
        self._counters = len(self._arrays.channels)
        self._keys = KeyIndex(list(self._arrays.channels.keys) + topology.batch_keys(), "channel")
        self._rows, self._ineligible = instrument_rows(instruments, topology, dataset, mode,
                                                       deliverability)
        self._pv_factor = (dataset.technology_factor(ONSITE_PV_TECHNOLOGY)
                           if self._arrays.pv_channel_array.size else 0.0)
        self._logs = [ChannelLog() for _ in range(len(self._keys))]
        self._origin = 0
        self._energy = np.zeros((self._counters, 0))
        self._est = np.zeros((self._counters, 0))
        self._revision = np.zeros(0, dtype=np.int64)
        self._h_lo: int | None = None
        self._h_hi: int | None = None
        self._watermark_ms = np.iinfo(np.int64).min
        self._result_version = 0
        self._derived: _Derived | None = None
        self._retain = True

    # ------------------------------------------------------------------ channels
    def channel_index(self, meter_id: str, channel: str) -> int:
        """Dense index of a (meter_id, channel) key: counters first, then batch-id channels."""
        return self._keys.index((meter_id, channel))

    def channel_key(self, index: int) -> tuple[str, str]:
        """The (meter_id, channel) key of an index (inverse of :meth:`channel_index`)."""
        return self._keys.key(index)  # type: ignore[return-value]

    @property
    def channel_keys(self) -> tuple[tuple[str, str], ...]:
        """All keys in index order."""
        return self._keys.keys

    # ------------------------------------------------------------------ ingest
    def ingest(self, channels: np.ndarray | Sequence[tuple[str, str]], ts_ms: np.ndarray,
               value: np.ndarray, quality: np.ndarray | None = None) -> IngestSummary:
        """Add cumulative readings (any order, any split, duplicates allowed).

        ``channels`` are indices from :meth:`channel_index` or (meter_id, channel) keys;
        ``ts_ms`` UTC epoch ms; ``value`` the cumulative register (kWh, units) or, on a
        ``batch_id`` channel, the batch number. Readings with ``quality != 0``, a non-finite or
        negative value are rejected. Returns the counts of what happened.
        """
        if not self._retain:
            raise ReadingError("this engine was built without retaining readings; it is read-only")
        ch = self._as_indices(channels)
        ts = np.ascontiguousarray(ts_ms, dtype=np.int64)
        val = np.ascontiguousarray(value, dtype=np.float64)
        if not (len(ch) == len(ts) == len(val)):
            raise ReadingError("channels, ts_ms and value must have the same length")
        summary = IngestSummary()
        ok = np.isfinite(val) & (val >= 0)
        if quality is not None:
            q = np.asarray(quality)
            if len(q) != len(ch):
                raise ReadingError("quality must have the same length as the readings")
            ok &= q == 0
        summary.rejected = int(len(ch) - ok.sum())
        ch, ts, val, starts, dups = sort_batch(ch[ok], ts[ok], val[ok])
        summary.duplicate += dups
        if len(ch) == 0:
            return summary
        self._derived = None
        bounds = np.append(starts, len(ch))
        touched: list[tuple[int, int]] = []
        for g in range(len(starts)):
            lo, hi = bounds[g], bounds[g + 1]
            c = int(ch[lo])
            first = self._logs[c].merge(ts[lo:hi], val[lo:hi], summary)
            if first >= 0 and c < self._counters:
                touched.append((c, first))
        if not touched:
            return summary
        restarts = [(c, *self._logs[c].restart_point(first)) for c, first in touched]
        self._ensure_hours(min(clip for _, _, clip in restarts),
                           max(self._logs[c].last_hour() for c, _, _ in restarts))
        last_closed = self._last_closed_hour()
        reopened = np.zeros(0, dtype=np.int64)
        a = self._arrays
        for c, baseline, clip in restarts:
            row = self._energy[c]
            before = None
            if clip <= last_closed:
                before = row[clip - self._origin:last_closed - self._origin + 1].copy()
            rebuild_channel(self._logs[c], baseline, clip, a.rollover_array[c],
                            a.max_rate_array[c], int(a.gap_ms_array[c]), self._origin, row,
                            self._est[c])
            if before is not None:
                after = row[clip - self._origin:last_closed - self._origin + 1]
                reopened = np.union1d(reopened, np.flatnonzero(after != before) + clip)
        self._revision[reopened - self._origin] += 1
        summary.reopened_hours = len(reopened)
        self._watermark_ms = max(self._watermark_ms, int(ts[ch < self._counters].max(initial=self._watermark_ms)))
        return summary

    def close_hours(self, now_ms: int) -> None:
        """Advance the clock (e.g. from wall time when meters fall silent) so hours can close."""
        self._watermark_ms = max(self._watermark_ms, int(now_ms))

    def _as_indices(self, channels: np.ndarray | Sequence[tuple[str, str]]) -> np.ndarray:
        arr = np.asarray(channels) if not isinstance(channels, np.ndarray) else channels
        if arr.dtype.kind in "iu":
            idx = np.ascontiguousarray(arr, dtype=np.int64)
            if idx.size and (idx.min() < 0 or idx.max() >= len(self._keys)):
                bad = idx[(idx < 0) | (idx >= len(self._keys))][0]
                self._keys.key(int(bad))  # raises UnknownChannelError
            return idx
        return np.array([self._keys.index(tuple(k)) for k in channels], dtype=np.int64)

    def _ensure_hours(self, lo: int, hi: int) -> None:
        """Grow the hour axis to cover absolute hours ``lo..hi``."""
        self._h_lo = lo if self._h_lo is None else min(self._h_lo, lo)
        self._h_hi = hi if self._h_hi is None else max(self._h_hi, hi)
        cap = self._energy.shape[1]
        if cap and lo >= self._origin and hi < self._origin + cap:
            return
        new_origin = lo if cap == 0 else min(lo, self._origin)
        end = max(hi + 1, self._origin + cap)
        new_cap = max(end - new_origin, 2 * cap) + 24
        shift = self._origin - new_origin
        for name in ("_energy", "_est"):
            old = getattr(self, name)
            new = np.zeros((self._counters, new_cap))
            new[:, shift:shift + cap] = old
            setattr(self, name, new)
        rev = np.zeros(new_cap, dtype=np.int64)
        rev[shift:shift + cap] = self._revision
        self._revision = rev
        self._origin = new_origin

    def _last_closed_hour(self) -> int:
        """Absolute index of the last closed hour."""
        if self._watermark_ms == np.iinfo(np.int64).min:
            return np.iinfo(np.int64).min
        return int((self._watermark_ms - int(self.grace_period_s * 1000)) // HOUR_MS) - 1

    # ------------------------------------------------------------------ bulk load
    def _bulk_load(self, chunks: Iterable[Readings], retain: bool) -> None:
        """Load complete channel histories chunk by chunk (recompute, restore, benchmarks).

        Each channel's readings must all be in one chunk; readings are processed by the
        parallel kernel from their first reading, exactly as the live path would.
        """
        seen = np.zeros(len(self._keys), dtype=bool)
        a = self._arrays
        for chunk in chunks:
            ch, ts, val = (np.ascontiguousarray(x, dtype=d) for x, d in
                           zip(chunk, (np.int64, np.int64, np.float64), strict=True))
            if not all_valid(val):
                ok = np.isfinite(val) & (val >= 0)
                ch, ts, val = ch[ok], ts[ok], val[ok]
            ch, ts, val, starts, _ = sort_batch(ch, ts, val)
            if len(ch) == 0:
                continue
            present = ch[starts]
            if seen[present].any():
                raise ReadingError("a channel's readings are split across chunks; pass one chunk")
            seen[present] = True
            n_counter = int(np.searchsorted(ch, self._counters))  # counters sort first
            if n_counter:
                cts = ts[:n_counter]
                firsts = starts[starts < n_counter]
                lasts = np.append(starts[1:], len(ch))[: len(firsts)] - 1
                self._ensure_hours(int(cts[firsts].min() // HOUR_MS),
                                   int((cts[lasts].max() - 1) // HOUR_MS))
                offsets = np.searchsorted(ch[:n_counter], np.arange(self._counters + 1)).astype(np.int64)
                flags = np.zeros(n_counter, dtype=np.uint8)
                counters_to_hours_many(cts, val[:n_counter], flags, offsets, a.rollover_array,
                                       a.max_rate_array, a.gap_ms_array, self._origin,
                                       self._energy, self._est)
                self._watermark_ms = max(self._watermark_ms, int(cts[lasts].max()))
            if retain:
                bounds = np.append(starts, len(ch))
                summary = IngestSummary()
                for g in range(len(starts)):
                    lo, hi = bounds[g], bounds[g + 1]
                    log = self._logs[int(ch[lo])]
                    log.merge(ts[lo:hi], val[lo:hi], summary)
                    if ch[lo] < self._counters:  # counter readings are the sorted prefix
                        log.flags[: log.n] = flags[lo:hi]
        self._retain = retain
        self._derived = None

    # ------------------------------------------------------------------ derived results
    def _derive(self) -> _Derived | None:
        """Allocation and market matching over all hours with data (cached until next ingest)."""
        if self._derived is not None or self._h_lo is None:
            return self._derived
        a = self._arrays
        h_lo, n = self._h_lo, self._h_hi - self._h_lo + 1
        sl = slice(h_lo - self._origin, h_lo - self._origin + n)
        energy_hc = np.ascontiguousarray(self._energy[:, sl].T)
        est_hc = np.ascontiguousarray(self._est[:, sl].T)
        n_p = len(a.products)
        out = [np.zeros((n, n_p)) for _ in range(6)]
        site = np.zeros((n, len(ka.SITE_COLUMNS)))
        ka.allocate_hours(energy_hc, est_hc, a.uncertainty_array, a.import_channel_array,
                          a.export_channel_array, a.pv_channel_array, a.sub_channel_array,
                          a.sub_cost_centre_array, a.sub_sign_array, a.cc_is_production_array,
                          a.cc_key_array, a.cc_shares_matrix, a.cc_key_uncertainty_array,
                          a.remainder_key, a.remainder_shares_array, a.remainder_key_uncertainty,
                          a.product_cc_array, a.product_units_channel_array,
                          a.product_weight_array, a.product_key_uncertainty_array, *out, site)
        energy, metered, allocated, estimated, unc, units = out
        hour_ms = (h_lo + np.arange(n, dtype=np.int64)) * HOUR_MS
        off = self.topology.utc_offset_minutes
        loc = self.dataset.location_factors(self.topology.grid_region, hour_ms, off)
        res = self.dataset.residual_factors(self.topology.grid_region, hour_ms, off)
        cons = np.ascontiguousarray(np.column_stack((energy, site[:, ka.SITE_UNALLOCATED])))
        m = build_market_arrays(hour_ms, self.topology, a, self._rows, self._ineligible,
                                self.matching_mode)
        cov = [np.zeros_like(cons) for _ in range(4)]
        row_used = np.zeros(len(m.row_kwh_array))
        match_market(cons, np.ascontiguousarray(site[:, ka.SITE_PV_SELF]), self._pv_factor,
                     np.ascontiguousarray(loc if res is None else res), m.window_lo_array,
                     m.window_hi_array, m.row_ptr_array, m.row_stage_array, m.row_group_array,
                     m.row_kwh_array, m.row_factor_array, m.group_member_matrix, *cov, row_used)
        self._derived = _Derived(h_lo, hour_ms, energy, metered, allocated, estimated, unc,
                                 units, site, loc, *cov, row_used, m.rows)
        return self._derived

    def site_balance(self, start_ms: int | None = None, end_ms: int | None = None) -> SiteBalance:
        """Per-hour site balance for hours starting in ``[start_ms, end_ms)`` (all by default)."""
        d = self._derive()
        if d is None:
            empty = np.zeros(0)
            return SiteBalance(np.zeros(0, np.int64), {c: empty for c in ka.SITE_COLUMNS},
                               np.zeros(0, np.int64), np.zeros(0, bool))
        sel = self._hour_mask(d, start_ms, end_ms)
        hours = d.hour_ms[sel] // HOUR_MS
        return SiteBalance(d.hour_ms[sel],
                           {c: d.site[sel, i].copy() for i, c in enumerate(ka.SITE_COLUMNS)},
                           self._revision[hours - self._origin].copy(),
                           hours <= self._last_closed_hour())

    def hourly_energy(self, meter_id: str, channel: str, start_ms: int | None = None,
                      end_ms: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(hour_start_ms, kWh or units) of one counter channel, as spread by the energy kernel."""
        c = self.channel_index(meter_id, channel)
        if c >= self._counters:
            raise ReadingError(f"{meter_id}/{channel} is not a counter channel")
        if self._h_lo is None:
            return np.zeros(0, np.int64), np.zeros(0)
        hours = np.arange(self._h_lo, self._h_hi + 1, dtype=np.int64)
        hour_ms = hours * HOUR_MS
        sel = np.ones(len(hours), bool)
        if start_ms is not None:
            sel &= hour_ms >= start_ms
        if end_ms is not None:
            sel &= hour_ms < end_ms
        return hour_ms[sel], self._energy[c, hours[sel] - self._origin].copy()

    @staticmethod
    def _hour_mask(d: _Derived, start_ms: int | None, end_ms: int | None) -> np.ndarray:
        sel = np.ones(len(d.hour_ms), bool)
        if start_ms is not None:
            sel &= d.hour_ms >= start_ms
        if end_ms is not None:
            sel &= d.hour_ms < end_ms
        return sel

    # ------------------------------------------------------------------ footprints
    def footprints(self, start_ms: int | None = None, end_ms: int | None = None, *,
                   batch_id: str | float | None = None) -> list[ProductFootprint]:
        """Footprints of every product for hours starting in ``[start_ms, end_ms)``.

        Windows are whole hours (use :func:`accounting.engine.window_bounds` for a shift, day,
        month or year). With ``batch_id``, the window is the production batch instead: the
        spans during which a line's ``batch_id`` channel showed that number, each hour weighted
        by the fraction of it the batch covered; only the products of those lines are returned.
        """
        d = self._derive()
        if d is None:
            return []
        if batch_id is None:
            weights = self._hour_mask(d, start_ms, end_ms).astype(np.float64)
            products = range(len(self._arrays.products))
            lo = start_ms if start_ms is not None else int(d.hour_ms[0])
            hi = end_ms if end_ms is not None else int(d.hour_ms[-1]) + HOUR_MS
            return [self._footprint(d, p, weights, lo, hi, None) for p in products]
        return self._batch_footprints(d, batch_id)

    def _batch_footprints(self, d: _Derived, batch_id: str | float) -> list[ProductFootprint]:
        target = float(batch_id)
        result = []
        for c in range(self._counters, len(self._keys)):
            meter = self.topology.meter(self._keys.keys[c][0])
            log = self._logs[c]
            ts, val = log.ts[: log.n], log.val[: log.n]
            hit = np.flatnonzero(val == target)
            if not len(hit) or meter.cost_centre is None:
                continue
            weights = np.zeros(len(d.hour_ms))
            for k in hit:  # each reading showing the batch covers until the next reading
                if k + 1 < len(ts):
                    _add_span(weights, d.hour_ms, int(ts[k]), int(ts[k + 1]))
            span_lo = int(ts[hit[0]])
            span_hi = int(ts[min(hit[-1] + 1, len(ts) - 1)])
            cc = self._arrays.cost_centres.index(meter.cost_centre)
            for p in np.flatnonzero(self._arrays.product_cc_array == cc):
                result.append(self._footprint(d, int(p), weights, span_lo, span_hi, str(batch_id)))
        return result

    def _footprint(self, d: _Derived, p: int, w: np.ndarray, lo: int, hi: int,
                   batch: str | None) -> ProductFootprint:
        prod = self.topology.products[p]
        energy = float(w @ d.energy[:, p])
        units = float(w @ d.units[:, p])
        kg_loc = float(w @ (d.energy[:, p] * d.loc_factor))
        kg_mkt = float(w @ d.emis_market[:, p])
        covered = [float(w @ m[:, p]) for m in (d.cov_pv, d.cov_contract, d.cov_gec)]
        hours = (d.hour_ms[w > 0] // HOUR_MS)
        revision = int(self._revision[hours - self._origin].max(initial=0))
        provisional = bool(len(hours) and hours.max() > self._last_closed_hour())

        def share(x: np.ndarray) -> float:
            return float(w @ x[:, p]) / energy if energy > 0 else 0.0

        metered, allocated, estimated = share(d.metered), share(d.allocated), share(d.estimated)
        per_unit_loc = kg_loc / units if units > 0 else None
        per_unit_mkt = kg_mkt / units if units > 0 else None
        uncertainty = None
        primary = None
        if energy > 0:
            u_energy = float(w @ d.unc[:, p]) / energy
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
        grid_kwh = d.energy[:, p] - d.cov_pv[:, p]
        kg_eu = float(w @ (grid_kwh * d.loc_factor + d.cov_pv[:, p] * self._pv_factor))
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
            matching_mode=self.matching_mode,
            residual_mix="available" if self.dataset.has_residual_mix(self.topology.grid_region)
            else "unavailable",
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

    def instrument_usage(self) -> list[dict[str, object]]:
        """kWh available and used of every instrument row (certificate lots, contract deliveries),
        plus instruments not eligible in this matching mode or boundary. Used <= available."""
        d = self._derive()
        used = d.row_used if d is not None else np.zeros(0)
        rows = d.rows if d is not None else tuple(self._rows)
        report: list[dict[str, object]] = []
        for i, row in enumerate(rows):
            report.append({"kind": row.kind, "refs": list(row.refs), "period_ms": row.period_ms,
                           "earmark": row.earmark, "available_kwh": row.kwh,
                           "used_kwh": float(used[i]) if i < len(used) else 0.0})
        for ref, reason in self._ineligible:
            report.append({"kind": "ineligible", "refs": [ref], "reason": reason,
                           "available_kwh": 0.0, "used_kwh": 0.0})
        return report

    # ------------------------------------------------------------------ recompute
    def recompute(self, readings: Readings | Iterable[Readings], dataset: FactorDataset | None = None,
                  *, start_ms: int | None = None, end_ms: int | None = None,
                  retain_readings: bool = True) -> FootprintResult:
        """Recompute from stored readings into a new, versioned result; live state is untouched.

        ``readings`` is ``(channel_index_array, ts_ms, value)`` or an iterable of such chunks in
        which each channel's readings are complete within one chunk (a per-meter export from
        the store). ``dataset`` defaults to the live one; passing a new version is how a new
        factor version is applied to history. ``retain_readings=False`` keeps only hourly
        matrices (for very large recomputations); the returned engine is then read-only.
        """
        ds = dataset or self.dataset
        fresh = Engine(self.topology, ds, matching_mode=self.matching_mode,
                       grace_period_s=self.grace_period_s, instruments=self.instruments,
                       deliverability=self.deliverability, gap_polls=self.gap_polls)
        if isinstance(readings, tuple) and len(readings) == 3 and isinstance(readings[0], np.ndarray):
            readings = [readings]
        fresh._bulk_load(readings, retain_readings)
        self._result_version += 1
        footprints = fresh.footprints(start_ms, end_ms)
        digest = hashlib.sha256()
        digest.update(fresh._fingerprint().encode())
        if fresh._h_lo is not None:
            sl = slice(fresh._h_lo - fresh._origin, fresh._h_hi - fresh._origin + 1)
            digest.update(np.ascontiguousarray(fresh._energy[:, sl]).tobytes())
        return FootprintResult(result_id=digest.hexdigest()[:16], result_version=self._result_version,
                               dataset_id=ds.dataset_id, dataset_version=ds.version,
                               matching_mode=self.matching_mode, footprints=footprints,
                               instrument_usage=fresh.instrument_usage(), engine=fresh)

    def with_instruments(self, instruments: InstrumentPortfolio | None) -> Engine:
        """This engine's live state (readings, clock, revisions, result counter) under another
        instrument portfolio: how an instrument added at run time reaches the market-based
        numbers. Instrument rows are fixed when an engine is built, hence a new engine."""
        if not self._retain:
            raise CheckpointError("an engine built without retained readings cannot be rebuilt")
        engine = Engine(self.topology, self.dataset, matching_mode=self.matching_mode,
                        grace_period_s=self.grace_period_s, instruments=instruments,
                        deliverability=self.deliverability, gap_polls=self.gap_polls)
        engine._bulk_load([self.readings()], retain=True)
        engine._watermark_ms = self._watermark_ms
        engine._result_version = self._result_version
        revised = np.flatnonzero(self._revision)
        if len(revised):
            hours = revised + self._origin
            engine._ensure_hours(int(hours.min()), int(hours.max()))
            engine._revision[hours - engine._origin] = self._revision[revised]
        return engine

    def readings(self) -> Readings:
        """All retained readings as ``(channel_index, ts_ms, value)`` arrays, channel-major."""
        ch = np.concatenate([np.full(log.n, c, np.int64) for c, log in enumerate(self._logs)] or [np.zeros(0, np.int64)])
        ts = np.concatenate([log.ts[: log.n] for log in self._logs] or [np.zeros(0, np.int64)])
        val = np.concatenate([log.val[: log.n] for log in self._logs] or [np.zeros(0)])
        return ch, ts, val

    # ------------------------------------------------------------------ checkpoints
    def _fingerprint(self) -> str:
        return json.dumps({"topology": hashlib.sha256(repr(self.topology).encode()).hexdigest(),
                           "dataset": [self.dataset.dataset_id, self.dataset.version, self.dataset.digest],
                           "matching_mode": self.matching_mode, "deliverability": self.deliverability,
                           "gap_polls": self.gap_polls, "instrument_rows": len(self._rows)},
                          sort_keys=True)

    def checkpoint(self) -> bytes:
        """Serialise the live state (readings, revision counters, clock) for :meth:`restore`."""
        if not self._retain:
            raise CheckpointError("an engine built without retained readings cannot be checkpointed")
        ch, ts, val = self.readings()
        revised = np.flatnonzero(self._revision)
        meta = {"format": _CHECKPOINT_FORMAT, "fingerprint": self._fingerprint(),
                "grace_period_s": self.grace_period_s, "watermark_ms": int(self._watermark_ms),
                "result_version": self._result_version}
        buf = io.BytesIO()
        np.savez_compressed(buf, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), ch=ch,
                            ts=ts, val=val, revised_hours=revised + self._origin,
                            revisions=self._revision[revised])
        return buf.getvalue()

    @classmethod
    def restore(cls, blob: bytes, topology: SiteTopology, dataset: FactorDataset, *,
                instruments: InstrumentPortfolio | None = None, matching_mode: str | None = None,
                deliverability: str = "mainland", gap_polls: float = 3.0) -> Engine:
        """Rebuild an engine from :meth:`checkpoint` output. The topology, dataset version and
        settings must be the ones the checkpoint was made with (else :class:`CheckpointError`)."""
        try:
            z = np.load(io.BytesIO(blob), allow_pickle=False)
            meta = json.loads(z["meta"].tobytes().decode())
        except (ValueError, KeyError, OSError) as exc:
            raise CheckpointError(f"not an engine checkpoint: {exc}") from None
        if meta.get("format") != _CHECKPOINT_FORMAT:
            raise CheckpointError(f"unsupported checkpoint format {meta.get('format')}")
        engine = cls(topology, dataset, matching_mode=matching_mode,
                     grace_period_s=meta["grace_period_s"], instruments=instruments,
                     deliverability=deliverability, gap_polls=gap_polls)
        if engine._fingerprint() != meta["fingerprint"]:
            raise CheckpointError("checkpoint was made for another topology, dataset or settings")
        engine._bulk_load([(z["ch"], z["ts"], z["val"])], retain=True)
        engine._watermark_ms = meta["watermark_ms"]
        engine._result_version = meta["result_version"]
        hours = z["revised_hours"]
        if len(hours):
            engine._ensure_hours(int(hours.min()), int(hours.max()))
            engine._revision[hours - engine._origin] = z["revisions"]
        return engine


def _add_span(weights: np.ndarray, hour_ms: np.ndarray, a: int, b: int) -> None:
    """Add the fraction of each hour covered by [a, b) to ``weights``."""
    first = np.searchsorted(hour_ms, a - HOUR_MS, side="right")
    for i in range(first, len(hour_ms)):
        h0 = int(hour_ms[i])
        if h0 >= b:
            break
        weights[i] += max(0, min(b, h0 + HOUR_MS) - max(a, h0)) / HOUR_MS
