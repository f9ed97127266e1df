"""Documents for export staff: CSV, the EU battery declared unit, and a printable carbon label.

All three are views of `select_footprints`: the engine's footprint records, the same ones the
dashboard, the API and PACT show. Nothing here computes a figure; every number printed is a
field of the record (battery figures included), with the provenance an auditor asks for next
to it: factor dataset id and version, matching mode, data-quality shares, 95 % uncertainty.
"""

from __future__ import annotations

import csv
import html
import io
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import HTMLResponse, Response

from accounting.api.deps import service, site_or_404, site_tz
from accounting.api.models import FOOTPRINT_FIELDS
from accounting.api.queries import (
    EndParam,
    ProductParam,
    SiteParam,
    StartParam,
    WindowParam,
    select_footprints,
)
from accounting.api.types import AccountingServiceLike
from accounting.factors.selection import exemption_text, factor_rule_text, uncovered_rule_text
from tanji.methods import dataset_ref
from tanji.site import Product, Site

router = APIRouter(prefix="/api/v1/reports", tags=["reports"])
Service = Annotated[AccountingServiceLike, Depends(service)]

#: The footprint record's fields (the single definition of a footprint), in its order.
RECORD_FIELDS = FOOTPRINT_FIELDS
#: Written as percentages for a spreadsheet (column name + `_pct`): the record holds fractions.
PERCENT_FIELDS = tuple(f for f in RECORD_FIELDS if f.startswith("share_") or f.endswith("_share"))
#: The window's bounds, written in the site's local time instead of epoch milliseconds.
TIME_FIELDS = ("window_start_ms", "window_end_ms")
#: One CSV column per record field, after the site, the window and the product's name: what an
#: export clerk opens in Excel (local times, percentages, rounded figures); the JSON API has
#: the same numbers unrounded.
CSV_COLUMNS = ("site_id", "window", "timezone", "window_start_local", "window_end_local", "product_id",
               "product_name",
               *(f + "_pct" if f in PERCENT_FIELDS else f for f in RECORD_FIELDS
                 if f not in ("site_id", "product_id", *TIME_FIELDS)))


def csv_decimals(field: str) -> int:
    """Decimals a record field is rounded to in the CSV (percentages: of the percentage)."""
    if field in PERCENT_FIELDS or field == "uncertainty_pct_95":
        return 2
    if field == "units":
        return 0
    return 4 if "per_unit" in field or "per_battery" in field else 3


def csv_row(fp: dict[str, Any], site: Site | None, product_names: dict[tuple[str, str], str]) -> dict[str, Any]:
    """One record as a spreadsheet row: local times, product name, percentages, rounded figures."""
    tz = site_tz(site) if site is not None else None
    row: dict[str, Any] = {"site_id": fp.get("site_id"), "window": fp.get("window"),
                           "timezone": str(tz) if tz else "", "product_id": fp.get("product_id"),
                           "product_name": product_names.get((fp.get("site_id"), fp.get("product_id")), "")}
    for name, column in zip(TIME_FIELDS, ("window_start_local", "window_end_local"), strict=True):
        ms = fp.get(name)
        row[column] = (datetime.fromtimestamp(ms / 1000, tz).strftime("%Y-%m-%d %H:%M")
                       if isinstance(ms, int) and tz else "")
    for name in RECORD_FIELDS:
        if name in ("site_id", "product_id", *TIME_FIELDS):
            continue
        value = fp.get(name)
        column = name + "_pct" if name in PERCENT_FIELDS else name
        if isinstance(value, bool) or value is None:
            row[column] = "" if value is None else str(value).lower()
        elif isinstance(value, int | float):
            scaled = 100 * value if name in PERCENT_FIELDS else value
            row[column] = f"{scaled:.{csv_decimals(name)}f}"
        else:
            row[column] = value
    return row
#: Fields of the EU battery report, all from the record.
BATTERY_FIELDS = ("site_id", "product_id", "battery_kwh_per_unit", "window_start_ms", "window_end_ms",
                  "units", "boundary", "kgco2e_per_battery_kwh_eu", "kgco2e_per_battery_kwh_market",
                  "kgco2e_eu_battery_electricity", "upstream_kgco2e_per_unit", "dataset_id",
                  "dataset_version", "uncertainty_pct_95", "provisional")


