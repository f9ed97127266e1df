"""The dashboard's read endpoints over the in-memory service: overview, history, drill-down,
alarms, and the offline API docs. The same routes against the real demo: test_dashboard_browser.py."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient

from accounting.api.dashboard import STATIC_DIR
from accounting.engine.kernels_energy import FLAG_NAMES
from tanji.quality import QUALITY_CODES
from tests.api.conftest import API_TOKEN
from tests.api.fake import FakeService

SITE = "cq-battery"


def _lines(client: TestClient, **params: str) -> dict[str, dict]:
    body = client.get(f"/api/v1/sites/{SITE}/overview", params=params).json()
    return {line["id"]: line for line in body["lines"]}


def test_overview_ranks_lines_by_carbon_rate_and_a_stopped_line_drops(client: TestClient,
                                                                        service: FakeService) -> None:
    body = client.get(f"/api/v1/sites/{SITE}/overview").json()
    ranked = body["lines"]
    rates = [line["carbon_rate_location_kg_per_h"] for line in ranked]
    assert rates == sorted(rates, reverse=True) and [line["rank"] for line in ranked] == [1, 2, 3, 4]
    factor = body["factor"]["location_kg_per_kwh"]
    for line in ranked:  # rate now = power now x the factor of the hour
        assert line["carbon_rate_location_kg_per_h"] == pytest.approx(line["power_kw"] * factor)
    before = {line["id"]: line for line in ranked}
    assert before["line-b"]["state"] == "running" and before["hvac"]["state"] is None  # a utility has no PLC
    assert before["line-b"]["rank"] < before["line-a"]["rank"]

    service.stopped.add("line-b")
    after = _lines(client)
    assert after["line-b"]["state"] == "stopped"
    assert after["line-b"]["rank"] == 4 and after["line-a"]["rank"] < before["line-a"]["rank"]


def test_a_meter_with_an_offline_alarm_does_not_count_as_now(client: TestClient, service: FakeService) -> None:
    """Online is what the service's watch says (one rule for the alarm and the screen)."""
    for meter in ("line-b-meter", "plc-b"):
        service.log.raise_alarm(SITE, "meter_offline", meter, severity="alarm", message=f"{meter} offline")
    line_b = _lines(client)["line-b"]
    assert line_b["power_kw"] is None and line_b["carbon_rate_location_kg_per_h"] is None
    assert line_b["state"] == "unknown" and line_b["meters_offline"] == ["line-b-meter", "plc-b"]
    assert line_b["rank"] == 4
    meters = {m["id"]: m for m in client.get(f"/api/v1/sites/{SITE}/lines/line-b").json()["meters"]}
    assert not meters["plc-b"]["online"] and meters["plc-b"]["last_values"]["line_running"] == 1.0


def test_overview_this_hour_is_the_products_records_summed_per_line(client: TestClient,
                                                                   service: FakeService) -> None:
    body = client.get(f"/api/v1/sites/{SITE}/overview").json()
    hour = body["hour_start_ms"]
    records = {r["product_id"]: r for r in service.footprints(SITE, start_ms=hour, end_ms=hour + 3_600_000)}
    line_b = next(line for line in body["lines"] if line["id"] == "line-b")
    ess = records["ess-5kwh"]
    assert line_b["products"] == ["ess-5kwh"]
    assert line_b["hour"]["kgco2e_per_unit_location"] == pytest.approx(ess["kgco2e_location"] / ess["units"])
    assert line_b["hour"]["kwh_per_unit"] == pytest.approx(ess["energy_kwh"] / ess["units"])
    assert line_b["baseline"]["days"] == 7  # the fake produces every hour of every day
    market = _lines(client, basis="market")
    assert [line["rank"] for line in market.values()] == [1, 2, 3, 4]
    assert market["line-b"]["carbon_rate_market_kg_per_h"] == pytest.approx(
        market["line-b"]["power_kw"] * ess["kgco2e_market"] / ess["energy_kwh"])


def test_no_residual_mix_is_information_not_an_alarm(client: TestClient) -> None:
    body = client.get(f"/api/v1/sites/{SITE}/overview").json()
    assert "no_residual_mix" in {i["kind"] for i in body["information"]}
    assert body["factor"]["uncovered_basis"] == "grid_average"
    assert not [a for a in body["alarms"] if "residual" in a["kind"]]
    assert client.get("/api/v1/alarms", params={"state": "all"}).json() == []


