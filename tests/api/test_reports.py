"""Reports: CSV, EU battery declared unit and the carbon label show the same numbers as the API."""

from __future__ import annotations

import csv
import io
from datetime import datetime
from zoneinfo import ZoneInfo

from fastapi.testclient import TestClient

from accounting.api.reports import PERCENT_FIELDS, RECORD_FIELDS, TIME_FIELDS, csv_decimals


def test_csv_is_for_spreadsheets_and_carries_the_apis_numbers(client: TestClient) -> None:
    """Local times, product names, percentages and rounded figures (the issue found epoch
    milliseconds, fractions, 17-digit values and no names); every number is the API's, rounded."""
    r = client.get("/api/v1/reports/footprints.csv", params={"window": "day"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert r.content.startswith("\ufeff".encode())  # Excel reads the Chinese names as UTF-8
    rows = list(csv.DictReader(io.StringIO(r.content.decode("utf-8-sig"))))
    api = {f["product_id"]: f for f in client.get("/api/v1/footprints", params={"window": "day"}).json()}
    assert {row["product_id"] for row in rows} == set(api)
    assert {row["product_id"]: row["product_name"] for row in rows} == {
        "pack-48v-100ah": "48 V 100 Ah LFP module pack", "ess-5kwh": "5 kWh home-storage pack"}
    tz = ZoneInfo("Asia/Shanghai")
    for row in rows:
        fp = api[row["product_id"]]
        assert row["timezone"] == "Asia/Shanghai" and "window_start_ms" not in row
        assert row["window_start_local"] == datetime.fromtimestamp(fp["window_start_ms"] / 1000, tz).strftime("%Y-%m-%d %H:%M")
        assert row["window_start_local"].endswith("00:00")  # the local day starts at local midnight
        for field in RECORD_FIELDS:
            if field in ("site_id", "product_id", *TIME_FIELDS) or not isinstance(fp.get(field), float):
                continue
            column = field + "_pct" if field in PERCENT_FIELDS else field
            text = row[column]
            digits = csv_decimals(field)
            assert len(text.partition(".")[2]) == digits, (column, text)
            expected = 100 * fp[field] if field in PERCENT_FIELDS else fp[field]
            assert float(text) == round(expected, digits), column
        assert row["share_metered_pct"] == "80.00" and row["dataset_version"] == "2022"
        assert row["provisional"] in ("true", "false")


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
