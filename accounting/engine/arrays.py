"""Building the kernels' arrays from the topology, a factor dataset and the instruments.

This is the only place that turns ids into indices. :class:`KeyIndex` is the one reversible
key <-> index mapping of each kind; everything else is C-contiguous arrays with fixed dtypes
(``*_array`` vectors, ``*_matrix`` 2-D) that the kernels consume unchanged.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import NamedTuple
from zoneinfo import ZoneInfo

import numpy as np

from accounting.engine.kernels_allocation import (
    KEY_ENERGY,
    KEY_FIXED,
    KEY_UNITS,
    AllocationTopology,
)
from accounting.engine.kernels_energy import HOUR_MS, ChannelParams
from accounting.engine.kernels_market import STAGE_CONTRACT, STAGE_GEC
from accounting.errors import TopologyError, UnknownChannelError
from accounting.factors.dataset import FactorDataset, period_start_ms
from accounting.instruments import GEC_KWH, InstrumentPortfolio, deliverable
from accounting.topology import EXPORT_KWH, IMPORT_KWH, SiteTopology
from tanji.civil_calendar import month_starts

_KEYS = {"energy": KEY_ENERGY, "units": KEY_UNITS, "fixed": KEY_FIXED}
#: Life-cycle technology of on-site PV, for the ``co2e_lifecycle`` gas basis.
ONSITE_PV_TECHNOLOGY = "solar_pv_rooftop"


class KeyIndex:
    """A reversible mapping between hashable keys and dense indices ``0..n-1``."""

    def __init__(self, keys: Sequence[Hashable], what: str = "key") -> None:
        self.keys: tuple = tuple(keys)
        self._what = what
        self._index = {k: i for i, k in enumerate(self.keys)}
        if len(self._index) != len(self.keys):
            raise TopologyError(f"duplicate {what}")

    def index(self, key: Hashable) -> int:
        """Index of ``key``; raises :class:`UnknownChannelError` for an unknown key."""
        try:
            return self._index[key]
        except KeyError:
            raise UnknownChannelError(f"unknown {self._what} {key!r}") from None

    def key(self, index: int) -> Hashable:
        """The key at ``index``."""
        if not 0 <= index < len(self.keys):
            raise UnknownChannelError(f"no {self._what} with index {index}")
        return self.keys[index]

    def __len__(self) -> int:
        return len(self.keys)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._index


@dataclass(frozen=True)
class TopologyArrays:
    """The topology as arrays: channels, cost centres and products by index, and the kernels'
    argument bundles built from them (``channel_params`` for the energy kernels,
    ``allocation`` for ``allocate_hours``): each bundle's field order is written once, in its
    NamedTuple, and the kernels read fields by name."""

    channels: KeyIndex
    cost_centres: KeyIndex
    products: KeyIndex
    poll_period_array: np.ndarray
    channel_params: ChannelParams
    allocation: AllocationTopology

    @property
    def pv_channel_array(self) -> np.ndarray:
        return self.allocation.pv_ch

    @property
    def product_cc_array(self) -> np.ndarray:
        return self.allocation.prod_cc


def build_topology_arrays(topology: SiteTopology, gap_polls: float = 3.0) -> TopologyArrays:
    """Index the topology. ``gap_polls`` x poll period is each channel's gap threshold."""
    channels = KeyIndex(topology.counter_keys(), "channel")
    ccs = KeyIndex([c.cost_centre_id for c in topology.cost_centres], "cost centre")
    products = KeyIndex([p.product_id for p in topology.products], "product")
    n_ch, n_cc = len(channels), len(ccs)
    rollover = np.zeros(n_ch)
    max_rate = np.zeros(n_ch)
    gap_ms = np.zeros(n_ch, dtype=np.int64)
    poll = np.zeros(n_ch)
    unc = np.zeros(n_ch)
    imp, exp_, pv, sub, sub_cc, sub_sign = [], [], [], [], [], []
    by_id = {m.meter_id: m for m in topology.meters}  # topology.meter() is a linear search
    for (meter_id, channel), i in zip(channels.keys, range(n_ch), strict=True):
        m = by_id[meter_id]
        rollover[i] = m.rollover_kwh
        max_rate[i] = m.max_power_kw
        gap_ms[i] = int(round(gap_polls * m.poll_period_s * 1000))
        poll[i] = m.poll_period_s
        unc[i] = m.accuracy_class_pct / 100.0
        if m.role == "grid_import":
            (imp if channel == IMPORT_KWH else exp_).append(i)
        elif m.role == "pv":
            # A PV meter's generation is what it delivers: its export register when it has
            # one (bidirectional meter at the inverter), else its single energy register.
            if channel == EXPORT_KWH or EXPORT_KWH not in m.channels:
                pv.append(i)
        elif m.role == "submeter":
            sub.append(i)
            sub_cc.append(ccs.index(m.cost_centre))
            sub_sign.append(-1.0 if channel == EXPORT_KWH else 1.0)
    is_prod = np.array([c.kind == "production" for c in topology.cost_centres], dtype=np.bool_)
    shares = np.zeros((n_cc, n_cc))
    for u, c in enumerate(topology.cost_centres):
        for target, weight in c.allocation_shares.items():
            shares[u, ccs.index(target)] = weight
    rem_shares = np.zeros(n_cc)
    for target, weight in topology.remainder_shares.items():
        rem_shares[ccs.index(target)] = weight
    prods = topology.products
    allocation = AllocationTopology(
        ch_unc=unc,
        imp_ch=np.array(imp, dtype=np.int64),
        exp_ch=np.array(exp_, dtype=np.int64),
        pv_ch=np.array(pv, dtype=np.int64),
        sub_ch=np.array(sub, dtype=np.int64),
        sub_cc=np.array(sub_cc, dtype=np.int64),
        sub_sign=np.array(sub_sign, dtype=np.float64),
        cc_is_prod=is_prod,
        cc_key=np.array([_KEYS[c.allocation_key] for c in topology.cost_centres], dtype=np.int64),
        cc_shares=shares,
        cc_key_unc=np.array([c.key_uncertainty_pct / 100 for c in topology.cost_centres]),
        rem_key=_KEYS[topology.remainder_key],
        rem_shares=rem_shares,
        rem_key_unc=float(topology.remainder_key_uncertainty_pct / 100),
        prod_cc=np.array([ccs.index(p.line) for p in prods], dtype=np.int64),
        prod_units_ch=np.array([channels.index((p.units_meter, p.units_channel)) for p in prods],
                               dtype=np.int64),
        prod_w=np.array([p.key_per_unit for p in prods], dtype=np.float64),
        prod_key_unc=np.array([p.key_uncertainty_pct / 100 for p in prods]),
    )
    return TopologyArrays(channels=channels, cost_centres=ccs, products=products,
                          poll_period_array=poll,
                          channel_params=ChannelParams(rollover, max_rate, gap_ms,
                                                       *_replacement_arrays(channels, by_id)),
                          allocation=allocation)