def test_history_buckets_are_the_services_footprints_of_each_bucket(client: TestClient,
                                                                   service: FakeService) -> None:
    yesterday = datetime.now(ZoneInfo("Asia/Shanghai")).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
    day = yesterday.isoformat()
    body = client.get(f"/api/v1/sites/{SITE}/history", params={"window": "day", "start": day}).json()
    assert body["bucket"] == "hour" and len(body["buckets"]) == 24
    first = body["buckets"][0]
    records = {r["product_id"]: r for r in service.footprints(SITE, start_ms=first["start_ms"], end_ms=first["end_ms"])}
    assert first["products"]["ess-5kwh"]["kgco2e_location"] == records["ess-5kwh"]["kgco2e_location"]
    assert first["lines"]["line-b"]["units"] == records["ess-5kwh"]["units"]
    assert first["lines"]["line-a"]["metered_kwh"] == 20.0  # the fake's hourly series
    assert first["provisional"] is False and first["location_kg_per_kwh"] == 0.2268  # a past hour is closed
    # The window's totals are what /api/v1/footprints answers for the same window.
    same = client.get("/api/v1/footprints", params={"site": SITE, "window": "day", "start": day}).json()
    assert [r["kgco2e_location"] for r in body["totals"]["products"]] == [r["kgco2e_location"] for r in same]
    month = client.get(f"/api/v1/sites/{SITE}/history", params={"window": "month", "start": day}).json()
    starts = [b["start_ms"] for b in month["buckets"]]
    assert month["bucket"] == "day" and starts[0] == int(yesterday.replace(day=1).timestamp() * 1000)
    assert {b - a for a, b in zip(starts, starts[1:], strict=False)} == {86_400_000}  # local days (no DST)
    assert len(starts) >= yesterday.day


def test_history_of_a_batch_and_the_errors(client: TestClient) -> None:
    batch = client.get(f"/api/v1/sites/{SITE}/history", params={"batch": "20260101", "bucket": "day"})
    assert batch.status_code == 200 and batch.json()["batch"]
    assert client.get(f"/api/v1/sites/{SITE}/history", params={"batch": "20260102"}).status_code == 404
    both = client.get(f"/api/v1/sites/{SITE}/history", params={"batch": "20260101", "window": "day"})
    assert both.status_code == 422
    assert client.get(f"/api/v1/sites/{SITE}/history", params={"start": "yesterday"}).status_code == 422
    too_long = client.get(f"/api/v1/sites/{SITE}/history", params={
        "start": "2025-01-01T00:00:00+08:00", "end": "2025-03-01T00:00:00+08:00", "bucket": "hour"})
    assert too_long.status_code == 422 and "bucket=day" in too_long.json()["detail"]
    assert client.get("/api/v1/sites/nowhere/history").status_code == 404


def test_line_drill_down_lists_its_meters_and_counter_events(client: TestClient, service: FakeService) -> None:
    service.log.record_change(SITE, "counter_step_back", "plc-b/units_total", "plc-b went back",
                              {"meter": "plc-b", "from": 11507, "to": 11489})
    service.log.record_change(SITE, "counter_step_back", "plc-a/units_total", "plc-a went back", {})
    body = client.get(f"/api/v1/sites/{SITE}/lines/line-b").json()
    assert [m["id"] for m in body["meters"]] == ["line-b-meter", "plc-b"]
    plc = body["meters"][1]
    assert plc["online"] is True and plc["last_values"]["line_running"] == 1.0 and plc["comm_errors"] == 0
    assert [e["subject"] for e in body["counter_events"]] == ["plc-b/units_total"]
    assert [p["product_id"] for p in body["products"]] == ["ess-5kwh"]
    assert client.get(f"/api/v1/sites/{SITE}/lines/line-z").status_code == 404


def test_product_drill_down_has_its_record_quality_and_history(client: TestClient) -> None:
    body = client.get(f"/api/v1/sites/{SITE}/products/ess-5kwh").json()
    fp = body["footprint"]
    assert fp["product_id"] == "ess-5kwh" and fp["share_metered"] == 0.8
    assert body["product"]["counter_meter"] == "plc-b"
    assert body["history"]["bucket"] == "hour" and body["history"]["buckets"]
    assert client.get(f"/api/v1/sites/{SITE}/products/nothing").status_code == 404


def test_alarms_are_acknowledged_with_the_token_and_keep_their_history(client: TestClient,
                                                                       service: FakeService) -> None:
    cond, _ = service.log.raise_alarm(SITE, "meter_offline", "air-meter", severity="alarm", message="offline")
    event, _ = service.log.raise_alarm(SITE, "counter_step_back", "plc-b/units_total", severity="warning",
                                       message="went back", latching=True)
    active = client.get("/api/v1/alarms").json()
    assert {a["id"] for a in active} == {cond, event}
    ack = {"by": "Wang Fang", "note": "PLC restarted, units checked"}
    assert client.post(f"/api/v1/alarms/{event}/acknowledge", json=ack).status_code == 401
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    done = client.post(f"/api/v1/alarms/{event}/acknowledge", json=ack, headers=headers)
    assert done.status_code == 200 and done.json()["acked_by"] == "Wang Fang" and not done.json()["active"]
    # A condition alarm stays active when acknowledged: it ends when the meter is back.
    kept = client.post(f"/api/v1/alarms/{cond}/acknowledge", json={"by": "Li"}, headers=headers).json()
    assert kept["active"] and kept["acked_by"] == "Li"
    assert [a["id"] for a in client.get("/api/v1/alarms").json()] == [cond]
    history = client.get("/api/v1/alarms", params={"state": "all"}).json()
    assert {a["id"]: a["ack_note"] for a in history}[event] == "PLC restarted, units checked"
    assert client.post("/api/v1/alarms/999/acknowledge", json=ack, headers=headers).status_code == 404
    assert client.post(f"/api/v1/alarms/{2**64}/acknowledge", json=ack, headers=headers).status_code == 422
    assert client.post(f"/api/v1/alarms/{event}/acknowledge", json={"by": ""}, headers=headers).status_code == 422


