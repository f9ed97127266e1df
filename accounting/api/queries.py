"""What several routers ask the service, and the query parameters they share.

REST (`v1`), the live stream (`stream`), the reports and the demo's progress line all show
footprints through `select_footprints`, so every screen and document carries the same numbers
for the same window; `stats_dict` and `ingest_state` are the health figures `v1` and the stream
both show.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import HTTPException, Query

from accounting.api import windows
from accounting.api.deps import selected_sites, site_tz
from accounting.api.responses import plain
from accounting.api.types import AccountingServiceLike
from tanji.site import Site

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
#: Ingest is called stale when no message arrived for this long.
STALE_AFTER_MS = 60_000


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


def check_product(sites_: list[Site], product: str | None) -> None:
    """404 when `product` is named but no site of `sites_` makes it."""
    if product is not None and not any(p.id == product for s in sites_ for p in s.products):
        known = sorted({p.id for s in sites_ for p in s.products})
        raise HTTPException(404, f"no product {product!r}; known products: {', '.join(known) or '(none)'}")


def window_of(window: str | None, start: str | None, end: str | None, site: Site) -> tuple[int, int]:
    """[start_ms, end_ms) of a request at `site`; 422 with the fix when malformed."""
    try:
        return windows.resolve(window, start, end, site_tz(site))
    except windows.WindowError as exc:
        raise HTTPException(422, str(exc)) from None


def select_footprints(svc: AccountingServiceLike, site: str | None = None, product: str | None = None,
                      window: str | None = None, start: str | None = None,
                      end: str | None = None) -> list[dict[str, Any]]:
    """Footprints per (site, product) for a window; shared by REST, the stream and the reports."""
    chosen = selected_sites(svc, site)
    check_product(chosen, product)
    label = window or ("period" if end else "day" if start else "live")
    out: list[dict[str, Any]] = []
    for s in chosen:
        if product is not None and not any(p.id == product for p in s.products):
            continue
        start_ms, end_ms = window_of(window, start, end, s)
        for fp in svc.footprints(s.id, start_ms=start_ms, end_ms=end_ms, product_id=product):
            out.append({"site_id": s.id, "window": label, **fp})
    return out


def live_footprints(svc: AccountingServiceLike) -> list[dict[str, Any]]:
    """What the dashboard shows: every product's footprint over the current local day so far."""
    return select_footprints(svc)
