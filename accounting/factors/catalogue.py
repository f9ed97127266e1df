"""The factor datasets one accounting process offers: shipped ones plus versions loaded at run time.

Loading a version is append-only (ACCOUNTING.md §3): the same ``id@version`` with the same
content is a no-op, with different content a `FactorVersionConflictError` (HTTP 409), and
nothing a live engine uses is replaced — a loaded version is only *available*, for an explicit
recomputation or a site file that names it. Loaded documents are kept in the `LedgerStore`,
so a result recomputed with one stays reproducible after a restart.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from accounting.factors.dataset import (
    FactorDataset,
    FactorRegistry,
    dataset_from_dict,
    load_hourly_csv,
    shipped_datasets,
)
from accounting.store.ledger import LedgerStore


def dataset_document(ds: FactorDataset) -> dict[str, Any]:
    """The JSON document of a dataset (the format of `accounting/factors/data/*.json`)."""
    return {"dataset_id": ds.dataset_id, "version": ds.version, "publisher": ds.publisher,
            "publication_date": ds.publication_date, "source_reference": ds.source_reference,
            "unit": ds.unit, "gas_basis": ds.gas_basis, "granularity": ds.granularity,
            "factors": {r: {str(k): float(v) for k, v in s.items()} for r, s in ds.factors.items()},
            "residual_mix": {r: {str(k): float(v) for k, v in s.items()} for r, s in ds.residual_mix.items()},
            "technology_factors": {k: float(v) for k, v in ds.technology_factors.items()},
            "uncertainty_pct_95": ds.uncertainty_pct_95, "notes": ds.notes,
            "fossil_only": {r: {str(k): float(v) for k, v in s.items()} for r, s in ds.fossil_only.items()},
            "transmission_distribution": dict(ds.transmission_distribution),
            "document": dict(ds.document), "verification": [dict(v) for v in ds.verification],
            "not_published": list(ds.not_published), "superseded_by": ds.superseded_by,
            **{k: v for k, v in ds.extra.items() if k == "cpcd_product_ids"}}


class FactorCatalogue:
    """A registry of the shipped datasets and of the versions loaded into `store`."""

    def __init__(self, store: LedgerStore) -> None:
        self.store = store
        self.registry = FactorRegistry(shipped_datasets())
        self._added: dict[tuple[str, str], int] = {}
        for doc, added_ms in store.datasets():
            ds = self.registry.add(dataset_from_dict(doc))
            self._added[(ds.dataset_id, ds.version)] = added_ms

    def get(self, dataset_id: str, version: str | None = None) -> FactorDataset:
        return self.registry.get(dataset_id, version)

    def resolve(self, spec: str) -> FactorDataset:
        """``id`` (latest published factor for each hour), ``id@version`` or ``id@v1+v2``."""
        return self.registry.resolve(spec)

    def show(self, spec: str) -> dict[str, Any]:
        """Everything about one dataset version or series: values, provenance, verification."""
        ds = self.resolve(spec)
        return {**dataset_document(ds), "ref": ds.ref, "selection": ds.selection, "digest": ds.digest,
                "origin": "loaded" if (ds.dataset_id, ds.version) in self._added else "shipped",
                "versions": self.registry.versions(ds.dataset_id)}

    def add(self, document: Mapping[str, Any]) -> FactorDataset:
        """Load a dataset version from its JSON document (validated by `dataset_from_dict`)."""
        return self.add_dataset(dataset_from_dict(document))

    def import_hourly_csv(self, path: str | Path, **provenance: Any) -> FactorDataset:
        """Load an hourly series (`load_hourly_csv`: columns timestamp, region, factor)."""
        return self.add_dataset(load_hourly_csv(path, **provenance))

    def add_dataset(self, ds: FactorDataset) -> FactorDataset:
        known = self.registry.add(ds)  # conflicting content under a loaded version raises here
        if self.store.add_dataset(dataset_document(ds), ds.digest):
            self._added[(ds.dataset_id, ds.version)] = int(time.time() * 1000)
        return known

    def listing(self, in_use: Mapping[tuple[str, str], list[str]]) -> list[dict[str, Any]]:
        """Every version: id, version, publisher, source, gas basis, granularity, digest, where used."""
        return [self.row(ds, in_use.get((ds.dataset_id, ds.version), [])) for ds in self.registry]

    def row(self, ds: FactorDataset, in_use_by: list[str]) -> dict[str, Any]:
        added = self._added.get((ds.dataset_id, ds.version))
        return {"dataset_id": ds.dataset_id, "version": ds.version, "publisher": ds.publisher,
                "publication_date": ds.publication_date, "source_reference": ds.source_reference,
                "unit": ds.unit, "gas_basis": ds.gas_basis, "granularity": ds.granularity,
                "regions": list(ds.regions), "uncertainty_pct_95": ds.uncertainty_pct_95,
                "has_residual_mix": bool(ds.residual_mix), "has_fossil_only": bool(ds.fossil_only),
                "document_number": ds.document.get("number"), "superseded_by": ds.superseded_by,
                "digest": ds.digest,
                "origin": "shipped" if added is None else "loaded", "added_ms": added,
                "in_use_by": in_use_by}
