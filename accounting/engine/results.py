"""What the engine returns: product footprints, the site balance, recomputation results and
ingest counts. Plain frozen records, so the API, reports and PACT read one definition."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from accounting.engine.engine import Engine


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
    #: The evidence the figures rest on (docs/audit.md; filled by `accounting.audit.evidence`
    #: where the site keeps signed batches): RFC 6962 Merkle root over the signed chain
    #: segments holding the window's readings, how many batches they hold, whether every batch
    #: of them is stored and signed; SHA-256 of the factor dataset's content; Merkle root over
    #: the certificates and contracts whose period overlaps the window.
    evidence_root: str | None = None
    evidence_batches: int = 0
    evidence_complete: bool = False
    dataset_digest: str | None = None
    instruments_root: str | None = None

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


@dataclass
class IngestSummary:
    """Counts of one ingest call. ``late`` readings were older than their channel's newest one
    (accepted, they may refine the hourly spread); ``reopened_hours`` are closed hours whose
    values changed. ``beyond_tail`` readings were older than their channel's raw tail and
    re-spread from the store (whether each was new or a copy only the store can tell, so they
    are counted there and nowhere else); ``pending`` of them wait for the store to answer."""

    accepted: int = 0
    duplicate: int = 0
    conflicting: int = 0
    late: int = 0
    rejected: int = 0
    reopened_hours: int = 0
    beyond_tail: int = 0
    pending: int = 0

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)
