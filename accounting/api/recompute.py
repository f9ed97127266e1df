"""Explicit recomputation: applying a factor version (or late corrections) to a past period.

Loading a new dataset version never rewrites history by itself (ACCOUNTING.md §3); this
endpoint is the explicit act, and its output is a new, versioned result beside the live one.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, Request
from pydantic import BaseModel, Field

from accounting.api import windows
from accounting.api.auth import Writer
from accounting.api.deps import service, site_or_404
from accounting.api.types import AccountingServiceLike, RecomputeLike

router = APIRouter(prefix="/api/v1", tags=["recompute"])


class RecomputeIn(BaseModel):
    site_id: str = Field(min_length=1, max_length=64)
    start: str = Field(max_length=40, description="epoch ms or ISO 8601 with offset")
    end: str = Field(max_length=40, description="epoch ms or ISO 8601 with offset (exclusive)")
    dataset_version: str | None = Field(None, max_length=32,
                                        description="factor dataset version; the live one when absent")


@router.post("/recompute", dependencies=[Writer], summary="Recompute a period into a new, versioned result")
def recompute(svc: Annotated[AccountingServiceLike, Depends(service)],
              request: Annotated[RecomputeIn, Body()], http: Request) -> dict[str, Any]:
    """The new result is stored beside the live one; published PACT footprints of the months it
    touches are revised with it (a new footprint each where the figures changed)."""
    site_or_404(svc, request.site_id)
    try:
        start_ms = windows.parse_instant(request.start, "start")
        end_ms = windows.parse_instant(request.end, "end")
    except windows.WindowError as exc:
        raise HTTPException(422, str(exc)) from None
    if end_ms <= start_ms:
        raise HTTPException(422, f"end ({end_ms}) must be after start ({start_ms})")
    if not isinstance(svc, RecomputeLike):
        raise HTTPException(501, "this accounting service does not offer recomputation yet")
    result = svc.recompute(request.site_id, start_ms=start_ms, end_ms=end_ms,
                           dataset_version=request.dataset_version)
    pact = getattr(http.app.state, "pact", None)
    if pact is not None:
        pact.recomputed(request.site_id, start_ms, end_ms, request.dataset_version)
    shipments = getattr(http.app.state, "shipments", None)
    if shipments is not None:  # issued shipments with lots in the period: re-issued if figures change
        shipments.recomputed(request.site_id, start_ms, end_ms, request.dataset_version)
    return result
