"""`GET /api/v1/sites/{site}/history`: any window or batch, per line and per product
(`accounting.api.views.history`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query

from accounting.api.deps import service, site_or_404
from accounting.api.queries import EndParam, StartParam, WindowParam
from accounting.api.types import AccountingServiceLike
from accounting.api.views.history import Bucket, batch_window, history, resolve

router = APIRouter(prefix="/api/v1", tags=["dashboard"])
Service = Annotated[AccountingServiceLike, Depends(service)]


@router.get("/sites/{site_id}/history", summary="History of any window, per line and per product, hour or day")
def get_history(svc: Service, site_id: str, window: WindowParam = None, start: StartParam = None,
                end: EndParam = None,
                batch: Annotated[str | None, Query(max_length=64, description="a production batch instead of a window")] = None,
                bucket: Annotated[Bucket | None, Query(description="hour or day; default: hours up to two days")] = None,
                ) -> dict[str, Any]:
    """Buckets of the window with each line's and each product's units, kWh, kgCO2e (location and
    market) and per-unit figures, the metered kWh per cost centre, closed or provisional; and the
    window's totals (the footprint records of the whole window)."""
    site = site_or_404(svc, site_id)
    if batch is not None:
        if window is not None or start is not None or end is not None:
            raise HTTPException(422, "give either batch= or a window (window=, start=, end=), not both")
        lo, hi, records = batch_window(svc, site, batch)
        return history(svc, site, lo, hi, bucket or "hour", records)
    lo, hi = resolve(window, start, end, site)
    return history(svc, site, lo, hi, bucket)
