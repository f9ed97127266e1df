"""Factor datasets kept current, and certificate lists: `/api/v1/factors*`, `/api/v1/certificates/import`.

The same operations as `tanji factors`: list every version, show one in full with its
provenance, import a published table (JSON or CSV with its provenance; validated; append-only),
and diff two versions on a site's products over a period. Reading is open; importing needs the
API token. A service without these tools answers 501 with a message saying so.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, Field

from accounting.api.auth import Writer
from accounting.api.deps import service, site_or_404
from accounting.api.types import AccountingServiceLike, FactorDatasetsLike, FactorToolsLike
from accounting.api.windows import parse_instant
from accounting.errors import FactorDatasetError
from accounting.factors.tables import parse_table_csv, validate_document

router = APIRouter(prefix="/api/v1", tags=["factors"])
Service = Annotated[AccountingServiceLike, Depends(service)]


def _tools(svc: AccountingServiceLike) -> FactorToolsLike:
    if not isinstance(svc, FactorToolsLike):
        raise HTTPException(501, "this accounting service keeps no factor tools")
    return svc


class DiffIn(BaseModel):
    """Two dataset references (``ID``, ``ID@VERSION``) and a site's period."""

    site_id: str = Field(min_length=1, max_length=64)
    old: str = Field(min_length=1, max_length=120, examples=["cn-electricity-carbon-footprint@2023.1"])
    new: str = Field(min_length=1, max_length=120, examples=["cn-electricity-carbon-footprint@2024"])
    start: str = Field(description="ISO 8601 with offset, or epoch ms", examples=["2025-03-01T00:00:00+08:00"])
    end: str = Field(examples=["2025-04-01T00:00:00+08:00"])


@router.get("/factors", summary="Every factor dataset version, with provenance and where it is used")
def factors(svc: Service) -> list[dict[str, Any]]:
    if not isinstance(svc, FactorDatasetsLike):
        raise HTTPException(501, "this accounting service keeps no factor dataset catalogue")
    return svc.factor_datasets()


@router.get("/factors/rules", summary="A site's factor, selection rule and market-based settings")
def rules(svc: Service, site: Annotated[str, Query(max_length=64)]) -> dict[str, Any]:
    site_or_404(svc, site)
    return _tools(svc).market_rules(site)


@router.post("/factors/diff", summary="Recompute a site's period with two factor versions and show the deltas")
def diff(svc: Service, body: DiffIn) -> dict[str, Any]:
    site_or_404(svc, body.site_id)
    start, end = parse_instant(body.start, "start"), parse_instant(body.end, "end")
    if end <= start:
        raise HTTPException(422, "end must be after start")
    return _tools(svc).factor_diff(body.site_id, body.old, body.new, start_ms=start, end_ms=end)


@router.get("/factors/{ref}", summary="One dataset (ID: latest per hour; ID@VERSION: pinned) in full")
def show(svc: Service, ref: str) -> dict[str, Any]:
    return _tools(svc).factor_dataset(ref)


@router.post("/factors", status_code=201, dependencies=[Writer],
             summary="Import a published table (JSON document, or text/csv with its provenance); append-only")
async def import_table(svc: Service, request: Request) -> dict[str, Any]:
    raw = await request.body()  # its size is limited before it is read (`accounting.api.limits`)
    text = raw.decode("utf-8", errors="replace")
    if "csv" in request.headers.get("content-type", ""):
        doc = parse_table_csv(text, "request body")
    else:
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise FactorDatasetError(f"request body line {exc.lineno}: not JSON: {exc.msg}") from None
    validate_document(doc, "request body")
    if not isinstance(svc, FactorDatasetsLike):
        raise HTTPException(501, "this accounting service keeps no factor datasets")
    return svc.add_factor_dataset(doc)


@router.post("/certificates/import", status_code=201, dependencies=[Writer],
             summary="Claim a certificate list (CSV: serial,generation_month,technology,province,tradable,project_id,earmark)")
async def import_certificates(svc: Service, request: Request,
                              site: Annotated[str, Query(max_length=64)]) -> list[dict[str, Any]]:
    site_or_404(svc, site)
    raw = await request.body()  # its size is limited before it is read (`accounting.api.limits`)
    return _tools(svc).import_certificates(site, raw.decode("utf-8", errors="replace"))