def test_changes_are_listed_newest_first(client: TestClient, service: FakeService) -> None:
    t0 = 1_750_000_000_000
    service.log.record_change(SITE, "line_stopped", "line-b", "line-b stopped", ts_ms=t0)
    service.log.record_change(SITE, "line_started", "line-b", "line-b started", ts_ms=t0 + 60_000)
    assert [c["kind"] for c in client.get("/api/v1/changes").json()] == ["line_started", "line_stopped"]
    earlier = client.get("/api/v1/changes", params={"until": str(t0 + 1)}).json()
    assert [c["kind"] for c in earlier] == ["line_stopped"]
    assert client.get("/api/v1/changes", params={"since": "soon"}).status_code == 422


def _local_refs(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"#]+)"', html)


def test_every_asset_the_pages_use_is_served_by_the_app(client: TestClient) -> None:
    """No CDN: every script, stylesheet and link of the dashboard and /docs is a path of this app."""
    for page in ("/", "/docs"):
        response = client.get(page)
        assert response.status_code == 200
        assert "default-src 'self'" in response.headers["content-security-policy"]
        for ref in _local_refs(response.text):
            assert ref.startswith("/"), f"{page} loads {ref} from elsewhere"
            if ref.startswith("/api/"):
                continue
            assert client.get(ref).status_code == 200, ref
    # The chart library is loaded by charts.js when a chart is first shown.
    charts = (Path(STATIC_DIR) / "charts.js").read_text()
    [library] = re.findall(r'script\.src = "([^"]+)"', charts)
    assert client.get(library).status_code == 200
    docs = client.get("/docs").text
    assert "<script>" not in docs.replace('<script src=', ''), "inline scripts are blocked by the CSP"
    assert client.get("/openapi.json").json()["paths"]


def test_vendored_files_are_the_pinned_npm_files_with_their_licences() -> None:
    vendor = STATIC_DIR / "vendor"
    manifest = json.loads((vendor / "manifest.json").read_text())
    assert set(manifest["packages"]) == {"echarts", "swagger-ui"}
    for name, package in manifest["packages"].items():
        assert package["license"] == "Apache-2.0" and package["version"]
        assert "LICENSE" in package["files"]
        for target, entry in package["files"].items():
            assert hashlib.sha256((vendor / name / target).read_bytes()).hexdigest() == entry["sha256"], target
    served = {p.relative_to(vendor).as_posix() for p in vendor.rglob("*") if p.is_file()}
    listed = {f"{n}/{t}" for n, p in manifest["packages"].items() for t in p["files"]} | {"manifest.json"}
    assert served == listed


def test_the_dashboard_texts_exist_in_both_languages() -> None:
    text = (Path(STATIC_DIR) / "i18n.js").read_text()
    zh = set(re.findall(r'"([a-z0-9_.]+[a-z0-9_])":', text.split("en: {")[0]))
    en = set(re.findall(r'"([a-z0-9_.]+[a-z0-9_])":', text.split("en: {")[1]))
    assert zh == en, sorted(zh ^ en)
    used = set(re.findall(r'data-i18n(?:-title)?="([^"]+)"', (Path(STATIC_DIR) / "index.html").read_text()))
    assert used <= en, sorted(used - en)
    assert {f"qcode.{q}" for q in QUALITY_CODES} <= en  # every reading quality the wire carries
    assert {f"flag.{name}" for name in FLAG_NAMES.values()} <= en  # every flag of the energy step


def test_the_docs_screenshots_exist_and_are_linked() -> None:
    """docs/dashboard.md links every screenshot the browser test writes to docs/img, and each exists."""
    docs = Path(__file__).resolve().parents[2] / "docs"
    linked = set(re.findall(r"\(img/([\w.-]+\.png)\)", (docs / "dashboard.md").read_text()))
    shot = {p.name for p in (docs / "img").glob("*.png")}
    assert linked and linked <= shot, sorted(linked - shot)
    for view in ("overview", "history", "alarms", "line", "product"):
        for size in ("desktop", "phone"):
            for lang in ("zh", "en"):
                assert f"dashboard-{view}-{size}-{lang}.png" in linked
