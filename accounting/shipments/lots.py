"""What can be shipped: lots of a product and their footprint records.

A lot is a production batch when the product's line has a PLC batch register (a `batch_id`
channel): the span during which the register showed that number, as the engine keeps it. A
product without one is shipped from production days instead (the site's local calendar day).
A lot can be shipped once it is **closed**: a batch when the register has moved on to another
number, a day when it has ended; and its footprint record is no longer provisional (every hour
it touches closed).

A lot's units are its record's `units` rounded to whole units: within an hour the engine takes
production as uniform, so a batch boundary inside an hour gives a fractional count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import date as Date
from datetime import datetime, timedelta
from typing import Any, Protocol, runtime_checkable
from zoneinfo import ZoneInfo

from accounting.api.responses import plain
from accounting.api.types import AccountingServiceLike
from accounting.shipments.declaration import batch_id_text
from accounting.site_topology import site_topology
from tanji.site import Product, Site

BATCH = "batch"
DAY = "day"


@runtime_checkable
class BatchRunsLike(Protocol):
    """A service that lists its lines' production batches (`AccountingService.batch_runs`)."""

    def batch_runs(self, site_id: str) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class Lot:
    site_id: str
    product_id: str
    kind: str  # BATCH or DAY
    lot_id: str  # the batch number, or the local date YYYY-MM-DD
    start_ms: int
    end_ms: int
    closed: bool  # the batch register moved on / the day ended

    def key(self) -> tuple[str, str, str]:
        return (self.site_id, self.product_id, self.lot_id)


def whole_units(record: dict[str, Any] | None) -> int:
    """A lot's shippable units: its record's units rounded to whole units."""
    units = float((record or {}).get("units") or 0.0)
    return int(math.floor(units + 0.5)) if units > 0 else 0


def product_of(site: Site, product_id: str) -> Product:
    return next(p for p in site.products if p.id == product_id)


def batch_lines(site: Site) -> set[str]:
    """Cost centres whose PLC shows a batch number."""
    topo = site_topology(site)
    return {topo.meter(m).cost_centre for m, _ in topo.batch_keys() if topo.meter(m).cost_centre}


def day_bounds(site: Site, day: str) -> tuple[int, int]:
    tz = site.zone
    d = Date.fromisoformat(day)
    start = datetime(d.year, d.month, d.day, tzinfo=tz)
    end = datetime.combine(d + timedelta(days=1), datetime.min.time(), tzinfo=tz)
    return int(start.timestamp() * 1000), int(end.timestamp() * 1000)


class Lots:
    """Lots and their records from the service; records are cached for one operation."""

    def __init__(self, service: AccountingServiceLike, now_ms: int) -> None:
        self.service = service
        self.now_ms = now_ms
        self._runs: dict[str, dict[tuple[str, str], Lot]] = {}
        self._records: dict[tuple[str, str, str], dict[str, Any] | None] = {}

    def uses_batches(self, site: Site, product_id: str) -> bool:
        return product_of(site, product_id).cost_centre in batch_lines(site)

    def _batches(self, site: Site) -> dict[tuple[str, str], Lot]:
        """(line, batch number) → the batch over every span the line's PLC showed it, in order of
        first appearance."""
        if site.id not in self._runs:
            runs = self.service.batch_runs(site.id) if isinstance(self.service, BatchRunsLike) else []
            index: dict[tuple[str, str], Lot] = {}
            for r in sorted(runs, key=lambda r: (r["start_ms"], str(r["batch_id"]))):
                key = (str(r.get("cost_centre")), batch_id_text(r["batch_id"]))
                known = index.get(key)
                if known is None:
                    index[key] = Lot(site.id, "", BATCH, key[1], int(r["start_ms"]), int(r["end_ms"]), bool(r["closed"]))
                else:
                    index[key] = Lot(site.id, "", BATCH, key[1], known.start_ms, max(known.end_ms, int(r["end_ms"])),
                                     known.closed and bool(r["closed"]))
            self._runs[site.id] = index
        return self._runs[site.id]

    def batch(self, site: Site, product_id: str, batch_id: str) -> Lot | None:
        """The batch as the product's line showed it (every span with that number), or None."""
        found = self._batches(site).get((product_of(site, product_id).cost_centre, batch_id))
        return None if found is None else replace(found, product_id=product_id)

    def candidates(self, site: Site, product_id: str, start_ms: int, end_ms: int) -> list[Lot]:
        """Closed lots of a product that ended in [start_ms, end_ms), oldest first (FIFO order)."""
        if self.uses_batches(site, product_id):
            line = product_of(site, product_id).cost_centre
            return [replace(lot, product_id=product_id) for (cc, _), lot in self._batches(site).items()
                    if cc == line and lot.closed and start_ms <= lot.end_ms <= end_ms]
        tz = site.zone
        out: list[Lot] = []
        day = datetime.fromtimestamp(start_ms / 1000, tz).date()
        while True:
            lo, hi = day_bounds(site, day.isoformat())
            if hi > end_ms or hi > self.now_ms:
                break
            if hi > start_ms:
                out.append(Lot(site.id, product_id, DAY, day.isoformat(), lo, hi, True))
            day += timedelta(days=1)
        return out

    def day(self, site: Site, product_id: str, day: str) -> Lot:
        lo, hi = day_bounds(site, day)
        return Lot(site.id, product_id, DAY, day, lo, hi, hi <= self.now_ms)

    def record(self, lot: Lot) -> dict[str, Any] | None:
        """The lot's footprint record (the engine's, as every other view shows it)."""
        key = lot.key()
        if key not in self._records:
            found = self.service.footprints(lot.site_id, start_ms=lot.start_ms, end_ms=lot.end_ms,
                                            product_id=lot.product_id,
                                            batch_id=lot.lot_id if lot.kind == BATCH else None)
            found = [f for f in found if f.get("product_id") == lot.product_id]
            self._records[key] = plain(found[0]) if found else None
        return self._records[key]

    def put(self, lot: Lot, record: dict[str, Any] | None) -> None:
        """Use this record for a lot (a recomputation's)."""
        self._records[lot.key()] = record


def lot_from_dict(doc: dict[str, Any]) -> Lot:
    return Lot(doc["site_id"], doc["product_id"], doc["kind"], doc["lot_id"], int(doc["start_ms"]),
               int(doc["end_ms"]), bool(doc.get("closed", True)))


def local_date(ms: int, tz: ZoneInfo) -> str:
    return datetime.fromtimestamp(ms / 1000, tz).date().isoformat()
