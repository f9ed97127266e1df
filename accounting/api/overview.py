"""`GET /api/v1/sites/{site}/overview`: the live overview (`accounting.api.views.overview`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from accounting.api.deps import service, site_or_404
from accounting.api.types import AccountingServiceLike
from accounting.api.views.overview import Basis, overview

router = APIRouter(prefix="/api/v1", tags=["dashboard"])
Service = Annotated[AccountingServiceLike, Depends(service)]


@router.get("/sites/{site_id}/overview", summary="Live overview: lines ranked by their carbon rate now")
def get_overview(svc: Service, site_id: str,
                 basis: Annotated[Basis, Query(description="rank by location- or market-based rate")] = "location"
                 ) -> dict[str, Any]:
    """Lines (cost centres) ranked by kgCO2e/h now, with power, running state, this hour's kWh and
    kgCO2e per unit against the same hour on recent production days; the grid factor in effect;
    what changed; active alarms; information that needs no action."""
    return overview(svc, site_or_404(svc, site_id), basis)
