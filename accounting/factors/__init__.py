"""Emission-factor datasets with provenance, and the province -> grid-region mapping."""

from accounting.factors.dataset import (
    FactorDataset,
    FactorRegistry,
    dataset_from_dict,
    default_registry,
    load_dataset,
    load_hourly_csv,
    period_start_ms,
    shipped_datasets,
)
from accounting.factors.regions import (
    GRID_REGIONS,
    MAINLAND_PROVINCES,
    NATIONAL,
    canonical_province,
    grid_region_for_province,
    is_mainland,
)

__all__ = [
    "GRID_REGIONS",
    "MAINLAND_PROVINCES",
    "NATIONAL",
    "FactorDataset",
    "FactorRegistry",
    "canonical_province",
    "dataset_from_dict",
    "default_registry",
    "grid_region_for_province",
    "is_mainland",
    "load_dataset",
    "load_hourly_csv",
    "period_start_ms",
    "shipped_datasets",
]
