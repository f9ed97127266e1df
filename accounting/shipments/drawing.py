"""Which lots a shipment's lines draw on, checked against what was produced and not yet shipped.

Rule, line by line:
1. Named batches first, in the order given: a batch with a quantity gives that many units; a
   batch without one gives what it has left, up to what the line still needs. A batch must be
   one the product's line showed, closed, and have the units left; else the shipment is refused.
2. The rest of the line is drawn **first-in-first-out** from the product's closed lots (batches,
   or production days for a product without a batch register) that ended between
   `produced_from` (default: `FIFO_LOOKBACK_DAYS` before the shipment date) and the end of the
   shipment date, oldest first, each giving what it has left.

What a lot has left is its units minus what every other recorded shipment (draft or issued)
draws from it, minus what earlier lines of this shipment drew: a unit is shipped once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date as Date
from datetime import timedelta

from accounting.errors import BatchAlreadyShippedError, OverShippedError, ShipmentInputError
from accounting.shipments.declaration import Declaration, Line
from accounting.shipments.lots import BATCH, Lot, Lots, day_bounds, local_date, whole_units
from tanji.site import Site

#: Without `produced_from`, FIFO looks this far back from the shipment date.
FIFO_LOOKBACK_DAYS = 92

#: (site, product, lot id) → {shipment id: units} drawn by other shipments.
Shipped = Callable[[str, str, str], dict[str, int]]


@dataclass(frozen=True)
class Draw:
    line: int
    lot: Lot
    units: int
    lot_units: int
    rule: str  # "named" or "fifo"


def _fmt_others(others: dict[str, int]) -> str:
    return ", ".join(f"{sid}: {units:,}" for sid, units in sorted(others.items()))


def draw_lines(decl: Declaration, site: Site, lots: Lots, shipped: Shipped) -> list[Draw]:
    """Every draw of the shipment, or the error that refuses it."""
    taken: dict[tuple[str, str, str], int] = {}  # drawn by earlier lines of this shipment
    out: list[Draw] = []

    def left(lot: Lot) -> tuple[int, int, dict[str, int]]:
        units = whole_units(lots.record(lot))
        others = shipped(*lot.key())
        return units - sum(others.values()) - taken.get(lot.key(), 0), units, others

    for n, line in enumerate(decl.lines):
        need = line.quantity
        for b in line.batches:
            where = f"lines[{n}] batch {b.batch_id} of {line.product_id}"
            lot = _named_lot(decl, site, lots, line, b.batch_id, where) if lots.uses_batches(site, line.product_id) \
                else None
            if lot is None:
                raise ShipmentInputError(f"{where}: product {line.product_id} has no batch register at "
                                         f"{site.id} (its line's PLC shows no batch number); leave batches "
                                         "out and its units are drawn first-in-first-out from production days")
            have, units, others = left(lot)
            want = b.quantity if b.quantity is not None else min(max(have, 0), need)
            if want > have:
                if others or taken.get(lot.key()):
                    mine = taken.get(lot.key(), 0)
                    raise BatchAlreadyShippedError(
                        f"{where}: {want:,} units asked, {max(have, 0):,} left — the batch made {units:,}, "
                        f"already shipped: {_fmt_others(others) or 'none'}"
                        + (f", earlier lines of this shipment: {mine:,}" if mine else "")
                        + ". A unit is shipped once: name another batch or lower the quantity")
                raise OverShippedError(f"{where}: {want:,} units asked, the batch made {units:,}")
            if want == 0:
                raise BatchAlreadyShippedError(f"{where}: nothing left — the batch made {units:,}, already "
                                               f"shipped: {_fmt_others(others)}. A unit is shipped once: name "
                                               "another batch")
            taken[lot.key()] = taken.get(lot.key(), 0) + want
            out.append(Draw(n, lot, want, units, "named"))
            need -= want
        if need <= 0:
            continue
        lo, hi = fifo_window(decl, site, line)
        available = 0
        for lot in lots.candidates(site, line.product_id, lo, hi):
            have, units, _ = left(lot)
            if have <= 0 or lots.record(lot) is None or lots.record(lot).get("provisional"):
                continue
            got = min(have, need)
            available += have
            taken[lot.key()] = taken.get(lot.key(), 0) + got
            out.append(Draw(n, lot, got, units, "fifo"))
            need -= got
            if need == 0:
                break
        if need > 0:
            kind = "batches" if lots.uses_batches(site, line.product_id) else "production days"
            asked = line.quantity - sum(b.quantity or 0 for b in line.batches)
            raise OverShippedError(
                f"lines[{n}] {line.product_id}: {asked:,} units asked first-in-first-out, only "
                f"{available:,} produced in closed {kind} from {_day(site, lo)} to {_day(site, hi - 1)} and not "
                "yet shipped. Lower the quantity, name the batches, or set produced_from earlier")
    return out


def _named_lot(decl: Declaration, site: Site, lots: Lots, line: Line, batch_id: str, where: str) -> Lot | None:
    lot = lots.batch(site, line.product_id, batch_id)
    if lot is None:
        raise ShipmentInputError(f"{where}: no such batch — the PLC of line {_line(site, line)} never showed "
                                 f"batch number {batch_id}")
    if not lot.closed:
        raise ShipmentInputError(f"{where}: the batch is still in production (the PLC still shows it); "
                                 "ship it once the line has moved on to the next batch")
    record = lots.record(lot)
    if record is None or not record.get("units"):
        raise OverShippedError(f"{where}: the batch made no unit of {line.product_id}")
    if record.get("provisional"):
        raise ShipmentInputError(f"{where}: the batch's hours are still open (provisional figures; an hour "
                                 "closes 15 minutes after its end): issue it once they are closed")
    if lot.kind != BATCH:
        return None
    return lot


def _line(site: Site, line: Line) -> str:
    return next(p.cost_centre for p in site.products if p.id == line.product_id)


def fifo_window(decl: Declaration, site: Site, line: Line) -> tuple[int, int]:
    """[start, end) in which FIFO lots must have ended: produced_from .. end of the shipment date."""
    since = line.produced_from or (Date.fromisoformat(decl.date) - timedelta(days=FIFO_LOOKBACK_DAYS)).isoformat()
    return day_bounds(site, since)[0], day_bounds(site, decl.date)[1]


def _day(site: Site, ms: int) -> str:
    return local_date(ms, site.zone)
