"""The printable shipment document (出口碳足迹声明), Chinese and English side by side.

A view of one issued document version: every number printed is a field of the stored document
(the line records and totals computed when it was issued), nothing is computed here. A
superseded version says so at the top and names the version that replaced it.
"""

from __future__ import annotations

import html
from datetime import datetime
from typing import Any

import iso3166

from accounting.api.deps import site_tz
from accounting.factors.selection import factor_rule_text, uncovered_rule_text
from tanji.site import Site

e = html.escape


def _num(value: Any, digits: int = 3) -> str:
    return "–" if not isinstance(value, int | float) else f"{value:,.{digits}f}"


def _pct(value: Any) -> str:
    return "–" if not isinstance(value, int | float) else f"{100 * value:.1f} %"


def _country(code: str) -> str:
    found = iso3166.countries.get(code, None)
    return f"{code} · {found.name}" if found else code


def render_document(doc: dict[str, Any], site: Site) -> str:
    tz = site_tz(site)

    def local(ms: Any, fmt: str = "%Y-%m-%d %H:%M") -> str:
        return datetime.fromtimestamp(ms / 1000, tz).strftime(fmt) if isinstance(ms, int) else "–"

    decl = doc["declaration"]
    kind = ("报关单号 Declaration No." if decl.get("kind", "declaration") == "declaration" else "发票号 Invoice No.")
    status = doc.get("status")
    banner = ""
    if status == "superseded":
        banner = (f"<p class=superseded data-testid=doc-superseded>已被取代 SUPERSEDED — replaced by version "
                  f"{e(str(doc.get('superseded_by')))}: "
                  f"<a href=\"?version={e(str(doc.get('superseded_by')))}\">版本 version {e(str(doc.get('superseded_by')))}</a></p>")
    if doc.get("supersedes"):
        banner += (f"<p class=note>取代版本 Replaces version {e(str(doc['supersedes']))}: {e(str(doc.get('reason') or ''))}</p>")
    totals = doc["totals"]
    head = [
        (kind, f"<b data-testid=doc-id>{e(doc['shipment_id'])}</b>"
               + (f" · {e(str(decl['reference']))}" if decl.get("reference") else "")),
        ("版本 Version", f"<span data-testid=doc-version>{e(str(doc['version']))}</span> · "
                         f"<span data-testid=doc-status>{e(str(status))}</span> · 签发 issued {local(doc['issued_ms'])}"),
        ("出口商 Exporter", f"{e(site.name or site.id)} · {e(site.province)}"),
        ("日期 Date", e(decl["date"])),
        ("目的国 Destination", e(_country(decl["destination"]))),
        ("买方 Buyer", e(decl["buyer"])),
    ]
    rows = []
    battery = any(ln.get("kgco2e_per_battery_kwh_eu") is not None for ln in doc["lines"])
    for ln in doc["lines"]:
        name = next((p.name for p in site.products if p.id == ln["product_id"]), ln["product_id"])
        rows.append(
            f"<tr data-testid=doc-line><td>{int(ln['line']) + 1}</td><td>{e(name)}<br><small>{e(ln['product_id'])}</small></td>"
            f"<td class=num>{_num(ln['units'], 0)}</td>"
            f"<td class=num data-testid=line-location>{_num(ln['kgco2e_per_unit_location'])}</td>"
            f"<td class=num data-testid=line-market>{_num(ln['kgco2e_per_unit_market'])}</td>"
            f"<td class=num>{_num(ln['pcf_kgco2e_per_unit_market'])}</td>"
            f"<td class=num>{_num(ln['kgco2e_location'], 1)}</td><td class=num>{_num(ln['kgco2e_market'], 1)}</td>"
            + (f"<td class=num data-testid=line-battery-eu>{_num(ln.get('kgco2e_per_battery_kwh_eu'))}</td>" if battery else "")
            + "</tr>")
    lots = []
    for ln in doc["lines"]:
        for lot in ln["lots"]:
            what = "批次 batch" if lot["kind"] == "batch" else "生产日 day"
            lots.append(f"<tr><td>{int(ln['line']) + 1}</td><td>{what} <b>{e(lot['lot_id'])}</b></td>"
                        f"<td>{local(lot['start_ms'])} – {local(lot['end_ms'])}</td>"
                        f"<td class=num>{_num(lot['units_shipped'], 0)} / {_num(lot['lot_units'], 0)}</td>"
                        f"<td class=num>{_num(lot['kgco2e_per_unit_location'])}</td>"
                        f"<td class=num>{_num(lot['kgco2e_per_unit_market'])}</td>"
                        f"<td>{e(str(lot.get('dataset_id')))} {e(str(lot.get('dataset_version')))}</td></tr>")
    first = doc["lines"][0]
    evidence = totals.get("evidence") or []
    provenance = [
        ("排放因子 Factor", e(factor_rule_text(first))),
        ("因子版本 Dataset versions", e(", ".join(totals["dataset_versions"]))),
        ("匹配方式 Matching mode", f"{e(str(first.get('matching_mode')))} · {e(uncovered_rule_text(first))}"),
        ("边界 Boundary", e(str(first.get("boundary")))
         + (" · 上游 upstream included" if first.get("upstream_kgco2e_per_unit") is not None else "")),
        ("数据质量 Data quality", f"metered {_pct(totals.get('share_metered'))} · allocated {_pct(totals.get('share_allocated'))}"
                                  f" · estimated {_pct(totals.get('share_estimated'))}"),
        ("不确定度 Uncertainty (95 %)", f"± {_num(totals.get('uncertainty_pct_95'), 1)} % (location-based)"),
        ("证据 Evidence", "<br>".join(f"<code>{e(x)}</code>" for x in evidence) if evidence
         else "读数未签名 readings not signed: no evidence digest"),
        ("PACT", "<br>".join(f"line {p['line']}: <code>{e(p['id'])}</code>" if p.get("id")
                             else f"line {p['line']}: 未发布 not published ({e(str(p.get('reason')))})" for p in doc.get("pact", []))),
    ]
    battery_head = "<th>EU battery<br><small>kgCO2e/kWh</small></th>" if battery else ""
    return f"""<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8">
<title>出口碳足迹 Shipment carbon footprint · {e(doc['shipment_id'])}</title>
<link rel="stylesheet" href="/dashboard/label.css"><link rel="stylesheet" href="/dashboard/shipment.css"></head>
<body><article class="label shipment">
<header><div class="mark">出口碳足迹<br><small>Shipment carbon footprint</small></div>
<h1>{e(decl['buyer'])} · {e(decl['destination'])}</h1></header>
{banner}
<table class=head>{''.join(f'<tr><th>{k}</th><td>{v}</td></tr>' for k, v in head)}</table>
<div class="figures">
 <div><div class="value" data-testid="doc-total-market">{_num(totals['kgco2e_market'], 1)}</div>
  <div class="unit">kgCO2e 合计 total · 基于市场 market-based</div></div>
 <div><div class="value" data-testid="doc-total-location">{_num(totals['kgco2e_location'], 1)}</div>
  <div class="unit">kgCO2e 合计 total · 基于位置 location-based</div></div>
</div>
<table class=lines><tr><th>#</th><th>产品 Product</th><th>数量 Units</th><th>位置 Location<br><small>kgCO2e/unit</small></th>
<th>市场 Market<br><small>kgCO2e/unit</small></th><th>PCF<br><small>kgCO2e/unit</small></th>
<th>合计 Location<br><small>kgCO2e</small></th><th>合计 Market<br><small>kgCO2e</small></th>{battery_head}</tr>
{''.join(rows)}</table>
<h2>来源批次 Production lots</h2>
<table class=lots><tr><th>#</th><th>批次 Lot</th><th>生产时间 Produced</th><th>发运/产量 Shipped / made</th>
<th>位置 Location<br><small>kgCO2e/unit</small></th><th>市场 Market<br><small>kgCO2e/unit</small></th><th>因子 Dataset</th></tr>
{''.join(lots)}</table>
<table>{''.join(f'<tr><th>{k}</th><td>{v}</td></tr>' for k, v in provenance)}</table>
<footer>GB/T 24067-2024 · ISO 14067 · GHG Protocol Scope 2 · PACT 3.0 · 由 Tanji 碳迹 根据现场电表读数生成 ·
generated by Tanji from on-site meter readings; this version is immutable</footer>
</article></body></html>"""
