"""History for the time picker: any window, hour by hour or day by day, per line and per product.

`GET /api/v1/sites/{site}/history` (and the drill-downs) answer from the service, whose engine is restored from the
store on every start: a past day looks the same after a restart as before it, and nothing is
kept in the page. Each bucket holds the footprint records of that bucket (`footprints` of the
service over exactly that period, so a bucket's per-unit figure is its own kgCO2e over its own
units, never an average of averages), summed per line (`accounting.api.lines`), the metered
kWh per cost centre, and whether it is closed or still provisional. `totals` are the records
of the whole window: the same numbers `/api/v1/footprints` gives for it.

Windows: `window` (hour, shift, day, month, year) with an optional `start` inside it, or
`start` and `end`, as everywhere in the API; or `batch`, a production batch (the hours its
PLC showed that batch number, searched over the last 31 days).
"""

from __future__ import annotations

import time
from typing import Any, Literal

from fastapi import HTTPException

from accounting.api import windows
from accounting.api.deps import site_tz
from accounting.api.types import AccountingServiceLike, GridFactorsLike
from accounting.api.views import lines
from accounting.engine.kernels_energy import HOUR_MS
from tanji.site import Site

Bucket = Literal["hour", "day"]

#: Up to this span, buckets are hours by default; above it, local days.
HOURLY_UP_TO_MS = 2 * 86_400_000
#: A history answer holds at most this many buckets (a month of hours, two years of days).
MAX_BUCKETS = 800
BATCH_LOOKBACK_MS = 31 * 86_400_000


def resolve(window: str | None, start: str | None, end: str | None, site: Site) -> tuple[int, int]:
    try:
        return windows.resolve(window, start, end, site_tz(site))
    except windows.WindowError as exc:
        raise HTTPException(422, str(exc)) from None


def batch_window(svc: AccountingServiceLike, site: Site, batch: str) -> tuple[int, int, list[dict[str, Any]]]:
    """The whole hours a batch spans, and its own footprint records."""
    now = int(time.time() * 1000)
    found = svc.footprints(site.id, start_ms=now - BATCH_LOOKBACK_MS, end_ms=now, batch_id=batch)
    if not found:
        raise HTTPException(404, f"no production recorded for batch {batch!r} in the last 31 days")
    lo = min(r["window_start_ms"] for r in found)
    hi = max(r["window_end_ms"] for r in found)
    return lo - lo % HOUR_MS, -(-hi // HOUR_MS) * HOUR_MS, found


def buckets(start_ms: int, end_ms: int, bucket: Bucket, site: Site) -> list[tuple[int, int]]:
    """[start, end) cut into whole hours or local days (the first and last may be partial)."""
    out: list[tuple[int, int]] = []
    tz = site_tz(site)
    t = start_ms
    while t < end_ms:
        if bucket == "hour":
            nxt = t - t % HOUR_MS + HOUR_MS
        else:
            nxt = windows.window_bounds("day", t, tz)[1]
        out.append((t, min(nxt, end_ms)))
        t = nxt
        if len(out) > MAX_BUCKETS:
            raise HTTPException(422, f"more than {MAX_BUCKETS} {bucket} buckets; choose a shorter window "
                                     "or bucket=day")
    return out


def history(svc: AccountingServiceLike, site: Site, start_ms: int, end_ms: int, bucket: Bucket | None = None,
            batch_records: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    bucket = bucket or ("hour" if end_ms - start_ms <= HOURLY_UP_TO_MS else "day")
    spans = buckets(start_ms, end_ms, bucket, site)
    series = svc.hourly_series(site.id, start_ms - start_ms % HOUR_MS, end_ms)
    factors = (svc.grid_factors(site.id, start_ms, end_ms) if isinstance(svc, GridFactorsLike) else None)
    factor_by_hour = {h["hour_start_ms"]: h for h in (factors or {}).get("hours", [])}
    by_hour = {s.get("hour_start_ms"): s for s in series}
    rows = []
    for lo, hi in spans:
        records = svc.footprints(site.id, start_ms=lo, end_ms=hi)
        hours = [by_hour[h] for h in range(lo - lo % HOUR_MS, hi, HOUR_MS) if h in by_hour]
        metered: dict[str, float] = {}
        for s in hours:
            for cid, kwh in (s.get("cost_centres_kwh") or {}).items():
                metered[cid] = metered.get(cid, 0.0) + (kwh or 0.0)
        per_line = lines.by_line(site, records)
        for cid, figures in per_line.items():
            figures["metered_kwh"] = metered.get(cid, 0.0)
        site_total = lines.summed(records)
        rows.append({
            "start_ms": lo, "end_ms": hi,
            "provisional": any(r.get("provisional") for r in records) or any(s.get("provisional") for s in hours),
            "has_data": bool(site_total["energy_kwh"] or any(metered.values())
                             or any(s.get("consumption_kwh") for s in hours)),
            "consumption_kwh": sum(s.get("consumption_kwh") or 0.0 for s in hours),
            "kgco2e_location": site_total["kgco2e_location"], "kgco2e_market": site_total["kgco2e_market"],
            "location_kg_per_kwh": _mean([factor_by_hour[h]["location_kg_per_kwh"]
                                          for h in range(lo - lo % HOUR_MS, hi, HOUR_MS) if h in factor_by_hour]),
            "lines": per_line,
            "products": {r["product_id"]: {k: r.get(k) for k in _PRODUCT_FIELDS} for r in records},
        })
    totals = svc.footprints(site.id, start_ms=start_ms, end_ms=end_ms)
    names = {p.id: p.name for p in site.products}
    return {
        "site_id": site.id, "timezone": site.timezone, "start_ms": start_ms, "end_ms": end_ms,
        "bucket": bucket,
        "lines": [{"id": c.id, "name": c.name or c.id, "kind": c.kind, "products": lines.products_of(site, c.id)}
                  for c in lines.centres(site)],
        "products": [{"id": p.id, "name": p.name, "line": p.cost_centre} for p in site.products],
        "factor": {k: v for k, v in (factors or {}).items() if k != "hours"} or None,
        "buckets": rows,
        "totals": {"products": [{**r, "name": names.get(r.get("product_id"))} for r in totals],
                   "lines": lines.by_line(site, totals)},
        "batch": [{**r, "name": names.get(r.get("product_id"))} for r in batch_records] if batch_records else None,
    }


def _mean(values: list[float]) -> float | None:
    """The time-weighted factor of a bucket: its hours' factors, each hour one weight."""
    return sum(values) / len(values) if values else None


_PRODUCT_FIELDS = ("units", "energy_kwh", "kgco2e_location", "kgco2e_market", "kgco2e_per_unit_location",
                   "kgco2e_per_unit_market", "share_metered", "share_allocated", "share_estimated",
                   "provisional", "revision")