def _replacement_arrays(channels: KeyIndex, meters: dict) -> tuple[np.ndarray, ...]:
    """``ChannelParams``' ``rep_ptr, rep_at, rep_old, rep_new``: each channel's recorded meter
    replacements (those of its meter that name it), in time order."""
    ptr = [0]
    at: list[int] = []
    old: list[float] = []
    new: list[float] = []
    for meter_id, channel in channels.keys:
        for r in meters[meter_id].replacements:
            if channel in r.old_final:
                at.append(r.at_ms)
                old.append(r.old_final[channel])
                new.append(r.new_initial[channel])
        ptr.append(len(at))
    return (np.array(ptr, np.int64), np.array(at, np.int64), np.array(old, np.float64),
            np.array(new, np.float64))


def civil_period_index(hour_ms: np.ndarray, mode: str, tz: ZoneInfo) -> np.ndarray:
    """Matching-window number of each hour: civil year (``annual``), year*12+month-1
    (``monthly``) in the site's zone `tz` (daylight saving included), or the absolute hour
    (``hourly``). The month starts come from `tanji.civil_calendar`; the hours are searched in them."""
    hour_ms = np.asarray(hour_ms, dtype=np.int64)
    if mode == "hourly":
        return hour_ms // HOUR_MS
    if hour_ms.size == 0:
        return np.zeros(0, dtype=np.int64)
    year0, starts = month_starts(int(hour_ms.min()), int(hour_ms.max()), tz)
    months = year0 * 12 + np.searchsorted(np.asarray(starts, dtype=np.int64), hour_ms, side="right") - 1
    return months // 12 if mode == "annual" else months


