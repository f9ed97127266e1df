"""Green-power contracts (绿电交易) and the technology names instruments may carry.

A contract is settled electricity from a named generator type, delivered per hour or per month,
often with the GECs that certify it bundled; it covers the site's consumption in the matching
periods (docs/accounting.md §4). Reading contracts is open like every reference datum;
holding one needs the API token, and its bundled serials are claimed like any certificate
(a serial claimed twice is 409). A contract id is held once.

The technology of a certificate or contract must be one the site's factor dataset has a
life-cycle factor for (`GET /api/v1/technologies`): a name it does not know is refused with the
names it does, rather than counted with a guessed factor.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, HTTPException, Query
from pydantic import BaseModel, Field, field_validator

from accounting.api.auth import Writer
from accounting.api.deps import selected_sites, service, site_or_404
from accounting.api.types import AccountingServiceLike, ContractsLike, TechnologiesLike

router = APIRouter(prefix="/api/v1", tags=["reference data"])
Service = Annotated[AccountingServiceLike, Depends(service)]
SiteQuery = Annotated[str | None, Query(description="site id; all sites when absent", max_length=64)]
_MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")
#: A year of hourly deliveries, with room to spare.
MAX_DELIVERIES = 20_000
SERIAL = r"^[A-Za-z0-9][A-Za-z0-9_.:/-]*$"


class ContractIn(BaseModel):
    """A green-power contract: who delivered how much renewable electricity when, to which site."""

    contract_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:/-]*$")
    site_id: str = Field(min_length=1, max_length=64)
    technology: str = Field(min_length=1, max_length=32, examples=["wind_onshore"],
                            description="a technology of the site's factor dataset (GET /api/v1/technologies)")
    province: str = Field(min_length=1, max_length=32, examples=["Sichuan"],
                          description="where the generator is (a province or grid region)")
    granularity: Literal["hourly", "monthly"] = Field(
        description="how deliveries are settled: per hour (period = UTC epoch ms of the hour start) "
                    "or per month (period = YYYY-MM in the site's calendar)")
    deliveries: list[tuple[int | str, Annotated[float, Field(ge=0, le=1e9)]]] = Field(
        min_length=1, max_length=MAX_DELIVERIES, examples=[[["2025-01", 120000.0], ["2025-02", 95000.0]]],
        description="[period, kWh] pairs")
    bundled_gec_serials: list[Annotated[str, Field(min_length=1, max_length=64, pattern=SERIAL)]] = Field(
        [], max_length=MAX_DELIVERIES, description="serials of the GECs bundled with the electricity (1 MWh each)")
    generation_month: str | None = Field(None, description="YYYY-MM of the bundled GECs; default: the first "
                                                           "delivery's month")
    earmark: str | None = Field(None, max_length=64, description="cost centre or product it covers first")

    @field_validator("generation_month")
    @classmethod
    def _month(cls, value: str | None) -> str | None:
        if value is not None and not _MONTH.match(value):
            raise ValueError("generation_month must be YYYY-MM, e.g. 2025-01")
        return value

    @field_validator("deliveries")
    @classmethod
    def _periods(cls, value: list[tuple[int | str, float]], info: Any) -> list[tuple[int | str, float]]:
        hourly = info.data.get("granularity") == "hourly"
        for period, _ in value:
            if hourly and (not isinstance(period, int) or period % 3_600_000):
                raise ValueError(f"hourly deliveries are [hour start in UTC epoch ms, kWh]; got period {period!r}")
            if not hourly and not (isinstance(period, str) and _MONTH.match(period)):
                raise ValueError(f"monthly deliveries are [\"YYYY-MM\", kWh]; got period {period!r}")
        return value


@router.get("/contracts", summary="Green-power contracts held per site")
def contracts(svc: Service, site: SiteQuery = None) -> list[dict[str, Any]]:
    if site is not None:
        site_or_404(svc, site)
    if not isinstance(svc, ContractsLike):
        return []
    return svc.contracts(site)


@router.post("/contracts", status_code=201, dependencies=[Writer],
             summary="Hold a green-power contract for a site and claim its bundled GECs")
def add_contract(svc: Service, contract: Annotated[ContractIn, Body()]) -> dict[str, Any]:
    site_or_404(svc, contract.site_id)
    if not isinstance(svc, ContractsLike):
        raise HTTPException(501, "this accounting service keeps no contract ledger")
    doc = contract.model_dump()
    doc["deliveries"] = [list(d) for d in contract.deliveries]
    return svc.add_contract(doc)


@router.get("/technologies", summary="Generator technologies certificates and contracts may name, per site")
def technologies(svc: Service, site: SiteQuery = None) -> list[dict[str, Any]]:
    """Per site: its live factor dataset and the technologies it has a life-cycle factor for."""
    chosen = selected_sites(svc, site)
    if not isinstance(svc, TechnologiesLike):
        raise HTTPException(501, "this accounting service does not say which technologies it knows")
    return [svc.technologies(s.id) for s in chosen]
