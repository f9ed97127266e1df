"""A shipment's footprint from the footprint records of the lots it draws on.

Nothing new is measured here: a line that ships u_i units from lot i (whose record made U_i
units) carries the share f_i = u_i / U_i of that record's energy, emissions and covered energy,
so its kgCO2e per unit from lot i is exactly the lot's per-unit figure. Then, per line:

- energy, kgCO2e location and market, covered kWh, EU-rule battery electricity: Σ f_i × lot value;
- per unit: total / quantity; the PCF per unit adds the product's declared upstream part;
- data-quality shares, hourly-matched share: weighted by the energy shipped from each lot;
- uncertainty (95 %, location-based): the lots' absolute uncertainties added linearly (their
  meters are the same, their errors systematic, as the engine adds hours), over the total;
- primary-data share, EU battery figure: the engine's formulas over the line's totals.

A line's result has the fields of the engine's footprint record (`ProductFootprint`), so the
page, the JSON and the PACT footprint are views of one record, plus the lots it came from.
The shipment's totals sum the lines the same way.
"""

from __future__ import annotations

from typing import Any

from accounting.engine.results import ProductFootprint
from accounting.shipments.drawing import Draw
from tanji.methods import dataset_ref
from tanji.site import Product

#: Summed over lots in proportion to the units shipped.
EXTENSIVE = ("energy_kwh", "kgco2e_location", "kgco2e_market", "covered_pv_kwh", "covered_contract_kwh",
             "covered_gec_kwh", "kgco2e_eu_battery_electricity")
#: Must agree between lots; several values are joined with "+" (and disclosed as such).
DESCRIPTIVE = ("dataset_id", "dataset_version", "gas_basis", "factor_region", "matching_mode", "residual_mix",
               "uncovered_basis", "factor_selection", "boundary")
SHARES = ("share_metered", "share_allocated", "share_estimated")


def evidence_of(record: dict[str, Any]) -> list[str]:
    """The evidence digests a record names (signed readings, issue #18); none while unsigned."""
    return [str(record["evidence_root"])] if record.get("evidence_root") else []


def _joined(values: list[Any]) -> Any:
    distinct: list[Any] = []
    for v in values:
        for part in (str(v).split("+") if isinstance(v, str) else [v]):
            if part not in distinct:
                distinct.append(part)
    if len(distinct) == 1:
        return distinct[0]
    return "+".join(str(v) for v in distinct)


