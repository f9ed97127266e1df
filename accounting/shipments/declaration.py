"""A shipment as declared: who buys what, where it goes, and which batches it comes from.

The input is what an export clerk has at hand: the declaration (报关单) or invoice number, the
date, the destination country, the buyer, and per line a product, a quantity and, where known,
the production batches (with the units taken from each). Everything is checked here before
any figure is looked up, and every mistake names the field and the fix: the whole shipment is
refused, nothing is half-recorded.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from datetime import date as Date
from typing import Any

import iso3166

from accounting.errors import ShipmentInputError, UnknownProductError
from tanji.site import Site

#: Declaration numbers (18 digits in China), invoice numbers: letters, digits, `.`, `_`, `-`.
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
KINDS = ("declaration", "invoice")
#: A line ships whole units, at most this many.
MAX_QUANTITY = 1_000_000_000
MAX_LINES = 500
MAX_BATCHES_PER_LINE = 1000
MAX_TEXT = 200
MIN_YEAR, MAX_YEAR = 2000, 2100
#: FIFO looks back at most this far before the shipment date (`produced_from`).
MAX_LOOKBACK_DAYS = 1100


@dataclass(frozen=True)
class BatchDraw:
    """Units a line takes from one named production batch (`quantity` None: what it has left)."""

    batch_id: str
    quantity: int | None = None


@dataclass(frozen=True)
class Line:
    """One product of a shipment. Units not covered by `batches` are drawn first-in-first-out
    from closed batches produced from `produced_from` (a local date; default: see `drawing`)."""

    product_id: str
    quantity: int
    batches: tuple[BatchDraw, ...] = ()
    produced_from: str | None = None


@dataclass(frozen=True)
class Declaration:
    shipment_id: str
    site_id: str
    date: str
    destination: str
    buyer: str
    lines: tuple[Line, ...]
    kind: str = "declaration"
    reference: str | None = None
    notes: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _text(doc: dict[str, Any], key: str, where: str, *, required: bool = True) -> str | None:
    value = doc.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise ShipmentInputError(f"{where}{key}: required")
        return None
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise ShipmentInputError(f"{where}{key}: must be text, got {type(value).__name__}")
    text = str(value).strip()
    if len(text) > MAX_TEXT:
        raise ShipmentInputError(f"{where}{key}: at most {MAX_TEXT} characters")
    return text


def _quantity(value: Any, where: str) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= MAX_QUANTITY:
        raise ShipmentInputError(f"{where}: must be a whole number of units from 1 to {MAX_QUANTITY:,}, "
                                 f"got {value!r}")
    return value


def parse_date(text: str, where: str) -> str:
    """A calendar date ``YYYY-MM-DD`` (the site's local date), in the years Tanji can account."""
    try:
        day = Date.fromisoformat(text)
    except ValueError:
        raise ShipmentInputError(f"{where}: {text!r} is not a date; write YYYY-MM-DD, e.g. 2025-06-20") from None
    if not MIN_YEAR <= day.year <= MAX_YEAR:
        raise ShipmentInputError(f"{where}: {text} is outside {MIN_YEAR}-{MAX_YEAR}")
    return day.isoformat()


def country(text: str, where: str) -> str:
    """An ISO 3166-1 country as its alpha-2 code (alpha-2, alpha-3 or numeric accepted)."""
    found = iso3166.countries.get(text.strip(), None) if text.strip() else None
    if found is None:
        raise ShipmentInputError(f"{where}: {text!r} is not an ISO 3166-1 country code (e.g. DE, DEU or 276)")
    return found.alpha2


def batch_id_text(value: Any) -> str:
    """A batch number as the PLC register shows it: an integer without a fraction."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _batches(raw: Any, where: str) -> tuple[BatchDraw, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ShipmentInputError(f"{where}: a list of batch numbers or {{batch_id, quantity}} objects")
    if len(raw) > MAX_BATCHES_PER_LINE:
        raise ShipmentInputError(f"{where}: at most {MAX_BATCHES_PER_LINE} batches in a line")
    out: list[BatchDraw] = []
    seen: set[str] = set()
    for i, item in enumerate(raw):
        here = f"{where}[{i}]"
        if isinstance(item, dict):
            bid = item.get("batch_id")
            qty = None if item.get("quantity") is None else _quantity(item.get("quantity"), here + ".quantity")
        else:
            bid, qty = item, None
        if bid is None or isinstance(bid, bool) or not isinstance(bid, str | int | float):
            raise ShipmentInputError(f"{here}.batch_id: required (the number the line's PLC shows)")
        text = batch_id_text(bid)
        try:
            number = float(text)
        except ValueError:
            number = float("nan")
        if not text or number != number or number < 0:
            raise ShipmentInputError(f"{here}.batch_id: {text!r} is not a batch number (the PLC's batch "
                                     "register holds a non-negative number)")
        if text in seen:
            raise ShipmentInputError(f"{here}.batch_id: batch {text} is named twice in this line; "
                                     "give it once with the total units")
        seen.add(text)
        out.append(BatchDraw(text, qty))
    return tuple(out)


def parse_declaration(doc: Any, sites: dict[str, Site]) -> Declaration:
    """Check a shipment document (JSON object) against the deployment's sites and products."""
    if not isinstance(doc, dict):
        raise ShipmentInputError("a shipment is a JSON object with shipment_id, date, destination, buyer, lines")
    sid = _text(doc, "shipment_id", "")
    assert sid is not None
    if not ID_PATTERN.fullmatch(sid):
        raise ShipmentInputError(f"shipment_id: {sid!r} must be 1-64 letters, digits, '.', '_' or '-' "
                                 "(the declaration or invoice number)")
    kind = _text(doc, "kind", "", required=False) or "declaration"
    if kind not in KINDS:
        raise ShipmentInputError(f"kind: {kind!r} must be one of {', '.join(KINDS)}")
    site_id = _text(doc, "site_id", "", required=False)
    if site_id is None:
        if len(sites) != 1:
            raise ShipmentInputError(f"site_id: required (this deployment has sites {', '.join(sorted(sites))})")
        site_id = next(iter(sites))
    site = sites.get(site_id)
    if site is None:
        raise ShipmentInputError(f"site_id: no site {site_id!r}; known sites: {', '.join(sorted(sites))}")
    day = parse_date(_text(doc, "date", "") or "", "date")
    dest = country(_text(doc, "destination", "") or "", "destination")
    buyer = _text(doc, "buyer", "")
    reference = _text(doc, "reference", "", required=False)
    raw_lines = doc.get("lines")
    if not isinstance(raw_lines, list) or not raw_lines:
        raise ShipmentInputError("lines: at least one line {product_id, quantity[, batches]}")
    if len(raw_lines) > MAX_LINES:
        raise ShipmentInputError(f"lines: at most {MAX_LINES} lines in a shipment")
    products = {p.id for p in site.products}
    lines: list[Line] = []
    for i, raw in enumerate(raw_lines):
        where = f"lines[{i}]"
        if not isinstance(raw, dict):
            raise ShipmentInputError(f"{where}: an object {{product_id, quantity[, batches]}}")
        product = _text(raw, "product_id", where + ".")
        if product not in products:
            raise UnknownProductError(f"{where}.product_id: site {site_id} makes no product {product!r}; "
                                      f"its products: {', '.join(sorted(products))}")
        quantity = _quantity(raw.get("quantity"), where + ".quantity")
        batches = _batches(raw.get("batches"), where + ".batches")
        named = sum(b.quantity or 0 for b in batches)
        if named > quantity:
            raise ShipmentInputError(f"{where}: the batches' units ({named:,}) exceed the line's quantity "
                                     f"({quantity:,})")
        since = _text(raw, "produced_from", where + ".", required=False)
        if since is not None:
            since = parse_date(since, where + ".produced_from")
            if not 0 <= (Date.fromisoformat(day) - Date.fromisoformat(since)).days <= MAX_LOOKBACK_DAYS:
                raise ShipmentInputError(f"{where}.produced_from: {since} must be on or before the shipment date "
                                         f"{day} and at most {MAX_LOOKBACK_DAYS} days before it")
        lines.append(Line(str(product), quantity, batches, since))
    return Declaration(shipment_id=sid, site_id=site_id, date=day, destination=dest, buyer=str(buyer),
                       lines=tuple(lines), kind=kind, reference=reference)


def declaration_from_dict(doc: dict[str, Any]) -> Declaration:
    """A stored declaration back (already checked when it was recorded)."""
    lines = tuple(Line(ln["product_id"], int(ln["quantity"]),
                       tuple(BatchDraw(b["batch_id"], b.get("quantity")) for b in ln.get("batches", ())),
                       ln.get("produced_from")) for ln in doc["lines"])
    return Declaration(doc["shipment_id"], doc["site_id"], doc["date"], doc["destination"], doc["buyer"],
                       lines, doc.get("kind", "declaration"), doc.get("reference"), dict(doc.get("notes") or {}))
