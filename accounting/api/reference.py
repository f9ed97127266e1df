"""Factor datasets and green certificates: the reference data behind every market and location number.

Reading them is open (an auditor must see which dataset version and which certificate serials
a footprint rests on); adding them needs the API token. Factor dataset versions are
append-only: a correction is a new version, so old results stay reproducible. Certificate
serials are claimed once, across sites; a second claim is 409 Conflict.

When the service does not manage factor datasets itself, the process-wide registry of
`accounting.factors` (the one the engines load from) is listed and extended.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, HTTPException, Query
from pydantic import BaseModel, ConfigDict, Field, field_validator

from accounting.api.auth import Writer
from accounting.api.deps import selected_sites, service, site_or_404
from accounting.api.types import AccountingServiceLike, CertificatesLike, FactorDatasetsLike
from accounting.factors.dataset import FactorDataset, dataset_from_dict, default_registry

router = APIRouter(prefix="/api/v1", tags=["reference data"])
Service = Annotated[AccountingServiceLike, Depends(service)]
_MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


class FactorDatasetIn(BaseModel):
    """A factor dataset document, in the format of the shipped `accounting/factors/data/*.json`."""

    model_config = ConfigDict(extra="allow")
    dataset_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    version: str = Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    publisher: str = Field(min_length=1, max_length=300)
    publication_date: str = Field(min_length=4, max_length=32)
    source_reference: str = Field(min_length=1, max_length=2000)
    unit: Literal["kgCO2/kWh", "kgCO2e/kWh"]
    gas_basis: Literal["co2", "co2e_lifecycle"]
    granularity: Literal["annual", "monthly", "hourly"]
    factors: dict[str, dict[str, Annotated[float, Field(ge=0, le=5)]]] = Field(
        description="region → period → factor (kg per kWh)", min_length=1)
    residual_mix: dict[str, dict[str, Annotated[float, Field(ge=0, le=5)]]] = {}
    technology_factors: dict[str, Annotated[float, Field(ge=0, le=5)]] = {}
    uncertainty_pct_95: float = Field(5.0, ge=0, le=100)
    notes: str = Field("", max_length=5000)


class CertificateIn(BaseModel):
    """A green electricity certificate (GEC, 绿证): 1 MWh, claimed for one site."""

    serial: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:/-]*$")
    site_id: str = Field(min_length=1, max_length=64)
    generation_month: str = Field(description="YYYY-MM", examples=["2025-01"])
    technology: str = Field(min_length=1, max_length=32, examples=["wind", "solar_pv", "hydro"])
    province: str = Field(min_length=1, max_length=32, examples=["Sichuan"])
    earmark: str | None = Field(None, max_length=64, description="cost centre or product it covers first")
    tradable: bool = Field(True, description="false for certificates of self-consumed energy or old hydro")
    project_id: str | None = Field(None, max_length=64, description="generating project's code (建档立卡)")

    @field_validator("generation_month")
    @classmethod
    def _month(cls, value: str) -> str:
        if not _MONTH.match(value):
            raise ValueError("generation_month must be YYYY-MM, e.g. 2025-01")
        return value


def dataset_dict(ds: FactorDataset, in_use_by: list[str]) -> dict[str, Any]:
    return {"dataset_id": ds.dataset_id, "version": ds.version, "publisher": ds.publisher,
            "publication_date": ds.publication_date, "source_reference": ds.source_reference,
            "unit": ds.unit, "gas_basis": ds.gas_basis, "granularity": ds.granularity,
            "regions": list(ds.regions), "uncertainty_pct_95": ds.uncertainty_pct_95,
            "has_residual_mix": bool(ds.residual_mix), "digest": ds.digest, "in_use_by": in_use_by}


def _in_use(svc: AccountingServiceLike) -> dict[tuple[str, str], list[str]]:
    """(dataset id, version) → sites whose live engine uses it."""
    used: dict[tuple[str, str], list[str]] = {}
    engine = getattr(svc, "engine", None)
    if engine is None:
        return used
    for site in selected_sites(svc, None):
        ds = engine(site.id).dataset
        used.setdefault((ds.dataset_id, ds.version), []).append(site.id)
    return used


@router.get("/factor-datasets", summary="Emission factor datasets and versions")
def factor_datasets(svc: Service) -> list[dict[str, Any]]:
    if isinstance(svc, FactorDatasetsLike):
        return svc.factor_datasets()
    used = _in_use(svc)
    return [dataset_dict(ds, used.get((ds.dataset_id, ds.version), [])) for ds in default_registry()]


@router.post("/factor-datasets", status_code=201, dependencies=[Writer],
             summary="Load a new factor dataset version (append-only)")
def add_factor_dataset(svc: Service, document: Annotated[FactorDatasetIn, Body()]) -> dict[str, Any]:
    doc = document.model_dump()
    if isinstance(svc, FactorDatasetsLike):
        return svc.add_factor_dataset(doc)
    registry = default_registry()
    if (doc["dataset_id"], doc["version"]) in {(d.dataset_id, d.version) for d in registry}:
        raise HTTPException(409, f"{doc['dataset_id']} version {doc['version']} is already loaded; "
                                 "publish a correction as a new version")
    return dataset_dict(registry.add(dataset_from_dict(doc)), [])


def _held_certificates(svc: AccountingServiceLike, site_id: str | None) -> list[dict[str, Any]]:
    engine = getattr(svc, "engine", None)
    out: list[dict[str, Any]] = []
    for site in selected_sites(svc, site_id):
        portfolio = engine(site.id).instruments if engine is not None else None
        for held in portfolio.certificates if portfolio is not None else ():
            c = held.certificate
            out.append({"serial": c.serial, "site_id": site.id, "generation_month": c.generation_month,
                        "technology": c.technology, "province": c.province, "mwh": 1.0,
                        "earmark": held.earmark})
    return out


@router.get("/certificates", summary="Green certificates claimed per site")
def certificates(svc: Service, site: Annotated[str | None, Query(max_length=64)] = None) -> list[dict[str, Any]]:
    if site is not None:
        site_or_404(svc, site)
    if isinstance(svc, CertificatesLike):
        return svc.certificates(site)
    return _held_certificates(svc, site)


@router.post("/certificates", status_code=201, dependencies=[Writer],
             summary="Register and claim a green certificate for a site (a serial is claimed once)")
def add_certificate(svc: Service, certificate: Annotated[CertificateIn, Body()]) -> dict[str, Any]:
    site_or_404(svc, certificate.site_id)
    if not isinstance(svc, CertificatesLike):
        raise HTTPException(501, "this accounting service keeps no certificate ledger")
    return svc.add_certificate(certificate.model_dump())
