"""A shipment line's record from lot records, against the arithmetic written out by hand."""

from __future__ import annotations

import pytest

from accounting.shipments.drawing import Draw
from accounting.shipments.figures import line_record, totals
from accounting.shipments.lots import BATCH, Lot
from tanji.site import Product

PRODUCT = Product("pack", "Pack", "line-a", "plc", "units_total", upstream_kgco2e_per_unit=3.0,
                  declared_unit_kwh=5.0)


def record(units: float, kwh: float, loc: float, mkt: float, *, metered: float, unc: float, eu: float,
           version: str, revision: int = 0, hourly: float | None = None) -> dict:
    return {"units": units, "energy_kwh": kwh, "kgco2e_location": loc, "kgco2e_market": mkt,
            "kgco2e_per_unit_location": loc / units, "kgco2e_per_unit_market": mkt / units,
            "share_metered": metered, "share_allocated": 1 - metered, "share_estimated": 0.0,
            "uncertainty_pct_95": unc, "kgco2e_eu_battery_electricity": eu, "covered_pv_kwh": 0.1 * kwh,
            "covered_contract_kwh": 0.0, "covered_gec_kwh": 0.0, "dataset_id": "cn-electricity-carbon-footprint",
            "dataset_version": version, "gas_basis": "co2e_lifecycle", "factor_region": "CN",
            "matching_mode": "annual", "residual_mix": "available", "uncovered_basis": "residual_mix",
            "factor_selection": "latest_per_hour", "boundary": "cradle-to-gate", "provisional": False,
            "revision": revision, "hourly_matched_share": hourly}


def test_two_lots_by_hand() -> None:
    a = record(200.0, 400.0, 240.0, 200.0, metered=0.8, unc=10.0, eu=230.0, version="2023.1", revision=1)
    b = record(100.0, 100.0, 50.0, 40.0, metered=0.5, unc=6.0, eu=48.0, version="2024")
    draws = [Draw(0, Lot("s", "pack", BATCH, "7", 0, 10, True), 50, 200, "named"),
             Draw(0, Lot("s", "pack", BATCH, "8", 10, 20, True), 100, 100, "fifo")]
    r = line_record(shipment_id="X", line_no=0, site_id="s", product=PRODUCT, quantity=150, draws=draws,
                    records=[a, b])
    # f_a = 50/200 = 0.25, f_b = 1
    assert r["energy_kwh"] == pytest.approx(0.25 * 400 + 100)  # 200
    assert r["kgco2e_location"] == pytest.approx(0.25 * 240 + 50)  # 110
    assert r["kgco2e_market"] == pytest.approx(0.25 * 200 + 40)  # 90
    assert r["kgco2e_per_unit_market"] == pytest.approx(90 / 150)
    assert r["pcf_kgco2e_per_unit_market"] == pytest.approx(90 / 150 + 3.0)
    assert r["share_metered"] == pytest.approx((100 * 0.8 + 100 * 0.5) / 200)  # 0.65
    assert r["uncertainty_pct_95"] == pytest.approx(100 * (60 * 0.10 + 50 * 0.06) / 110)  # 8.18 %
    assert r["primary_data_share"] == pytest.approx(1.0 * 110 / (110 + 3.0 * 150))
    assert r["renewable_share"] == pytest.approx(0.1)
    assert r["kgco2e_per_battery_kwh_eu"] == pytest.approx(((0.25 * 230 + 48) / 150 + 3.0) / 5.0)
    assert r["kgco2e_per_battery_kwh_market"] == pytest.approx((90 / 150 + 3.0) / 5.0)
    assert r["dataset_version"] == "2023.1+2024" and r["dataset_versions"] == [
        "cn-electricity-carbon-footprint@2023.1", "cn-electricity-carbon-footprint@2024"]
    assert r["hourly_matched_share"] is None and r["revision"] == 1
    assert [lot["units_shipped"] for lot in r["lots"]] == [50, 100]
    t = totals([r, r])
    assert t["kgco2e_location"] == pytest.approx(220) and t["units"] == 300
    assert t["uncertainty_pct_95"] == pytest.approx(r["uncertainty_pct_95"])
    assert t["pcf_kgco2e_market"] == pytest.approx(2 * 150 * r["pcf_kgco2e_per_unit_market"])
