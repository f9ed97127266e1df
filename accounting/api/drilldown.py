"""Drill-down: from a line to its meters, from a product to its footprint and data quality.

A line's page answers "why is this line's number what it is": each of its meters with its last
reading, quality and communication errors, and the counter events of the period (resets and
steps back, rollovers, implausible jumps, gaps whose energy is estimated, outages) from the
operator's log; its products' footprint records over the same window. A product's page shows
its footprint record with everything that qualifies it (dataset, matching, data-quality
shares, uncertainty, revision, provisional), its history, and its counter's events.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException

from accounting.api.deps import service, site_or_404
from accounting.api.queries import EndParam, StartParam, WindowParam
from accounting.api.types import AccountingServiceLike, OperatorLogLike
from accounting.api.views import lines
from accounting.api.views.history import history, resolve
from tanji.site import Site

router = APIRouter(prefix="/api/v1", tags=["dashboard"])
Service = Annotated[AccountingServiceLike, Depends(service)]

#: The operator-log kinds that are a meter's counter events (accounting.live.watch).
COUNTER_EVENTS = ("counter_step_back", "counter_rollover", "implausible_jump", "estimated_gap",
                  "meter_offline", "meter_online", "meter_replaced")
EVENT_LIMIT = 500


def _meter_of(subject: str) -> str:
    return subject.split("/", 1)[0]


def counter_events(svc: AccountingServiceLike, site: Site, meters: set[str], start_ms: int,
                   end_ms: int) -> list[dict[str, Any]]:
    """The period's counter events of `meters`, newest first."""
    if not isinstance(svc, OperatorLogLike):
        return []
    return [c for c in svc.plant_changes(site.id, since_ms=start_ms, until_ms=end_ms, limit=EVENT_LIMIT)
            if c["kind"] in COUNTER_EVENTS and _meter_of(c["subject"]) in meters]


def active_alarms(svc: AccountingServiceLike, site: Site) -> list[dict[str, Any]]:
    return svc.alarms(site.id, active=True, limit=EVENT_LIMIT) if isinstance(svc, OperatorLogLike) else []


def meter_rows(site: Site, meters: list[Any], status: dict[str, dict[str, Any]], offline: set[str]) -> list[dict[str, Any]]:
    return [{"id": m.id, "role": m.role, "model": m.profile.model, "gateway": m.gateway,
             "poll_period_s": m.poll_period_s, "accuracy_class": m.profile.accuracy_class,
             "online": m.id not in offline,
             **{k: v for k, v in (status.get(m.id) or {}).items() if k not in ("meter", "site", "gateway", "role")}}
            for m in meters]


@router.get("/sites/{site_id}/lines/{centre_id}", summary="A line's meters, counter events and products")
def line_detail(svc: Service, site_id: str, centre_id: str, window: WindowParam = None, start: StartParam = None,
                end: EndParam = None) -> dict[str, Any]:
    """The cost centre's meters (last reading, quality, comm errors, online), its counter events
    and alarms, and its products' footprint records over the window (default: today so far)."""
    site = site_or_404(svc, site_id)
    centre = next((c for c in site.cost_centres if c.id == centre_id), None)
    if centre is None:
        raise HTTPException(404, f"site {site.id} has no cost centre {centre_id!r}; known: "
                                 f"{', '.join(c.id for c in site.cost_centres)}")
    lo, hi = resolve(window, start, end, site)
    status = {r.get("meter"): r for r in svc.meter_status(site.id)}
    alarms = active_alarms(svc, site)
    offline = lines.offline_meters(alarms)
    meters = lines.submeters(site, centre_id) + lines.counters(site, centre_id)
    ids = {m.id for m in meters}
    names = {p.id: p.name for p in site.products}
    products = set(lines.products_of(site, centre_id))
    records = [{**r, "name": names.get(r["product_id"])}
               for r in svc.footprints(site.id, start_ms=lo, end_ms=hi) if r.get("product_id") in products]
    return {"site_id": site.id, "start_ms": lo, "end_ms": hi,
            "line": {"id": centre.id, "name": centre.name or centre.id, "kind": centre.kind,
                     "allocation_key": centre.allocation_key,
                     "state": lines.state(site, centre_id, status, offline),
                     "power_kw": lines.power_kw(site, centre_id, status, offline)},
            "meters": meter_rows(site, meters, status, offline),
            "products": records, "totals": lines.summed(records),
            "counter_events": counter_events(svc, site, ids, lo, hi),
            "alarms": [a for a in alarms if _meter_of(a["subject"]) in ids | {centre_id}]}


@router.get("/sites/{site_id}/products/{product_id}", summary="A product's footprint, data quality and history")
def product_detail(svc: Service, site_id: str, product_id: str, window: WindowParam = None,
                   start: StartParam = None, end: EndParam = None) -> dict[str, Any]:
    """The product's footprint record over the window (default: today so far) with its data
    quality, its history in that window, and the events of the counter that counts it."""
    site = site_or_404(svc, site_id)
    product = next((p for p in site.products if p.id == product_id), None)
    if product is None:
        raise HTTPException(404, f"site {site.id} has no product {product_id!r}; known: "
                                 f"{', '.join(p.id for p in site.products)}")
    lo, hi = resolve(window, start, end, site)
    found = svc.footprints(site.id, start_ms=lo, end_ms=hi, product_id=product_id)
    past = history(svc, site, lo, hi)
    meters = {product.counter_meter} | ({product.batch_meter} if product.batch_meter else set())
    return {"site_id": site.id, "start_ms": lo, "end_ms": hi,
            "product": {"id": product.id, "name": product.name, "line": product.cost_centre,
                        "mass_kg": product.mass_kg, "declared_unit_kwh": product.declared_unit_kwh,
                        "upstream_kgco2e_per_unit": product.upstream_kgco2e_per_unit,
                        "counter_meter": product.counter_meter},
            "footprint": found[0] if found else None,
            "history": {"bucket": past["bucket"],
                        "buckets": [{"start_ms": b["start_ms"], "end_ms": b["end_ms"], "provisional": b["provisional"],
                                     **(b["products"].get(product_id) or {})} for b in past["buckets"]]},
            "counter_events": counter_events(svc, site, meters, lo, hi)}
