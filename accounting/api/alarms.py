"""Alarms an operator acts on, their acknowledgement, and the plant's change log.

Alarms and changes come from the accounting service's watch (`accounting.live.watch`) and are
kept durably beside its ledger: the history (raised, cleared, who acknowledged, when, why) is
the same after a restart. Reading them is open like every read; acknowledging is a write and
needs the API token, and records the name the operator gives.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query
from pydantic import BaseModel, Field

from accounting.api import windows
from accounting.api.auth import Writer
from accounting.api.deps import service, site_or_404
from accounting.api.types import AccountingServiceLike, OperatorLogLike

router = APIRouter(prefix="/api/v1", tags=["alarms"])
Service = Annotated[AccountingServiceLike, Depends(service)]
SinceParam = Annotated[str | None, Query(max_length=40, description="epoch ms or ISO 8601 with offset")]
LimitParam = Annotated[int, Query(ge=1, le=1000)]


class Acknowledgement(BaseModel):
    by: str = Field(min_length=1, max_length=80, description="who acknowledges (name or badge)")
    note: str = Field("", max_length=1000, description="what was done or found")


def _log(svc: AccountingServiceLike) -> OperatorLogLike:
    if not isinstance(svc, OperatorLogLike):
        raise HTTPException(501, "this accounting service keeps no alarm log")
    return svc


def _instant(value: str | None, name: str) -> int | None:
    if value is None:
        return None
    try:
        return windows.parse_instant(value, name)
    except windows.WindowError as exc:
        raise HTTPException(422, str(exc)) from None


@router.get("/alarms", summary="Alarms: active, ended, or all, newest first")
def list_alarms(svc: Service, site: Annotated[str | None, Query(max_length=64)] = None,
                state: Annotated[Literal["active", "ended", "all"], Query()] = "active",
                since: SinceParam = None, limit: LimitParam = 200) -> list[dict[str, Any]]:
    """Each alarm: kind, subject, severity, message, detail, raised/last seen/cleared times, and
    its acknowledgement (by, when, note). `since` cuts ended alarms raised before it."""
    if site is not None:
        site_or_404(svc, site)
    active = {"active": True, "ended": False, "all": None}[state]
    return _log(svc).alarms(site, active=active, since_ms=_instant(since, "since"), limit=limit)


@router.post("/alarms/{alarm_id}/acknowledge", dependencies=[Writer],
             summary="Acknowledge an alarm (an event alarm ends with it)")
def acknowledge(svc: Service, alarm_id: Annotated[int, Path(ge=1, le=2**63 - 1)],
                ack: Annotated[Acknowledgement, Body()]) -> dict[str, Any]:
    return _log(svc).acknowledge_alarm(alarm_id, ack.by, ack.note)  # unknown id: 404 (api/errors.py)


@router.get("/changes", summary="What changed in the plant, newest first")
def list_changes(svc: Service, site: Annotated[str | None, Query(max_length=64)] = None,
                 since: SinceParam = None, until: SinceParam = None, limit: LimitParam = 100) -> list[dict[str, Any]]:
    """Lines started and stopped, the grid factor changing with the hour, meters offline and
    back, energy estimated over gaps, counter steps: information with its time and detail."""
    if site is not None:
        site_or_404(svc, site)
    return _log(svc).plant_changes(site, since_ms=_instant(since, "since"), until_ms=_instant(until, "until"),
                                   limit=limit)