@dataclass(frozen=True)
class InstrumentRow:
    """One aggregated instrument row: a contract delivery or a lot of certificates."""

    kind: str  # "contract" or "gec"
    refs: tuple[str, ...]  # contract id, or the certificate serials of the lot
    period_ms: int  # start of the delivery hour/month or generation month (UTC ms)
    window: int  # matching-window number (civil_period_index)
    kwh: float
    earmark: str | None
    factor: float


@dataclass(frozen=True)
class MarketArrays:
    """Matching windows over the engine's hours, and instrument rows sorted per window."""

    window_lo_array: np.ndarray
    window_hi_array: np.ndarray
    row_ptr_array: np.ndarray
    row_stage_array: np.ndarray
    row_group_array: np.ndarray
    row_kwh_array: np.ndarray
    row_factor_array: np.ndarray
    group_member_matrix: np.ndarray
    rows: tuple[InstrumentRow, ...]
    ineligible: tuple[tuple[str, str], ...]  # (instrument ref, reason)

    def kernel_windows(self) -> MarketWindows:
        """The windows and rows as ``match_market`` takes them, in its parameter order."""
        return MarketWindows(self.window_lo_array, self.window_hi_array, self.row_ptr_array,
                             self.row_stage_array, self.row_group_array, self.row_kwh_array,
                             self.row_factor_array, self.group_member_matrix)


class MarketWindows(NamedTuple):
    """``match_market``'s window and row parameters, in its order (the one place it is
    written; a test checks it against the kernel's signature)."""

    win_lo: np.ndarray
    win_hi: np.ndarray
    row_ptr: np.ndarray
    row_stage: np.ndarray
    row_group: np.ndarray
    row_kwh: np.ndarray
    row_factor: np.ndarray
    group_member: np.ndarray


def instrument_rows(portfolio: InstrumentPortfolio | None, topology: SiteTopology,
                    dataset: FactorDataset, mode: str, deliverability: str
                    ) -> tuple[list[InstrumentRow], list[tuple[str, str]]]:
    """Eligible instrument rows (certificates aggregated into lots) and the ineligible refs."""
    if portfolio is None:
        return [], []
    tz = topology.zone
    rows: list[InstrumentRow] = []
    ineligible: list[tuple[str, str]] = []
    for contract in portfolio.contracts:
        if not deliverable(contract.province, topology.grid_region, deliverability):  # type: ignore[arg-type]
            ineligible.append((contract.contract_id, "not deliverable"))
            continue
        legacy = mode == "hourly" and contract.granularity != "hourly" and portfolio.is_legacy(contract)
        if mode == "hourly" and contract.granularity != "hourly" and not legacy:
            ineligible.append((contract.contract_id, "no hourly settlement data"))
            continue
        for period, kwh in contract.deliveries:
            start = int(period) if contract.granularity == "hourly" else period_start_ms(str(period), tz)
            factor = dataset.technology_factor(contract.technology, start)
            if legacy:  # legacy clause: the month's delivery at a flat profile over its hours
                end = period_start_ms(_next_month(str(period)), tz)
                hours = range(start, end, HOUR_MS)
                for h in hours:
                    rows.append(InstrumentRow("contract", (contract.contract_id,), h,
                                              int(civil_period_index(np.array([h]), mode, tz)[0]),
                                              float(kwh) / len(hours), contract.earmark, factor))
                continue
            window = int(civil_period_index(np.array([start]), mode, tz)[0])
            rows.append(InstrumentRow("contract", (contract.contract_id,), start, window,
                                      float(kwh), contract.earmark, factor))
    lots: dict[tuple, list[str]] = {}
    for held in portfolio.certificates:
        cert = held.certificate
        if not held.counted:  # the site's own PV self-consumption, already counted as such
            ineligible.append((cert.serial, held.reason))
            continue
        if not deliverable(cert.province, topology.grid_region, deliverability):  # type: ignore[arg-type]
            ineligible.append((cert.serial, "not deliverable"))
            continue
        if mode == "hourly":
            ineligible.append((cert.serial, "certificates carry no hour"))
            continue
        lots.setdefault((cert.generation_month, cert.technology, held.earmark), []).append(cert.serial)
    for (month, tech, earmark), serials in sorted(lots.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] or "")):
        start = period_start_ms(month, tz)
        window = int(civil_period_index(np.array([start]), mode, tz)[0])
        rows.append(InstrumentRow("gec", tuple(serials), start, window, GEC_KWH * len(serials),
                                  earmark, dataset.technology_factor(tech, start)))
    return rows, ineligible


