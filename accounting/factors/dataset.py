"""Emission-factor datasets: the shipped ones, the hourly CSV importer and the version registry.

A :class:`FactorDataset` is immutable and identified by ``(dataset_id, version)``. Results
record both, and :class:`FactorRegistry` refuses to register different content under an
existing version, so loading a new version never rewrites history: a new version is a new
key, and recomputing with it is an explicit act (``Engine.recompute``).
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

import numpy as np

from accounting.errors import (
    FactorDatasetError,
    FactorVersionConflictError,
    MissingFactorError,
    UnknownRegionError,
)
from accounting.factors.regions import NATIONAL
from tanji import civil_calendar
from tanji.methods import dataset_ref, parse_dataset_ref
from tanji.site import UNCOVERED_RULES

GasBasis = Literal["co2", "co2e_lifecycle"]
Granularity = Literal["annual", "monthly", "hourly"]
#: What uncovered (unmatched) energy gets in market-based results, a site setting:
#: ``residual_mix`` (the dataset's residual mix where published, else the grid average),
#: ``fossil_only`` (the published fossil-only factor) or ``grid_average`` (the location factor).
UncoveredRule = Literal["residual_mix", "fossil_only", "grid_average"]
HOUR_MS = 3_600_000
#: Technologies an announcement publishes one factor for, and the finer names Tanji accepts
#: for them (Tanji's mapping: the announcements give one wind and one PV factor).
TECHNOLOGY_ALIASES = {"wind_onshore": "wind", "wind_offshore": "wind",
                      "solar_pv_utility": "solar_pv", "solar_pv_rooftop": "solar_pv"}


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
    #: the published fossil-only factor (China: 全国化石能源电力二氧化碳排放因子), region → period → kg/kWh
    fossil_only: Mapping[str, Mapping[str | int, float]] = field(default_factory=dict)
    #: transmission and distribution footprint factors (``excluding_losses``, ``including_losses``);
    #: informative: the national average already includes the grid
    transmission_distribution: Mapping[str, float] = field(default_factory=dict)
    #: provenance: the announcement (title, number, publishers, date, url), how each value was
    #: verified, and what was published but is not shipped (with the reason)
    document: Mapping[str, object] = field(default_factory=dict)
    verification: tuple[Mapping[str, object], ...] = ()
    not_published: tuple[str, ...] = ()
    superseded_by: str | None = None
    #: a view for one site (not content: the digest ignores them): its province, which comes
    #: before its grid region when the dataset has a provincial factor, and its uncovered rule
    site_province: str | None = None
    uncovered_rule: UncoveredRule = "residual_mix"
    #: ``pinned`` (one version, named by the site) or ``latest_per_hour`` (`FactorRegistry.series`)
    selection: str = "pinned"
    #: for a series over several versions: period start (UTC ms) → technology factors in force
    technology_series: tuple[tuple[int, Mapping[str, float]], ...] = ()

    def __post_init__(self) -> None:
        if self.gas_basis not in ("co2", "co2e_lifecycle"):
            raise FactorDatasetError(f"{self.dataset_id}: bad gas basis {self.gas_basis!r}")
        if self.granularity not in ("annual", "monthly", "hourly"):
            raise FactorDatasetError(f"{self.dataset_id}: bad granularity {self.granularity!r}")
        if self.uncovered_rule not in UNCOVERED_RULES:
            raise FactorDatasetError(f"{self.dataset_id}: bad uncovered rule {self.uncovered_rule!r}; "
                                     f"use one of {', '.join(UNCOVERED_RULES)}")
        if not self.factors:
            raise FactorDatasetError(f"{self.dataset_id} {self.version}: no factors")
        for table in (self.factors, self.residual_mix, self.fossil_only):
            for region, series in table.items():
                for value in series.values():
                    if not (isinstance(value, (int, float)) and value >= 0.0 and np.isfinite(value)):
                        raise FactorDatasetError(f"{self.dataset_id} {self.version}: bad factor "
                                                 f"{value!r} for {region}")
        for name, value in [*self.technology_factors.items(), *self.transmission_distribution.items()]:
            if not (isinstance(value, (int, float)) and value >= 0.0 and np.isfinite(value)):
                raise FactorDatasetError(f"{self.dataset_id} {self.version}: bad factor {value!r} for {name}")

    @property
    def regions(self) -> tuple[str, ...]:
        """Regions with location factors."""
        return tuple(self.factors)

    @property
    def digest(self) -> str:
        """A content hash: two datasets with the same id and version must have the same digest.

        Tables added after the first release enter the hash only when present, so the digests
        of the datasets shipped before them (recorded in checkpoints and results) are unchanged.
        """
        content: list[object] = [self.dataset_id, self.version, self.gas_basis, self.granularity,
                                 _plain(self.factors), _plain(self.residual_mix),
                                 dict(self.technology_factors), self.uncertainty_pct_95]
        if self.fossil_only:
            content.append({"fossil_only": _plain(self.fossil_only)})
        if self.transmission_distribution:
            content.append({"transmission_distribution": dict(self.transmission_distribution)})
        if self.technology_series:
            content.append({"technology_series": [[t, dict(f)] for t, f in self.technology_series]})
        payload = json.dumps(content, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()

    @property
    def ref(self) -> str:
        """``id@version``: how a site file, the CLI and the API name this dataset version."""
        return dataset_ref(self.dataset_id, self.version)

    def region_for(self, grid_region: str) -> str:
        """The dataset region used for a site: its province when the dataset has a provincial
        factor (and this is a view for a site in that province), else its grid region if
        present, else the national one."""
        if self.site_province is not None and self.site_province in self.factors:
            return self.site_province
        if grid_region in self.factors:
            return grid_region
        if NATIONAL in self.factors:
            return NATIONAL
        raise UnknownRegionError(f"{self.dataset_id} {self.version} has no factor for {grid_region!r}")

    def _table_region(self, table: Mapping[str, object], grid_region: str) -> str | None:
        """The region of ``table`` used for a site: the one of its location factor, else national."""
        region = self.region_for(grid_region)
        if region in table:
            return region
        if region in (self.site_province, grid_region) and NATIONAL in table and NATIONAL in self.factors:
            return NATIONAL  # a national-only table (China: 表4, 表5) covers every region
        return None

    def uncovered_basis(self, grid_region: str) -> str:
        """What uncovered energy gets for this site: ``residual_mix``, ``fossil_only`` or ``grid_average``."""
        if self.uncovered_rule == "fossil_only" and self._table_region(self.fossil_only, grid_region):
            return "fossil_only"
        if self.uncovered_rule == "residual_mix" and self._table_region(self.residual_mix, grid_region):
            return "residual_mix"
        return "grid_average"

    def has_residual_mix(self, grid_region: str) -> bool:
        """Whether uncovered energy gets a factor other than the grid average for this site."""
        return self.uncovered_basis(grid_region) != "grid_average"

    def for_site(self, *, province: str | None = None,
                 uncovered_rule: UncoveredRule = "residual_mix") -> FactorDataset:
        """This dataset as one site sees it: its province's factor where published, and its
        rule for uncovered energy. A site that asks for the fossil-only fallback on a dataset
        without one is a configuration error, not a silent grid average."""
        if uncovered_rule == "fossil_only" and not self.fossil_only:
            raise FactorDatasetError(
                f"{self.ref} publishes no fossil-only factor, so uncovered energy cannot get one; "
                "use a dataset with one (cn-mee-co2, cn-mee-national-co2@2023) or "
                "market.uncovered: residual_mix / grid_average")
        return replace(self, site_province=province, uncovered_rule=uncovered_rule)

    def location_factors(self, grid_region: str, hour_start_ms: np.ndarray,
                         tz: ZoneInfo | None = None) -> np.ndarray:
        """Location-based factor (kg/kWh) of each hour, for the site's grid region; a monthly or
        annual factor holds from the start of its month or year in the site's zone `tz`
        (default Beijing time, the publisher's calendar)."""
        return self._lookup(self.factors[self.region_for(grid_region)], hour_start_ms, tz)

    def residual_factors(self, grid_region: str, hour_start_ms: np.ndarray,
                         tz: ZoneInfo | None = None) -> np.ndarray | None:
        """Factor of each hour for uncovered energy under the site's rule (`uncovered_basis`),
        or ``None`` when it is the grid average (the location factor)."""
        basis = self.uncovered_basis(grid_region)
        if basis == "grid_average":
            return None
        table = self.fossil_only if basis == "fossil_only" else self.residual_mix
        region = self._table_region(table, grid_region)
        return self._lookup(table[region], hour_start_ms, tz)  # type: ignore[index]

    def technology_factor(self, technology: str, at_ms: int | None = None) -> float:
        """Factor of energy covered by an instrument: 0 for ``co2``; the life-cycle factor otherwise
        (for a series over versions, the one in force at ``at_ms``)."""
        if self.gas_basis == "co2":
            return 0.0
        table = self.technology_factors
        if self.technology_series and at_ms is not None:
            for start, factors in self.technology_series:
                if start <= at_ms:
                    table = factors
        for name in (technology, TECHNOLOGY_ALIASES.get(technology)):
            if name is not None and name in table:
                return float(table[name])
        known = sorted(table)
        close = ([k for k in known if technology.lower() in k]
                 or difflib.get_close_matches(technology, known, n=1, cutoff=0.6))
        raise MissingFactorError(
            f"{self.dataset_id} {self.version} has no life-cycle factor for {technology!r}"
            + (f"; did you mean {' or '.join(map(repr, close))}?" if close else "")
            + f"; it publishes {', '.join(known) or 'none'} (GET /api/v1/technologies)")

    def _lookup(self, series: Mapping[str | int, float], hour_start_ms: np.ndarray,
                tz: ZoneInfo | None) -> np.ndarray:
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
        starts = np.array([period_start_ms(str(k), tz) for k in series],
                          dtype=np.int64)
        vals = np.fromiter(series.values(), dtype=np.float64, count=len(series))
        order = np.argsort(starts)
        starts, vals = starts[order], vals[order]
        pos = np.searchsorted(starts, hours, side="right") - 1
        return vals[np.clip(pos, 0, len(vals) - 1)]


def period_start_ms(period: str, tz: ZoneInfo | None = None) -> int:
    """UTC epoch ms of the civil start of ``"YYYY"`` or ``"YYYY-MM"`` in zone `tz` (default
    Beijing time): `tanji.civil_calendar.period_start_ms`, a bad period as a dataset error."""
    try:
        return civil_calendar.period_start_ms(period, tz or civil_calendar.civil_zone())
    except ValueError:
        raise FactorDatasetError(f"bad period {period!r}") from None


def _plain(table: Mapping[str, Mapping[str | int, float]]) -> dict[str, dict[str, float]]:
    return {r: {str(k): float(v) for k, v in s.items()} for r, s in table.items()}


def dataset_from_dict(doc: Mapping[str, object]) -> FactorDataset:
    """Build a dataset from its JSON document (the format of the shipped data files)."""
    if not isinstance(doc, Mapping):
        raise FactorDatasetError("a factor dataset document is a JSON object")
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
            extra={k: v for k, v in doc.items()
                   if k in ("extra_factors", "technology_factors_source", "cpcd_product_ids")},
            fossil_only=doc.get("fossil_only") or {},  # type: ignore[arg-type]
            transmission_distribution=doc.get("transmission_distribution") or {},  # type: ignore[arg-type]
            document=doc.get("document") or {},  # type: ignore[arg-type]
            verification=tuple(doc.get("verification") or ()),  # type: ignore[arg-type]
            not_published=tuple(doc.get("not_published") or ()),  # type: ignore[arg-type]
            superseded_by=doc.get("superseded_by"),  # type: ignore[arg-type]
        )
    except KeyError as exc:
        raise FactorDatasetError(f"factor dataset document lacks {exc}") from None
    except (TypeError, ValueError, AttributeError) as exc:
        raise FactorDatasetError(f"malformed factor dataset document: {exc}") from None


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

    def series(self, dataset_id: str, versions: Iterable[str] | None = None) -> FactorDataset:
        """The latest published factor for each hour: every version's periods in one dataset.

        Versions are merged oldest first, so a period published again by a newer version (a
        correction) takes the newer value; a version another one supersedes is left out. Each
        hour then takes the latest period starting at or before it (`FactorDataset._lookup`):
        the factor of its own year once published, else the newest earlier one. The version of
        the result names exactly the versions it is made of (``2023.1+2024``), so a result
        still says which published numbers produced it.
        """
        chosen = sorted(versions) if versions is not None else self.versions(dataset_id)
        parts = [self.get(dataset_id, v) for v in chosen]
        if not parts:
            raise FactorDatasetError(f"unknown dataset {dataset_id}")
        live = [d for d in parts if d.superseded_by not in chosen] if len(parts) > 1 else parts
        if len(live) == 1:
            return replace(live[0], selection="latest_per_hour")
        first = live[0]
        for d in live[1:]:
            if (d.gas_basis, d.granularity, d.unit) != (first.gas_basis, first.granularity, first.unit):
                raise FactorDatasetError(f"{dataset_id}: versions {first.version} and {d.version} differ "
                                         "in gas basis, granularity or unit and cannot form one series")
        tables: dict[str, dict[str, dict[str | int, float]]] = {"factors": {}, "residual_mix": {}, "fossil_only": {}}
        tech_series: list[tuple[int, Mapping[str, float]]] = []
        for d in live:
            for name in tables:
                for region, periods in getattr(d, name).items():
                    tables[name].setdefault(region, {}).update(periods)
            if d.technology_factors and d.granularity != "hourly":
                start = min(period_start_ms(str(p)) for periods in d.factors.values() for p in periods)
                tech_series.append((start, dict(d.technology_factors)))
        last = live[-1]
        return replace(
            last, version="+".join(d.version for d in live),
            source_reference=" | ".join(f"{d.version}: {d.source_reference}" for d in live),
            factors=tables["factors"], residual_mix=tables["residual_mix"], fossil_only=tables["fossil_only"],
            uncertainty_pct_95=max(d.uncertainty_pct_95 for d in live),
            technology_series=tuple(sorted(tech_series, key=lambda t: t[0])),
            verification=tuple(v for d in live for v in d.verification),
            not_published=tuple(dict.fromkeys(n for d in live for n in d.not_published)),
            superseded_by=None, selection="latest_per_hour")

    def resolve(self, spec: str) -> FactorDataset:
        """A dataset as a site file or the CLI names it: ``id`` → the latest published factor for
        each hour (`series`); ``id@version`` → that version only (pinned); ``id@v1+v2`` → the
        series of exactly those versions."""
        dataset_id, versions = parse_dataset_ref(spec)
        if not dataset_id or (not versions and "@" in spec):
            raise FactorDatasetError(f"bad dataset reference {spec!r}; use ID or ID@VERSION")
        if not versions:
            return self.series(dataset_id)
        if len(versions) > 1:
            return self.series(dataset_id, list(versions))
        return self.get(dataset_id, versions[0])

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