def _product(site: Site, product_id: str) -> Product:
    for p in site.products:
        if p.id == product_id:
            return p
    raise HTTPException(404, f"site {site.id} has no product {product_id!r}")


@router.get("/footprints.csv", response_class=Response,
            summary="Footprints as CSV for spreadsheets (UTF-8, local time, names, percentages, rounded)",
            responses={200: {"content": {"text/csv": {}}}})
def footprints_csv(svc: Service, site: SiteParam = None, product: ProductParam = None,
                   window: WindowParam = None, start: StartParam = None, end: EndParam = None) -> Response:
    """One row per (site, product) footprint record: window in the site's local time, product
    name, shares in percent (`*_pct`), figures rounded (per unit and per battery kWh to 4
    decimals, kWh and kgCO2e to 3, units whole, percentages to 2)."""
    rows = select_footprints(svc, site, product, window, start, end)
    names = {(s.id, p.id): p.name for s in svc.sites.values() for p in s.products}
    out = io.StringIO()
    writer = csv.DictWriter(out, CSV_COLUMNS, extrasaction="ignore", lineterminator="\r\n")
    writer.writeheader()
    for fp in rows:
        writer.writerow(csv_row(fp, svc.sites.get(fp.get("site_id")), names))
    # The byte-order mark makes spreadsheet programs read the Chinese names as UTF-8.
    return Response("\ufeff" + out.getvalue(), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": 'attachment; filename="tanji-footprints.csv"'})


@router.get("/battery", summary="EU battery regulation declared unit: kgCO2e per kWh of battery energy")
def battery(svc: Service, site: SiteParam = None, product: ProductParam = None, window: WindowParam = None,
            start: StartParam = None, end: EndParam = None) -> list[dict[str, Any]]:
    """Products with a declared battery energy (`declared_unit_kwh` in the site file) only.

    `kgco2e_per_battery_kwh_eu` follows the battery regulation's rule (grid mix or a direct
    connection; certificates and green-power contracts do not lower it); the market-based
    figure is beside it as `kgco2e_per_battery_kwh_market`. Both come from the footprint record.
    """
    out = [{k: fp.get(k) for k in BATTERY_FIELDS}
           for fp in select_footprints(svc, site, product, window, start, end) if fp.get("battery_kwh_per_unit")]
    if product is not None and not out:
        raise HTTPException(422, f"product {product!r} has no declared battery energy (declared_unit_kwh)")
    return out


def _num(value: Any, digits: int = 3) -> str:
    return "–" if not isinstance(value, int | float) else f"{value:,.{digits}f}"


def _pct(value: Any) -> str:
    return "–" if not isinstance(value, int | float) else f"{100 * value:.1f} %"


def evidence_text(fp: dict[str, Any]) -> str:
    """The label's evidence row: the Merkle root of the signed readings and the factor dataset
    digest an auditor checks with `tanji audit verify` (docs/audit.md)."""
    e = html.escape
    dataset = (f"因子数据集 factor dataset {e(dataset_ref(fp.get('dataset_id'), fp.get('dataset_version')))} "
               f"<code data-testid=label-dataset-digest>{e(str(fp.get('dataset_digest') or '–'))[:16]}</code>")
    root = fp.get("evidence_root")
    if not root:
        return f"读数未签名 readings not signed: no evidence root · {dataset}"
    state = "完整 complete" if fp.get("evidence_complete") else "不完整 incomplete (missing or unsigned batches)"
    return (f"签名读数 signed readings: Merkle root <code data-testid=label-evidence-root title=\"{e(str(root))}\">"
            f"{e(str(root))[:16]}…</code> over {int(fp.get('evidence_batches') or 0)} batches, {state} · {dataset}")


@router.get("/label/{site_id}/{product_id}", response_class=HTMLResponse,
            summary="Printable carbon label (碳标识) of a product, with its provenance")
def carbon_label(svc: Service, site_id: str, product_id: str, window: WindowParam = None,
                 start: StartParam = None, end: EndParam = None) -> HTMLResponse:
    site = site_or_404(svc, site_id)
    product = _product(site, product_id)
    found = select_footprints(svc, site_id, product_id, window, start, end)
    if not found:
        raise HTTPException(404, f"no footprint for {product_id} at {site_id} in this window")
    fp = found[0]
    tz = site_tz(site)

    def local(ms: Any) -> str:
        return datetime.fromtimestamp(ms / 1000, tz).strftime("%Y-%m-%d %H:%M") if isinstance(ms, int) else "–"

    battery_rows = ""
    if fp.get("battery_kwh_per_unit"):
        battery_rows = (f"<tr><th>电池碳足迹 EU battery figure ({_num(fp['battery_kwh_per_unit'], 2)} kWh/unit)</th>"
                        f"<td class=big><span data-testid=label-battery-eu>{_num(fp.get('kgco2e_per_battery_kwh_eu'))}</span>"
                        " <small>kgCO2e/kWh (EU battery rule: grid mix, direct connection)</small><br>"
                        f"<span data-testid=label-battery-market>{_num(fp.get('kgco2e_per_battery_kwh_market'))}</span>"
                        " <small>kgCO2e/kWh (market-based)</small></td></tr>")
    upstream = fp.get("upstream_kgco2e_per_unit")
    e = html.escape
    rows = [
        ("产品 Product", f"{e(product.name)} <small>({e(product.id)})</small>"),
        ("工厂 Site", f"{e(site.name or site.id)} · {e(site.province)}"),
        ("核算期 Period", f"{local(fp.get('window_start_ms'))} – {local(fp.get('window_end_ms'))} ({e(str(site.timezone))})"
                         + (" · 临时 provisional" if fp.get("provisional") else "")),
        ("产量 Units", _num(fp.get("units"), 0)),
        ("电量 Electricity", f"{_num(fp.get('energy_kwh'), 1)} kWh"),
        ("上游 Upstream", f"{_num(upstream)} kgCO2e/unit" if upstream is not None else "未包含 not included (gate-to-gate)"),
        ("边界 Boundary", e(str(fp.get("boundary")))
         + f" · 产品碳足迹 PCF <span data-testid=label-pcf>{_num(fp.get('pcf_kgco2e_per_unit_market'))}</span> kgCO2e/unit (market)"),
        ("排放因子 Factor", e(factor_rule_text(fp))),
        ("匹配方式 Matching mode", f"{e(str(fp.get('matching_mode')))}{e(exemption_text(site))} · {e(uncovered_rule_text(fp))}"),
        ("可再生电力 Renewable share", _pct(fp.get("renewable_share"))),
        ("数据质量 Data quality", f"metered {_pct(fp.get('share_metered'))} · allocated {_pct(fp.get('share_allocated'))}"
                                  f" · estimated {_pct(fp.get('share_estimated'))} · primary data {_pct(fp.get('primary_data_share'))}"),
        ("不确定度 Uncertainty (95 %)", f"± {_num(fp.get('uncertainty_pct_95'), 1)} %"),
        ("修订 Revision", e(str(fp.get("revision")))),
        ("证据 Evidence", evidence_text(fp)),
    ]
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    page = f"""<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8">
<title>碳标识 Carbon label · {e(product.name)}</title>
<link rel="stylesheet" href="/dashboard/label.css"></head>
<body><article class="label">
<header><div class="mark">碳足迹<br><small>Carbon footprint</small></div>
<h1>{e(product.name)}</h1></header>
<div class="figures">
 <div><div class="value" data-testid="label-market">{_num(fp.get('kgco2e_per_unit_market'))}</div>
  <div class="unit">kgCO2e / 件 unit · 基于市场 market-based</div></div>
 <div><div class="value" data-testid="label-location">{_num(fp.get('kgco2e_per_unit_location'))}</div>
  <div class="unit">kgCO2e / 件 unit · 基于位置 location-based</div></div>
</div>
<table>{battery_rows}{body}</table>
<footer>GB/T 24067-2024 · ISO 14067 · GHG Protocol Scope 2 · generated by Tanji 碳迹 from on-site meter readings</footer>
</article></body></html>"""
    return HTMLResponse(page)
