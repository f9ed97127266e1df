"""Emission-factor datasets: the shipped ones, the hourly CSV importer and the version registry.

A :class:`FactorDataset` is immutable and identified by ``(dataset_id, version)``. Results
record both, and :class:`FactorRegistry` refuses to register different content under an
existing version, so loading a new version never rewrites history: a new version is a new
key, and recomputing with it is an explicit act (``Engine.recompute``).
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np

from accounting.errors import (
    FactorDatasetError,
    FactorVersionConflictError,
    MissingFactorError,
    UnknownRegionError,
)
from accounting.factors.regions import NATIONAL

GasBasis = Literal["co2", "co2e_lifecycle"]
Granularity = Literal["annual", "monthly", "hourly"]
HOUR_MS = 3_600_000


@dataclass(frozen=True)
class FactorDataset:
    """One version of an emission-factor dataset, with its provenance.

    ``factors`` and ``residual_mix`` map a region (a grid region such as ``East``, or ``CN``
    for national averages) to ``{period: kg per kWh}``. Periods are ``"YYYY"`` (annual),
    ``"YYYY-MM"`` (monthly, civil calendar of the site) or the UTC epoch milliseconds of the
    hour start (hourly). ``technology_factors`` are life-cycle factors of generation
    technologies (kg per kWh), used for energy covered by instruments under the
    ``co2e_lifecycle`` basis. ``uncertainty_pct_95`` is the factor's 95 % uncertainty.
    """

    dataset_id: str
    version: str
    publisher: str
    publication_date: str
    source_reference: str
    unit: str
    gas_basis: GasBasis
    granularity: Granularity
    factors: Mapping[str, Mapping[str | int, float]]
    residual_mix: Mapping[str, Mapping[str | int, float]] = field(default_factory=dict)
    technology_factors: Mapping[str, float] = field(default_factory=dict)
    uncertainty_pct_95: float = 5.0
    notes: str = ""
    extra: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.gas_basis not in ("co2", "co2e_lifecycle"):
            raise FactorDatasetError(f"{self.dataset_id}: bad gas basis {self.gas_basis!r}")
        if self.granularity not in ("annual", "monthly", "hourly"):
            raise FactorDatasetError(f"{self.dataset_id}: bad granularity {self.granularity!r}")
        for table in (self.factors, self.residual_mix):
            for region, series in table.items():
                for value in series.values():
                    if not (value >= 0.0 and np.isfinite(value)):
                        raise FactorDatasetError(f"{self.dataset_id}: bad factor for {region}")

    @property
    def regions(self) -> tuple[str, ...]:
        """Regions with location factors."""
        return tuple(self.factors)

    @property
    def digest(self) -> str:
        """A content hash: two datasets with the same id and version must have the same digest."""
        payload = json.dumps(
            [self.dataset_id, self.version, self.gas_basis, self.granularity,
             _plain(self.factors), _plain(self.residual_mix), dict(self.technology_factors),
             self.uncertainty_pct_95],
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode()).hexdigest()

    def region_for(self, grid_region: str) -> str:
        """The dataset region used for a site: its grid region if present, else the national one."""
        if grid_region in self.factors:
            return grid_region
        if NATIONAL in self.factors:
            return NATIONAL
        raise UnknownRegionError(f"{self.dataset_id} {self.version} has no factor for {grid_region!r}")

    def has_residual_mix(self, grid_region: str) -> bool:
        """Whether a residual-mix factor exists for the region used for this site."""
        return self.region_for(grid_region) in self.residual_mix

    def location_factors(self, grid_region: str, hour_start_ms: np.ndarray,
                         utc_offset_minutes: int = 480) -> np.ndarray:
        """Location-based factor (kg/kWh) of each hour, for the site's grid region."""
        return self._lookup(self.factors[self.region_for(grid_region)], hour_start_ms,
                            utc_offset_minutes)

    def residual_factors(self, grid_region: str, hour_start_ms: np.ndarray,
                         utc_offset_minutes: int = 480) -> np.ndarray | None:
        """Residual-mix factor of each hour, or ``None`` when the dataset has none."""
        region = self.region_for(grid_region)
        if region not in self.residual_mix:
            return None
        return self._lookup(self.residual_mix[region], hour_start_ms, utc_offset_minutes)

    def technology_factor(self, technology: str) -> float:
        """Factor of energy covered by an instrument: 0 for ``co2``; the life-cycle factor otherwise."""
        if self.gas_basis == "co2":
            return 0.0
        try:
            return float(self.technology_factors[technology])
        except KeyError:
            raise MissingFactorError(
                f"{self.dataset_id} {self.version} has no life-cycle factor for {technology!r}"
            ) from None

    def _lookup(self, series: Mapping[str | int, float], hour_start_ms: np.ndarray,
                utc_offset_minutes: int) -> np.ndarray:
        hours = np.asarray(hour_start_ms, dtype=np.int64)
        if self.granularity == "hourly":
            keys = np.fromiter((int(k) for k in series), dtype=np.int64, count=len(series))
            vals = np.fromiter(series.values(), dtype=np.float64, count=len(series))
            order = np.argsort(keys)
            keys, vals = keys[order], vals[order]
            pos = np.clip(np.searchsorted(keys, hours), 0, max(len(keys) - 1, 0))
            if len(keys) == 0 or np.any(keys[pos] != hours):
                missing = hours[(len(keys) == 0) | (keys[pos] != hours)][0]
                raise MissingFactorError(
                    f"{self.dataset_id} {self.version}: no hourly factor for "
                    f"{datetime.fromtimestamp(missing / 1000, UTC).isoformat()}")
            return vals[pos]
        # Annual or monthly: the latest period starting at or before the hour (the most recent
        # published vintage); hours before the first period use the first one.
        starts = np.array([period_start_ms(str(k), utc_offset_minutes) for k in series],
                          dtype=np.int64)
        vals = np.fromiter(series.values(), dtype=np.float64, count=len(series))
        order = np.argsort(starts)
        starts, vals = starts[order], vals[order]
        pos = np.searchsorted(starts, hours, side="right") - 1
        return vals[np.clip(pos, 0, len(vals) - 1)]


