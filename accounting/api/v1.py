"""Versioned read API under /api/v1: what the plant is, what its meters say, what it emits.

Routes only translate HTTP to service calls: query parameters are validated here (unknown
sites and products are 404, malformed windows 422 with the fix in the message), numbers come
untouched from the service so every consumer sees the same ones.
"""

from __future__ import annotations

import time
from importlib import metadata
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query

from accounting.api import windows
from accounting.api.deps import selected_sites, service, site_or_404, site_tz
from accounting.api.models import FOOTPRINT_LIST, Health, ProductInfo, SiteInfo
from accounting.api.responses import plain
from accounting.api.sites import product_dict, site_dict
from accounting.api.types import AccountingServiceLike
from tanji.site import Site

router = APIRouter(prefix="/api/v1", tags=["v1"])
Service = Annotated[AccountingServiceLike, Depends(service)]
SiteParam = Annotated[str | None, Query(description="site id; all sites when absent", max_length=64)]
ProductParam = Annotated[str | None, Query(description="product id; all products when absent",
                                           max_length=64)]
WindowParam = Annotated[windows.Window | None, Query(
    description="calendar window in the site's time zone; `live` (the default) is the current "
                "local day so far; shifts are 00-08, 08-16, 16-24 local time")]
StartParam = Annotated[str | None, Query(description="epoch ms or ISO 8601 with offset",
                                         max_length=40)]
EndParam = Annotated[str | None, Query(description="epoch ms or ISO 8601 with offset (exclusive)",
                                       max_length=40)]
#: A batch lookup without start/end searches this far back.
BATCH_LOOKBACK_MS = 31 * 86_400_000
#: Ingest is called stale when no message arrived for this long.
STALE_AFTER_MS = 60_000
_STARTED = time.monotonic()
try:
    VERSION = metadata.version("tanji")
except metadata.PackageNotFoundError:  # running from a source tree that was never installed
    VERSION = "0+unknown"


def stats_dict(svc: AccountingServiceLike) -> dict[str, Any]:
    """The service's ingest counters as plain JSON (its own `to_dict()` when it has one: it locks)."""
    stats = getattr(svc, "stats", None)
    if stats is None:
        return {}
    value = plain(stats.to_dict() if hasattr(stats, "to_dict") else stats)
    return value if isinstance(value, dict) else {"value": value}


def ingest_state(stats: dict[str, Any], now: int) -> str:
    """`waiting` before the first message, `stale` after a minute of silence, else `live`."""
    last = stats.get("last_message_ms")
    if not last:
        return "waiting"
    return "live" if now - last <= STALE_AFTER_MS else "stale"


@router.get("/health", response_model=Health, summary="Liveness and ingest freshness")
def health(svc: Service) -> dict[str, Any]:
    """Always 200 while the process serves; `ingest` says whether readings are flowing."""
    stats = stats_dict(svc)
    now = windows.now_ms()
    return {"status": "ok", "version": VERSION,
            "now_ms": now, "uptime_s": round(time.monotonic() - _STARTED, 3),
            "sites": sorted(svc.sites), "ingest": ingest_state(stats, now), "stats": stats}


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


@router.get("/gateways", summary="Gateway status: sequence gaps, last message")
def gateways(svc: Service) -> list[dict[str, Any]]:
    return svc.gateway_status()


def _check_product(sites_: list[Site], product: str | None) -> None:
    if product is not None and not any(p.id == product for s in sites_ for p in s.products):
        known = sorted({p.id for s in sites_ for p in s.products})
        raise HTTPException(404, f"no product {product!r}; known products: {', '.join(known) or '(none)'}")


def _window(window: str | None, start: str | None, end: str | None, site: Site) -> tuple[int, int]:
    try:
        return windows.resolve(window, start, end, site_tz(site))
    except windows.WindowError as exc:
        raise HTTPException(422, str(exc)) from None


def select_footprints(svc: AccountingServiceLike, site: str | None = None, product: str | None = None,
                      window: str | None = None, start: str | None = None,
                      end: str | None = None) -> list[dict[str, Any]]:
    """Footprints per (site, product) for a window; shared by REST, the stream and the reports."""
    chosen = selected_sites(svc, site)
    _check_product(chosen, product)
    label = window or ("period" if end else "day" if start else "live")
    out: list[dict[str, Any]] = []
    for s in chosen:
        if product is not None and not any(p.id == product for p in s.products):
            continue
        start_ms, end_ms = _window(window, start, end, s)
        for fp in svc.footprints(s.id, start_ms=start_ms, end_ms=end_ms, product_id=product):
            out.append({"site_id": s.id, "window": label, **fp})
    return out


def live_footprints(svc: AccountingServiceLike) -> list[dict[str, Any]]:
    """What the dashboard shows: every product's footprint over the current local day so far."""
    return select_footprints(svc)


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
    _check_product(chosen, product)
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
    start_ms, end_ms = _window(window, start, end, s)
    return svc.hourly_series(s.id, start_ms, end_ms)
