"""Versioned read API under /api/v1: what the plant is, what its meters say, what it emits.

Routes only translate HTTP to service calls: query parameters are validated here (unknown
sites and products are 404, malformed windows 422 with the fix in the message), numbers come
untouched from the service so every consumer sees the same ones.
"""

from __future__ import annotations

import time
from importlib import metadata
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path
from fastapi.responses import JSONResponse

from accounting.api import windows
from accounting.api.deps import selected_sites, service, site_or_404
from accounting.api.models import FOOTPRINT_LIST, Health, ProductInfo, SiteInfo
from accounting.api.queries import (
    EndParam,
    ProductParam,
    SiteParam,
    StartParam,
    WindowParam,
    check_product,
    ingest_state,
    select_footprints,
    stats_dict,
    window_of,
)
from accounting.api.sites import product_dict, site_dict
from accounting.api.types import AccountingServiceLike, ReadinessLike, ReadingFlagsLike

router = APIRouter(prefix="/api/v1", tags=["v1"])
Service = Annotated[AccountingServiceLike, Depends(service)]
#: The longest period one flags request may cover.
FLAGS_MAX_MS = 31 * 86_400_000
#: A batch lookup without start/end searches this far back.
BATCH_LOOKBACK_MS = 31 * 86_400_000
_STARTED = time.monotonic()
try:
    VERSION = metadata.version("tanji")
except metadata.PackageNotFoundError:  # running from a source tree that was never installed
    VERSION = "0+unknown"


@router.get("/health", response_model=Health, summary="Liveness and ingest freshness",
            responses={503: {"description": "an ingest stage has died: the process is exiting (restart it)"}})
def health(svc: Service) -> Any:
    """Liveness: 200 while the process serves and ingests (`status` ok, or degraded while the
    store refuses writes); 503 with `status` failed once an ingest stage has died, which a
    liveness probe must see (the process exits non-zero right after); `ingest` says whether
    readings are flowing.

    Not readiness: it answers while the engines are restored and before the broker has
    acknowledged the subscriptions; wait for `/api/v1/ready` before publishing."""
    stats = stats_dict(svc)
    now = windows.now_ms()
    check = svc.health() if callable(getattr(svc, "health", None)) else {"status": "ok", "problems": []}
    body = {"status": check["status"], "problems": check["problems"], "version": VERSION,
            "now_ms": now, "uptime_s": round(time.monotonic() - _STARTED, 3),
            "sites": sorted(svc.sites), "ingest": ingest_state(stats, now), "stats": stats}
    if check["status"] == "failed":
        return JSONResponse(body, status_code=503)
    return body


@router.get("/ready", summary="Readiness: 200 once restored, subscribed and caught up, else 503",
            responses={503: {"description": "not ready yet; `reasons` says what it waits for"}})
def ready(svc: Service) -> JSONResponse:
    """What an orchestrator waits for before sending readings or traffic (docs/deploy.md).

    `/health` only says the process answers. Until the engines are restored, the broker has
    acknowledged the subscriptions and what it had queued is ingested, readings published
    meanwhile may be dropped (a fresh install has no session at the broker yet) and the
    numbers are stale: 503, with `reasons`.
    """
    state = svc.readiness() if isinstance(svc, ReadinessLike) else {"ready": True, "reasons": []}
    return JSONResponse(state, status_code=200 if state["ready"] else 503,
                        headers={"Cache-Control": "no-store"})


@router.get("/sites", response_model=list[SiteInfo], summary="Sites, their meters, cost centres and products")
def sites(svc: Service) -> list[dict[str, Any]]:
    return [site_dict(s) for s in selected_sites(svc, None)]


@router.get("/sites/{site_id}", response_model=SiteInfo, summary="One site")
def site(svc: Service, site_id: str) -> dict[str, Any]:
    return site_dict(site_or_404(svc, site_id))


@router.get("/products", response_model=list[ProductInfo], summary="Products of every site")
def products(svc: Service, site: SiteParam = None) -> list[dict[str, Any]]:
    return [product_dict(s, p) for s in selected_sites(svc, site) for p in s.products]