def line_record(*, shipment_id: str, line_no: int, site_id: str, product: Product, quantity: int,
                draws: list[Draw], records: list[dict[str, Any]]) -> dict[str, Any]:
    """The footprint record of one shipment line (fields of `ProductFootprint`, plus `lots`)."""
    sums = dict.fromkeys(EXTENSIVE, 0.0)
    weighted = dict.fromkeys((*SHARES, "hourly_matched_share"), 0.0)
    unc_abs = 0.0
    hourly = True
    lots: list[dict[str, Any]] = []
    for draw, rec in zip(draws, records, strict=True):
        units = float(rec.get("units") or 0.0)
        f = draw.units / units if units > 0 else 0.0
        for k in EXTENSIVE:
            sums[k] += f * float(rec.get(k) or 0.0)
        energy = f * float(rec.get("energy_kwh") or 0.0)
        for k in SHARES:
            weighted[k] += energy * float(rec.get(k) or 0.0)
        if rec.get("hourly_matched_share") is None:
            hourly = False
        else:
            weighted["hourly_matched_share"] += energy * float(rec["hourly_matched_share"])
        unc_abs += f * float(rec.get("kgco2e_location") or 0.0) * float(rec.get("uncertainty_pct_95") or 0.0) / 100
        lots.append({
            "kind": draw.lot.kind, "lot_id": draw.lot.lot_id, "rule": draw.rule,
            "start_ms": draw.lot.start_ms, "end_ms": draw.lot.end_ms, "units_shipped": draw.units,
            "lot_units": draw.lot_units, "units_recorded": units,
            "kgco2e_per_unit_location": rec.get("kgco2e_per_unit_location"),
            "kgco2e_per_unit_market": rec.get("kgco2e_per_unit_market"),
            "kgco2e_location": f * float(rec.get("kgco2e_location") or 0.0),
            "kgco2e_market": f * float(rec.get("kgco2e_market") or 0.0),
            "dataset_id": rec.get("dataset_id"), "dataset_version": rec.get("dataset_version"),
            "uncertainty_pct_95": rec.get("uncertainty_pct_95"), "provisional": bool(rec.get("provisional")),
            "revision": int(rec.get("revision") or 0), "evidence": evidence_of(rec),
        })
    energy = sums["energy_kwh"]
    kg_loc, kg_mkt = sums["kgco2e_location"], sums["kgco2e_market"]
    upstream = product.upstream_kgco2e_per_unit
    per_loc = kg_loc / quantity
    per_mkt = kg_mkt / quantity
    pcf = per_mkt + (upstream or 0.0)
    shares = {k: (weighted[k] / energy if energy > 0 else 0.0) for k in SHARES}
    up_total = (upstream or 0.0) * quantity
    primary = ((shares["share_metered"] + shares["share_allocated"])
               * (kg_loc / (kg_loc + up_total) if kg_loc + up_total > 0 else 1.0)) if energy > 0 else None
    battery_kwh = product.declared_unit_kwh
    battery_eu = ((sums["kgco2e_eu_battery_electricity"] / quantity + (upstream or 0.0)) / battery_kwh
                  if battery_kwh else None)
    covered = sums["covered_pv_kwh"] + sums["covered_contract_kwh"] + sums["covered_gec_kwh"]
    footprint = ProductFootprint(
        product_id=product.id, site_id=site_id,
        window_start_ms=min(d.lot.start_ms for d in draws), window_end_ms=max(d.lot.end_ms for d in draws),
        units=float(quantity), energy_kwh=energy, kgco2e_location=kg_loc, kgco2e_market=kg_mkt,
        kgco2e_per_unit_location=per_loc, kgco2e_per_unit_market=per_mkt,
        upstream_kgco2e_per_unit=upstream,
        **{k: _joined([r.get(k) for r in records]) for k in DESCRIPTIVE},
        **shares,
        primary_data_share=primary,
        uncertainty_pct_95=100 * unc_abs / kg_loc if kg_loc > 0 else None,
        provisional=any(bool(r.get("provisional")) for r in records),
        revision=max(int(r.get("revision") or 0) for r in records),
        renewable_share=covered / energy if energy > 0 else 0.0,
        hourly_matched_share=(weighted["hourly_matched_share"] / energy if energy > 0 else 0.0) if hourly else None,
        covered_pv_kwh=sums["covered_pv_kwh"], covered_contract_kwh=sums["covered_contract_kwh"],
        covered_gec_kwh=sums["covered_gec_kwh"],
        kgco2e_per_battery_kwh_market=pcf / battery_kwh if battery_kwh else None,
        batch_id=None,
        pcf_kgco2e_per_unit_market=pcf, battery_kwh_per_unit=battery_kwh,
        kgco2e_eu_battery_electricity=sums["kgco2e_eu_battery_electricity"],
        kgco2e_per_battery_kwh_eu=battery_eu,
    )
    record: dict[str, Any] = {
        **footprint.to_dict(),
        "shipment_id": shipment_id, "line": line_no,
        "dataset_versions": sorted({dataset_ref(r.get('dataset_id'), r.get('dataset_version')) for r in records}),
        "evidence": sorted({e for lot in lots for e in lot["evidence"]}),
        "lots": lots,
    }
    return record


def totals(lines: list[dict[str, Any]]) -> dict[str, Any]:
    """The shipment's totals over its lines (kgCO2e and kWh summed; shares energy-weighted)."""
    energy = sum(r["energy_kwh"] for r in lines)
    kg_loc = sum(r["kgco2e_location"] for r in lines)
    unc = sum(r["kgco2e_location"] * (r["uncertainty_pct_95"] or 0.0) / 100 for r in lines)
    out: dict[str, Any] = {
        "units": sum(r["units"] for r in lines), "energy_kwh": energy, "kgco2e_location": kg_loc,
        "kgco2e_market": sum(r["kgco2e_market"] for r in lines),
        "kgco2e_upstream": sum((r["upstream_kgco2e_per_unit"] or 0.0) * r["units"] for r in lines),
        "pcf_kgco2e_market": sum(r["pcf_kgco2e_per_unit_market"] * r["units"] for r in lines),
        "uncertainty_pct_95": 100 * unc / kg_loc if kg_loc > 0 else None,
        "dataset_versions": sorted({v for r in lines for v in r["dataset_versions"]}),
        "evidence": sorted({e for r in lines for e in r["evidence"]}),
    }
    for k in SHARES:
        out[k] = sum(r["energy_kwh"] * r[k] for r in lines) / energy if energy > 0 else 0.0
    return out
