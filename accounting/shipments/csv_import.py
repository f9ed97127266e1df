"""Shipments from a logistics or ERP export: one CSV row per product and batch of a shipment.

Columns (header names in English or as a Chinese customs/ERP export names them; case, spaces
and a byte-order mark do not matter):

| column | also read as | |
| --- | --- | --- |
| `shipment_id` | declaration_no, invoice_no, 报关单号, 发票号 | required |
| `date` | ship_date, export_date, 出口日期, 申报日期 | required, YYYY-MM-DD |
| `destination` | destination_country, country, 运抵国, 目的国 | required, ISO 3166-1 |
| `buyer` | consignee, customer, 境外收货人, 买方 | required |
| `product_id` | product, sku, 产品编号 | required, the site file's product id |
| `quantity` | qty, 数量 | required, whole units of this row |
| `batch_id` | batch, lot, 批次号, 批号 | optional: the row's units come from this batch |
| `line` | line_no, item_no, 项号 | optional: rows with the same line are one line |
| `site_id` | site, 工厂 | optional with one site |
| `kind`, `reference`, `produced_from` | | optional |

Rows of one shipment must agree on its date, destination, buyer and site. Rows of one line
(same `line`, or the same product when there is no `line` column) add up: a row with a batch
names that batch's units, a row without one is drawn first-in-first-out. Every error names the
CSV line; nothing is recorded unless every shipment of the file can be.
"""

from __future__ import annotations

import csv
import io
from dataclasses import replace
from typing import Any

from accounting.errors import ShipmentError, ShipmentInputError
from accounting.shipments.declaration import Declaration, parse_declaration
from tanji.site import Site

MAX_ROWS = 20_000
ALIASES: dict[str, tuple[str, ...]] = {
    "shipment_id": ("declaration_no", "declaration_number", "invoice_no", "invoice_number", "报关单号", "发票号"),
    "date": ("ship_date", "export_date", "出口日期", "申报日期"),
    "destination": ("destination_country", "country", "运抵国", "目的国"),
    "buyer": ("consignee", "customer", "境外收货人", "买方"),
    "product_id": ("product", "sku", "产品编号"),
    "quantity": ("qty", "数量"),
    "batch_id": ("batch", "lot", "批次号", "批号"),
    "line": ("line_no", "item_no", "项号"),
    "site_id": ("site", "工厂"),
    "kind": (),
    "reference": (),
    "produced_from": (),
}
REQUIRED = ("shipment_id", "date", "destination", "buyer", "product_id", "quantity")
SHIPMENT_FIELDS = ("date", "destination", "buyer", "site_id", "kind", "reference")


def _columns(header: list[str]) -> dict[str, int]:
    names = {name: canonical for canonical, aliases in ALIASES.items() for name in (canonical, *aliases)}
    found: dict[str, int] = {}
    for i, raw in enumerate(header):
        key = raw.strip().lstrip("\ufeff").strip().lower().replace(" ", "_")
        canonical = names.get(key)
        if canonical is None:
            continue
        if canonical in found:
            raise ShipmentInputError(f"CSV header: two columns mean {canonical} ({header[found[canonical]]!r}, {raw!r})")
        found[canonical] = i
    missing = [c for c in REQUIRED if c not in found]
    if missing:
        raise ShipmentInputError(f"CSV header: missing column(s) {', '.join(missing)}; the header must name "
                                 f"{', '.join(REQUIRED)} (optional: batch_id, line, site_id, kind, reference, "
                                 "produced_from)")
    return found


def parse_csv(text: str, sites: dict[str, Site], site_id: str | None = None) -> list[Declaration]:
    """The shipments of a CSV export, each checked as `parse_declaration` checks a JSON one."""
    try:
        rows = list(csv.reader(io.StringIO(text.lstrip("\ufeff"))))
    except csv.Error as exc:
        raise ShipmentInputError(f"CSV: not readable as CSV ({exc})") from None
    rows = [(n, r) for n, r in enumerate(rows, start=1) if any(c.strip() for c in r)]
    if not rows:
        raise ShipmentInputError("CSV: empty (a header and at least one row)")
    if len(rows) > MAX_ROWS + 1:
        raise ShipmentInputError(f"CSV: at most {MAX_ROWS:,} rows in one import")
    columns = _columns(rows[0][1])
    shipments: dict[str, dict[str, Any]] = {}
    where: dict[str, list[int]] = {}
    for n, row in rows[1:]:
        if len(row) < len(rows[0][1]):
            row = row + [""] * (len(rows[0][1]) - len(row))
        value = {k: row[i].strip() for k, i in columns.items()}
        for k in REQUIRED:
            if not value.get(k):
                raise ShipmentInputError(f"CSV line {n}: {k} is empty")
        sid = value["shipment_id"]
        head = {k: value.get(k) or None for k in SHIPMENT_FIELDS}
        if head["site_id"] is None:
            head["site_id"] = site_id
        doc = shipments.setdefault(sid, {"shipment_id": sid, **head, "lines": {}})
        for k in SHIPMENT_FIELDS:
            if head[k] != doc[k]:
                raise ShipmentInputError(f"CSV line {n}: shipment {sid} has {k} {head[k]!r} here but {doc[k]!r} "
                                         f"on line {where[sid][0]}; a shipment's rows must agree")
        where.setdefault(sid, []).append(n)
        key = value.get("line") or value["product_id"]
        line = doc["lines"].setdefault(key, {"product_id": value["product_id"], "quantity": 0, "batches": [],
                                             "produced_from": value.get("produced_from") or None, "_rows": []})
        if line["product_id"] != value["product_id"]:
            raise ShipmentInputError(f"CSV line {n}: line {key} of shipment {sid} is {line['product_id']} on "
                                     f"CSV line {line['_rows'][0]}, not {value['product_id']}")
        qty = value["quantity"].replace(",", "")
        if not qty.isdigit() or int(qty) <= 0:
            raise ShipmentInputError(f"CSV line {n}: quantity {value['quantity']!r} must be a whole number of units > 0")
        line["quantity"] += int(qty)
        line["_rows"].append(n)
        if value.get("batch_id"):
            for b in line["batches"]:
                if b["batch_id"] == value["batch_id"]:
                    b["quantity"] += int(qty)
                    break
            else:
                line["batches"].append({"batch_id": value["batch_id"], "quantity": int(qty)})
    out: list[Declaration] = []
    for sid, doc in shipments.items():
        lines = list(doc.pop("lines").values())
        for line in lines:
            line.pop("_rows")
        doc["lines"] = lines
        source = f"CSV lines {_span(where[sid])}"
        try:
            decl = parse_declaration({k: v for k, v in doc.items() if v is not None}, sites)
        except ShipmentError as exc:
            raise type(exc)(f"{source} (shipment {sid}): {exc}") from None
        out.append(replace(decl, notes={"source": source}))
    return out


def _span(lines: list[int]) -> str:
    return f"{lines[0]}" if len(lines) == 1 else f"{lines[0]}-{lines[-1]}"