def period_start_ms(period: str, utc_offset_minutes: int = 480) -> int:
    """UTC epoch ms of the civil start of ``"YYYY"`` or ``"YYYY-MM"`` at the given UTC offset."""
    parts = period.split("-")
    try:
        year, month = int(parts[0]), int(parts[1]) if len(parts) > 1 else 1
    except ValueError:
        raise FactorDatasetError(f"bad period {period!r}") from None
    tz = timezone(timedelta(minutes=utc_offset_minutes))
    return int(datetime(year, month, 1, tzinfo=tz).timestamp() * 1000)


def _plain(table: Mapping[str, Mapping[str | int, float]]) -> dict[str, dict[str, float]]:
    return {r: {str(k): float(v) for k, v in s.items()} for r, s in table.items()}


def dataset_from_dict(doc: Mapping[str, object]) -> FactorDataset:
    """Build a dataset from its JSON document (the format of the shipped data files)."""
    try:
        return FactorDataset(
            dataset_id=str(doc["dataset_id"]),
            version=str(doc["version"]),
            publisher=str(doc["publisher"]),
            publication_date=str(doc["publication_date"]),
            source_reference=str(doc["source_reference"]),
            unit=str(doc["unit"]),
            gas_basis=doc["gas_basis"],  # type: ignore[arg-type]
            granularity=doc["granularity"],  # type: ignore[arg-type]
            factors=doc["factors"],  # type: ignore[arg-type]
            residual_mix=doc.get("residual_mix", {}),  # type: ignore[arg-type]
            technology_factors=doc.get("technology_factors", {}),  # type: ignore[arg-type]
            uncertainty_pct_95=float(doc.get("uncertainty_pct_95", 5.0)),  # type: ignore[arg-type]
            notes=str(doc.get("notes", "")),
            extra={k: v for k, v in doc.items() if k in ("extra_factors", "technology_factors_source")},
        )
    except KeyError as exc:
        raise FactorDatasetError(f"factor dataset document lacks {exc}") from None


def shipped_datasets() -> list[FactorDataset]:
    """The datasets shipped with Tanji (ACCOUNTING.md section 3), in file order."""
    folder = resources.files("accounting.factors") / "data"
    return [dataset_from_dict(json.loads(f.read_text(encoding="utf-8")))
            for f in sorted(folder.iterdir(), key=lambda p: p.name) if f.name.endswith(".json")]


def load_dataset(dataset_id: str, version: str | None = None) -> FactorDataset:
    """A shipped dataset by id, at ``version`` or its latest version.

    >>> float(load_dataset("cn-mee-regional-co2", "2022").location_factors("Southwest", [0])[0])
    0.2268
    """
    return default_registry().get(dataset_id, version)


