"""Reports: CSV, EU battery declared unit and the carbon label show the same numbers as the API."""

from __future__ import annotations

import csv
import io

import pytest
from fastapi.testclient import TestClient


def test_csv_has_one_row_per_product_with_units_in_column_names(client: TestClient) -> None:
    r = client.get("/api/v1/reports/footprints.csv")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.content.decode("utf-8-sig"))))
    api = {f["product_id"]: f for f in client.get("/api/v1/footprints").json()}
    assert {row["product_id"] for row in rows} == set(api)
    for row in rows:
        fp = api[row["product_id"]]
        for key in ("kgco2e_per_unit_market", "kgco2e_per_battery_kwh_eu", "kgco2e_per_battery_kwh_market",
                    "pcf_kgco2e_per_unit_market"):
            assert float(row[key]) == pytest.approx(fp[key]), key
        assert row["dataset_version"] == "2022"


def test_battery_report_is_the_records_battery_figures(client: TestClient) -> None:
    body = client.get("/api/v1/reports/battery").json()
    api = {f["product_id"]: f for f in client.get("/api/v1/footprints").json()}
    assert {b["product_id"]: b["battery_kwh_per_unit"] for b in body} == {"pack-48v-100ah": 5.12, "ess-5kwh": 5.0}
    for b in body:
        fp = api[b["product_id"]]
        for key in ("kgco2e_per_battery_kwh_eu", "kgco2e_per_battery_kwh_market", "boundary"):
            assert b[key] == fp[key], key


def test_carbon_label_shows_number_and_provenance(client: TestClient) -> None:
    r = client.get("/api/v1/reports/label/cq-battery/ess-5kwh")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    fp = client.get("/api/v1/footprints", params={"product": "ess-5kwh"}).json()[0]
    text = r.text
    assert f"{fp['kgco2e_per_unit_market']:,.3f}" in text
    for needle in ("cn-mee-regional-co2@2022 · region Southwest · co2 · pinned version",
                   "unmatched energy: grid average", "annual", "metered 80.0 %", "± 5.4 %", "kgCO2e/kWh", "碳足迹"):
        assert needle in text, needle
    assert "://" not in text.replace("label.css", "")
    assert client.get("/dashboard/label.css").status_code == 200
    assert client.get("/api/v1/reports/label/cq-battery/kettle").status_code == 404
    assert client.get("/api/v1/reports/label/nowhere/ess-5kwh").status_code == 404