@router.get("/meters", summary="Meter status: last reading, its quality, comm errors")
def meters(svc: Service, site: SiteParam = None) -> list[dict[str, Any]]:
    if site is not None:
        site_or_404(svc, site)
    return svc.meter_status(site)


@router.get("/meters/{meter}/flags", summary="A meter's flagged readings and hours over a period")
def meter_flags(svc: Service, meter: Annotated[str, Path(max_length=64)], site: SiteParam = None,
                window: WindowParam = None, start: StartParam = None, end: EndParam = None) -> dict[str, Any]:
    """Per counter channel: every reading the energy step flagged (`rollover`, `counter_reset`,
    `implausible`, `gap_spread`, `rebased`, `replaced`; docs/accounting.md) with its value, how many usable
    readings the period holds, and the hours whose readings carry a flag. The period is a
    window or start/end as for footprints (default: the current local day), at most 31 days."""
    owners = [s for s in selected_sites(svc, site) if any(m.id == meter for m in s.meters)]
    if not owners:
        raise HTTPException(404, f"no meter {meter!r}" + (f" at site {site!r}" if site else ""))
    if len(owners) > 1:
        raise HTTPException(422, f"meter {meter!r} exists at several sites; name one with ?site=")
    if not isinstance(svc, ReadingFlagsLike):
        raise HTTPException(501, "this service keeps no per-reading flags")
    start_ms, end_ms = window_of(window, start, end, owners[0])
    if end_ms - start_ms > FLAGS_MAX_MS:
        raise HTTPException(422, "a flags request covers at most 31 days; ask period by period")
    return svc.reading_flags(owners[0].id, meter, start_ms=start_ms, end_ms=end_ms)


@router.get("/gateways", summary="Gateway status: sequence gaps, last message")
def gateways(svc: Service) -> list[dict[str, Any]]:
    return svc.gateway_status()


@router.get("/footprints", responses=FOOTPRINT_LIST,
            summary="Product footprints for a window (default: live, the current local day so far)")
def footprints(svc: Service, site: SiteParam = None, product: ProductParam = None,
               window: WindowParam = None, start: StartParam = None,
               end: EndParam = None) -> list[dict[str, Any]]:
    """One entry per (site, product): energy, units, kgCO2e location- and market-based, per unit,
    the factor dataset version, data-quality shares and uncertainty."""
    return select_footprints(svc, site, product, window, start, end)


@router.get("/footprints/batches/{batch_id}", responses=FOOTPRINT_LIST,
            summary="Footprints of one production batch")
def batch_footprints(svc: Service, batch_id: str, site: SiteParam = None,
                     product: ProductParam = None, start: StartParam = None,
                     end: EndParam = None) -> list[dict[str, Any]]:
    """The batch's units and emissions; searched over the last 31 days unless start/end say otherwise."""
    chosen = selected_sites(svc, site)
    check_product(chosen, product)
    now = windows.now_ms()
    try:
        start_ms = windows.parse_instant(start, "start") if start else now - BATCH_LOOKBACK_MS
        end_ms = windows.parse_instant(end, "end") if end else now
    except windows.WindowError as exc:
        raise HTTPException(422, str(exc)) from None
    if end_ms <= start_ms:
        raise HTTPException(422, f"end ({end_ms}) must be after start ({start_ms})")
    out = [{"site_id": s.id, "batch_id": batch_id, **fp}
           for s in chosen
           for fp in svc.footprints(s.id, start_ms=start_ms, end_ms=end_ms, product_id=product,
                                    batch_id=batch_id)]
    if not out:
        raise HTTPException(404, f"no production recorded for batch {batch_id!r} between "
                                 f"{start_ms} and {end_ms}")
    return out


@router.get("/sites/{site_id}/series", summary="Hourly consumption, emissions and coverage")
def series(svc: Service, site_id: str, window: WindowParam = None, start: StartParam = None,
           end: EndParam = None) -> list[dict[str, Any]]:
    """Per hour: consumption kWh, kWh per cost centre, kgCO2e location/market, covered kWh."""
    s = site_or_404(svc, site_id)
    start_ms, end_ms = window_of(window, start, end, s)
    return svc.hourly_series(s.id, start_ms, end_ms)