def load_hourly_csv(path: str | Path, *, dataset_id: str, version: str, publisher: str,
                    publication_date: str, source_reference: str, unit: str = "kgCO2/kWh",
                    gas_basis: GasBasis = "co2", uncertainty_pct_95: float = 5.0) -> FactorDataset:
    """Import an hourly factor series from CSV with columns ``timestamp, region, factor``.

    ``timestamp`` is the hour start, either ISO 8601 with an offset (``2024-01-01T08:00:00+08:00``,
    ``...Z``) or integer UTC epoch milliseconds; it must fall on a whole hour. ``factor`` is in
    kg per kWh. A repeated (timestamp, region) row is an error, not a silent overwrite.
    """
    table: dict[str, dict[int, float]] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or not {"timestamp", "region", "factor"} <= set(reader.fieldnames):
            raise FactorDatasetError(f"{path}: need columns timestamp, region, factor")
        for line, row in enumerate(reader, start=2):
            ts = _parse_timestamp_ms(row["timestamp"], path, line)
            if ts % HOUR_MS:
                raise FactorDatasetError(f"{path}:{line}: timestamp is not on a whole hour")
            series = table.setdefault(row["region"].strip(), {})
            if ts in series:
                raise FactorDatasetError(f"{path}:{line}: duplicate hour for {row['region']}")
            try:
                series[ts] = float(row["factor"])
            except ValueError:
                raise FactorDatasetError(f"{path}:{line}: bad factor {row['factor']!r}") from None
    return FactorDataset(dataset_id=dataset_id, version=version, publisher=publisher,
                         publication_date=publication_date, source_reference=source_reference,
                         unit=unit, gas_basis=gas_basis, granularity="hourly", factors=table,
                         uncertainty_pct_95=uncertainty_pct_95)


def _parse_timestamp_ms(text: str, path: str | Path, line: int) -> int:
    text = text.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise FactorDatasetError(f"{path}:{line}: bad timestamp {text!r}") from None
    if dt.tzinfo is None:
        raise FactorDatasetError(f"{path}:{line}: timestamp {text!r} has no UTC offset")
    return int(dt.timestamp() * 1000)


class FactorRegistry:
    """Every dataset version known to a process; versions are append-only.

    Registering the same ``(dataset_id, version)`` again is a no-op when the content is the
    same and a :class:`FactorDatasetError` when it differs: a correction must be published as
    a new version, so results made with the old one stay reproducible.
    """

    def __init__(self, datasets: Iterable[FactorDataset] = ()) -> None:
        self._datasets: dict[tuple[str, str], FactorDataset] = {}
        for ds in datasets:
            self.add(ds)

    def add(self, dataset: FactorDataset) -> FactorDataset:
        """Register a dataset version; returns the registered (possibly pre-existing) object."""
        key = (dataset.dataset_id, dataset.version)
        known = self._datasets.get(key)
        if known is not None:
            if known.digest != dataset.digest:
                raise FactorVersionConflictError(
                    f"{dataset.dataset_id} version {dataset.version} is already registered with "
                    "different content; publish the correction as a new version")
            return known
        self._datasets[key] = dataset
        return dataset

    def get(self, dataset_id: str, version: str | None = None) -> FactorDataset:
        """A dataset at ``version``, or its latest version (highest version string)."""
        if version is not None:
            try:
                return self._datasets[(dataset_id, version)]
            except KeyError:
                raise FactorDatasetError(f"unknown dataset {dataset_id} version {version}") from None
        versions = sorted(v for (i, v) in self._datasets if i == dataset_id)
        if not versions:
            raise FactorDatasetError(f"unknown dataset {dataset_id}")
        return self._datasets[(dataset_id, versions[-1])]

    def versions(self, dataset_id: str) -> list[str]:
        """The known versions of a dataset, sorted."""
        return sorted(v for (i, v) in self._datasets if i == dataset_id)

    def __iter__(self) -> Iterator[FactorDataset]:
        """Every registered dataset version."""
        return iter(self._datasets.values())


_DEFAULT: FactorRegistry | None = None


def default_registry() -> FactorRegistry:
    """The process-wide registry, pre-loaded with the shipped datasets."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = FactorRegistry(shipped_datasets())
    return _DEFAULT
