"""The v1 REST API over the fake service: shapes, windows, and 4xx for bad input."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from fastapi.testclient import TestClient

from tests.api.fake import FakeService

BEIJING = ZoneInfo("Asia/Shanghai")


def ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=BEIJING).timestamp() * 1000)


def test_health_says_ingest_is_waiting_then_live(client: TestClient, service: FakeService) -> None:
    body = client.get("/api/v1/health").json()
    assert body["status"] == "ok" and body["ingest"] == "waiting" and body["sites"] == ["cq-battery"]
    service.tick()
    body = client.get("/api/v1/health").json()
    assert body["ingest"] == "live" and body["stats"]["accepted"] == 7


def test_footprints_without_parameters_are_todays_live_footprints(client: TestClient,
                                                                   service: FakeService) -> None:
    before = len(service.calls)
    body = client.get("/api/v1/footprints").json()
    assert isinstance(body, list)
    assert [f["product_id"] for f in body] == ["pack-48v-100ah", "ess-5kwh"]
    assert all(f["site_id"] == "cq-battery" and f["window"] == "live" for f in body)
    [call] = [c for c in service.calls[before:] if c["start_ms"] == body[0]["window_start_ms"]]
    start = datetime.fromtimestamp(call["start_ms"] / 1000, BEIJING)
    assert (start.hour, start.minute, start.second) == (0, 0, 0)  # local midnight, Beijing time
    assert 0 < call["end_ms"] - call["start_ms"] <= 86_400_000


def test_calendar_windows_are_local(client: TestClient, service: FakeService) -> None:
    at = ms(2025, 3, 14, 9, 30)
    cases = {"hour": (ms(2025, 3, 14, 9), ms(2025, 3, 14, 10)),
             "shift": (ms(2025, 3, 14, 8), ms(2025, 3, 14, 16)),
             "day": (ms(2025, 3, 14), ms(2025, 3, 15)),
             "month": (ms(2025, 3, 1), ms(2025, 4, 1)),
             "year": (ms(2025, 1, 1), ms(2026, 1, 1))}
    for window, (start, end) in cases.items():
        before = len(service.calls)
        r = client.get("/api/v1/footprints", params={"window": window, "start": str(at),
                                                     "product": "ess-5kwh"})
        assert r.status_code == 200, r.text
        # Among the calls the request made (the PACT host's background scan may call too).
        assert (start, end) in {(c["start_ms"], c["end_ms"]) for c in service.calls[before:]}, window
        assert [f["product_id"] for f in r.json()] == ["ess-5kwh"]


def test_december_month_window_ends_in_january(client: TestClient, service: FakeService) -> None:
    before = len(service.calls)
    client.get("/api/v1/footprints", params={"window": "month", "start": "2024-12-31T23:00:00+08:00"})
    assert (ms(2024, 12, 1), ms(2025, 1, 1)) in {(c["start_ms"], c["end_ms"]) for c in service.calls[before:]}


def test_explicit_period_in_iso_8601(client: TestClient, service: FakeService) -> None:
    before = len(service.calls)
    r = client.get("/api/v1/footprints", params={"start": "2025-03-14T00:00:00+08:00",
                                                 "end": "2025-03-14T12:00:00Z"})
    assert r.status_code == 200
    assert (ms(2025, 3, 14), ms(2025, 3, 14, 20)) in {(c["start_ms"], c["end_ms"]) for c in service.calls[before:]}


def test_bad_inputs_are_4xx_with_the_fix(client: TestClient) -> None:
    cases = [({"site": "nowhere"}, 404, "known sites: cq-battery"),
             ({"product": "kettle"}, 404, "known products"),
             ({"window": "fortnight"}, 422, ""),
             ({"start": "yesterday"}, 422, "ISO 8601"),
             ({"start": "2025-03-14T00:00:00"}, 422, "UTC offset"),
             ({"start": "99999999999999999"}, 422, "outside"),
             ({"start": "1741900000000", "end": "1741800000000"}, 422, "must be after"),
             ({"end": "1741800000000"}, 422, "needs start"),
             ({"window": "day", "start": "1741800000000", "end": "1741900000000"}, 422, "not all three")]
    for params, status, words in cases:
        r = client.get("/api/v1/footprints", params=params)
        assert r.status_code == status, (params, r.text)
        assert words in str(r.json()["detail"]), (params, r.text)


def test_batch_footprints(client: TestClient, service: FakeService) -> None:
    before = len(service.calls)
    r = client.get("/api/v1/footprints/batches/20260101")
    assert r.status_code == 200 and {(f["batch_id"], f["product_id"]) for f in r.json()} == {
        ("20260101", "pack-48v-100ah")}  # only the line that ran it
    assert "20260101" in {c["batch_id"] for c in service.calls[before:]}
    assert client.get("/api/v1/footprints/batches/20260102").status_code == 404
    assert client.get("/api/v1/footprints/batches/B-001").status_code == 404  # PLC registers hold numbers


def test_sites_products_meters_series(client: TestClient) -> None:
    site = client.get("/api/v1/sites").json()[0]
    assert site["id"] == "cq-battery" and site["timezone"] == "Asia/Shanghai"
    assert "host" not in site["meters"][0]  # deployment details stay private
    products = client.get("/api/v1/products").json()
    assert {p["id"]: p["declared_unit_kwh"] for p in products} == {"pack-48v-100ah": 5.12, "ess-5kwh": 5.0}
    meters = client.get("/api/v1/meters", params={"site": "cq-battery"}).json()
    assert len(meters) == 7 and meters[0]["last_quality"] == "good"
    assert client.get("/api/v1/meters", params={"site": "x"}).status_code == 404
    hours = client.get("/api/v1/sites/cq-battery/series", params={"window": "day"}).json()
    assert hours and "consumption_kwh" in hours[0]
    assert client.get("/api/v1/sites/nope/series").status_code == 404


def test_nan_from_the_engine_is_null_not_500(client: TestClient, service: FakeService) -> None:
    original = service.footprints

    def no_units(*args, **kwargs):
        return [{**fp, "units": 0.0, "kgco2e_per_unit_location": float("nan")}
                for fp in original(*args, **kwargs)]

    service.footprints = no_units
    r = client.get("/api/v1/footprints")
    assert r.status_code == 200 and r.json()[0]["kgco2e_per_unit_location"] is None


def test_dashboard_is_served_self_contained(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "碳迹" in page.text and "Tanji" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "://" not in page.text  # nothing loaded from another host
    for asset in ("/dashboard/app.js", "/dashboard/app.css"):
        assert client.get(asset).status_code == 200