def _next_month(month: str) -> str:
    year, mon = (int(x) for x in month.split("-"))
    return f"{year + mon // 12:04d}-{mon % 12 + 1:02d}"


def build_market_arrays(hour_ms: np.ndarray, topology: SiteTopology, tarrays: TopologyArrays,
                        rows: list[InstrumentRow], ineligible: list[tuple[str, str]],
                        mode: str) -> MarketArrays:
    """Windows as contiguous hour ranges over ``hour_ms``; rows sorted for ``match_market``.

    Consumers are the products then one column for unallocated energy. An earmark names a
    product (that product) or a cost centre (its products).
    """
    periods = civil_period_index(hour_ms, mode, topology.zone)
    if len(periods):
        cut = np.flatnonzero(np.diff(periods)) + 1
        lo = np.concatenate(([0], cut)).astype(np.int64)
        hi = np.concatenate((cut, [len(periods)])).astype(np.int64)
        win_of = {int(periods[i]): w for w, i in enumerate(lo)}
    else:
        lo = hi = np.zeros(0, dtype=np.int64)
        win_of = {}
    n_p = len(tarrays.products)
    groups: dict[str, int] = {}
    members: list[np.ndarray] = []
    per_window: dict[int, list[tuple[int, int, int, InstrumentRow]]] = {}
    unused: list[InstrumentRow] = []
    for seq, row in enumerate(rows):
        w = win_of.get(row.window)
        if w is None:  # no consumption data in its window
            unused.append(row)
            continue
        group = -1
        if row.earmark is not None:
            if row.earmark not in groups:
                member = np.zeros(n_p + 1, dtype=np.uint8)
                if row.earmark in tarrays.products:
                    member[tarrays.products.index(row.earmark)] = 1
                elif row.earmark in tarrays.cost_centres:
                    cc = tarrays.cost_centres.index(row.earmark)
                    member[:n_p][tarrays.product_cc_array == cc] = 1
                else:
                    raise TopologyError(f"earmark {row.earmark!r} is neither a product nor a cost centre")
                groups[row.earmark] = len(members)
                members.append(member)
            group = groups[row.earmark]
        stage = STAGE_CONTRACT if row.kind == "contract" else STAGE_GEC
        per_window.setdefault(w, []).append((stage, 0 if group >= 0 else 1, seq, row))
    ordered: list[InstrumentRow] = []
    stage_l, group_l = [], []
    ptr = [0]
    for w in range(len(lo)):
        for stage, _pooled, _seq, row in sorted(per_window.get(w, []), key=lambda t: t[:3]):
            ordered.append(row)
            stage_l.append(stage)
            group_l.append(groups[row.earmark] if row.earmark is not None else -1)
        ptr.append(len(ordered))
    ordered.extend(unused)
    group_matrix = np.array(members, dtype=np.uint8) if members else np.zeros((1, n_p + 1), np.uint8)
    return MarketArrays(
        window_lo_array=lo, window_hi_array=hi, row_ptr_array=np.array(ptr, dtype=np.int64),
        row_stage_array=np.array(stage_l, dtype=np.int64),
        row_group_array=np.array(group_l, dtype=np.int64),
        row_kwh_array=np.array([r.kwh for r in ordered[: ptr[-1]]], dtype=np.float64),
        row_factor_array=np.array([r.factor for r in ordered[: ptr[-1]]], dtype=np.float64),
        group_member_matrix=np.ascontiguousarray(group_matrix),
        rows=tuple(ordered), ineligible=tuple(ineligible),
    )

