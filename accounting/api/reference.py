"""Factor datasets and green certificates: the reference data behind every market and location number.

Reading them is open (an auditor must see which dataset version and which certificate serials
a footprint rests on); adding them needs the API token. Factor dataset versions are
append-only: a correction is a new version, so old results stay reproducible. Certificate
serials are claimed once, across sites; a second claim is 409 Conflict.

Everything goes through the service's `FactorDatasetsLike` and `CertificatesLike` interfaces
(`accounting.api.types`); a service without one answers 501, saying so, rather than this
router reaching past it into engines or the process-wide factor registry.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, HTTPException, Query
from pydantic import BaseModel, ConfigDict, Field, field_validator

from accounting.api.auth import Writer
from accounting.api.deps import service, site_or_404
from accounting.api.types import AccountingServiceLike, CertificatesLike, FactorDatasetsLike

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
    technology: str = Field(min_length=1, max_length=32, examples=["wind_onshore", "solar_pv_utility", "hydro"],
                            description="a technology of the site's factor dataset (GET /api/v1/technologies)")
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


def _datasets(svc: AccountingServiceLike) -> FactorDatasetsLike:
    if not isinstance(svc, FactorDatasetsLike):
        raise HTTPException(501, "this accounting service keeps no factor dataset catalogue")
    return svc


def _certificates(svc: AccountingServiceLike) -> CertificatesLike:
    if not isinstance(svc, CertificatesLike):
        raise HTTPException(501, "this accounting service keeps no certificate ledger")
    return svc


@router.get("/factor-datasets", summary="Emission factor datasets and versions")
def factor_datasets(svc: Service) -> list[dict[str, Any]]:
    """Every dataset version (shipped and loaded), with the sites whose live engine uses it."""
    return _datasets(svc).factor_datasets()


@router.post("/factor-datasets", status_code=201, dependencies=[Writer],
             summary="Load a new factor dataset version (append-only)")
def add_factor_dataset(svc: Service, document: Annotated[FactorDatasetIn, Body()]) -> dict[str, Any]:
    return _datasets(svc).add_factor_dataset(document.model_dump())


@router.get("/certificates", summary="Green certificates claimed per site")
def certificates(svc: Service, site: Annotated[str | None, Query(max_length=64)] = None) -> list[dict[str, Any]]:
    if site is not None:
        site_or_404(svc, site)
    return _certificates(svc).certificates(site)


@router.post("/certificates", status_code=201, dependencies=[Writer],
             summary="Register and claim a green certificate for a site (a serial is claimed once)")
def add_certificate(svc: Service, certificate: Annotated[CertificateIn, Body()]) -> dict[str, Any]:
    site_or_404(svc, certificate.site_id)
    return _certificates(svc).add_certificate(certificate.model_dump())
