"""A shipment line as a PACT v3 ProductFootprint: the same mapping as a product's month.

`accounting.pact.document.product_footprint` maps the line's record (it has the fields of the
engine's footprint record) exactly as it maps a closed month; on top of that the footprint
names the shipment: a second product id `urn:tanji:shipment:<site>:<shipment id>:<line>` (a
partner can filter on it: `GET /3/footprints?productId=urn:tanji:shipment:…`), and a second
data model extension, `tanji-shipment` (shipment id, kind, date, destination, buyer, line,
lots drawn, document version), whose JSON Schema is served beside the other one.
"""

from __future__ import annotations

from typing import Any

from accounting.pact.document import PactProduct, product_footprint, publishable
from tanji.site import Product, Site

EXTENSION_SPEC_VERSION = "2.0.0"
SCHEMA_PATH = "/pact/extensions/tanji-shipment/1.0.0/schema.json"
VALIDITY_MS = 365 * 86_400_000

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "tanji-shipment/1.0.0",
    "title": "Tanji shipment (export declaration or invoice) of a footprint",
    "description": "The shipment a PACT footprint was issued for: the units of one line of an export "
                   "declaration or invoice, and the production lots (batches or days) they came from.",
    "type": "object",
    "required": ["shipment_id", "kind", "date", "destination", "buyer", "line", "quantity", "lots", "version"],
    "properties": {
        "shipment_id": {"type": "string", "description": "declaration (报关单) or invoice number"},
        "kind": {"enum": ["declaration", "invoice"]},
        "date": {"type": "string", "format": "date"},
        "destination": {"type": "string", "pattern": "^[A-Z]{2}$", "description": "ISO 3166-1 alpha-2"},
        "buyer": {"type": "string"},
        "line": {"type": "integer", "minimum": 1},
        "quantity": {"type": "integer", "minimum": 1},
        "version": {"type": "integer", "minimum": 1, "description": "the shipment document version"},
        "lots": {"type": "array", "items": {
            "type": "object", "required": ["kind", "lot_id", "units_shipped"],
            "properties": {"kind": {"enum": ["batch", "day"]}, "lot_id": {"type": "string"},
                           "units_shipped": {"type": "integer", "minimum": 1},
                           "kgco2e_per_unit_location": {"type": ["number", "null"]},
                           "kgco2e_per_unit_market": {"type": ["number", "null"]}}}},
        "evidence": {"type": "array", "items": {"type": "string"}},
    },
}


def shipment_urn(site_id: str, shipment_id: str, line: int) -> str:
    return f"urn:tanji:shipment:{site_id}:{shipment_id}:{line}"


def line_footprint(*, pf_id: str, created_ms: int, site: Site, product: Product, record: dict[str, Any],
                   declaration: dict[str, Any], version: int, declared: PactProduct, public_url: str,
                   energy_schema_url: str, preceding: list[str] | None = None) -> dict[str, Any]:
    """The v3 footprint of one shipment line (its record as issued)."""
    line = int(record["line"]) + 1
    note = (f"Shipment {declaration['shipment_id']} ({declaration.get('kind', 'declaration')} of "
            f"{declaration['date']} to {declaration['destination']}, buyer {declaration['buyer']}), line {line}: "
            f"{int(record['units'])} units from {len(record['lots'])} production lot(s); document version {version}.")
    doc = product_footprint(pf_id=pf_id, created_ms=created_ms, site=site, product=product, record=record,
                            declared=declared, validity_ms=(int(record["window_end_ms"]),
                                                            int(record["window_end_ms"]) + VALIDITY_MS),
                            schema_url=energy_schema_url, preceding=preceding, revision_note=note)
    doc["productIds"] = [*doc["productIds"], shipment_urn(site.id, declaration["shipment_id"], line)]
    doc["extensions"].append({
        "specVersion": EXTENSION_SPEC_VERSION, "dataSchema": public_url + SCHEMA_PATH,
        "data": {"shipment_id": declaration["shipment_id"], "kind": declaration.get("kind", "declaration"),
                 "date": declaration["date"], "destination": declaration["destination"],
                 "buyer": declaration["buyer"], "line": line, "quantity": int(record["units"]),
                 "version": version, "evidence": list(record.get("evidence") or []),
                 "lots": [{k: lot[k] for k in ("kind", "lot_id", "units_shipped", "kgco2e_per_unit_location",
                                               "kgco2e_per_unit_market")} for lot in record["lots"]]},
    })
    return doc


def why_not(record: dict[str, Any], declared: PactProduct) -> str | None:
    """Why a line gets no PACT footprint (the same rule as a month's), or None."""
    return publishable(record, declared)
