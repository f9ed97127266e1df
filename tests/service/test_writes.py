"""Write endpoints on the real AccountingService: real Mosquitto, SQLite store, the real HTTP app.

A tiny plant whose numbers are checkable by hand: one incomer drawing 750 kW for two hours
(1 500 kWh), one production line and product taking the whole remainder, factor dataset
cn-mee-regional-co2@2022 (Southwest 0.2268 kgCO2/kWh, CO2 basis: covered energy counts 0, no
residual mix: uncovered energy at the location factor), annual matching.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from accounting.api import create_app
from accounting.service import AccountingService
from accounting.store.checkpoints import CheckpointStore
from accounting.store.sqlite import SqliteStore
from tanji.site import Site, load_site
from tests.ingest.traffic import HOUR_MS, Publisher, hour_start, plant_batches, wait_until

TOKEN = "service-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
KW = 750.0
ENERGY_KWH = 2 * KW  # two hours
SW_2022 = 0.2268

SITE_YAML = """
site:
  id: {id}
  name: Test plant {id}
  province: Chongqing
  timezone: Asia/Shanghai
  matching_mode: annual
  factor_dataset: cn-mee-regional-co2@2022
  remainder_key: units
broker: {{host: 127.0.0.1, port: 1883}}
gateways:
  - id: gw-{id}
    spool_path: /tmp/unused-{id}.sqlite
    meters:
      - {{id: incomer, role: grid_import, profile: eastron-sdm630, host: 127.0.0.1, port: 5020, unit_id: 1, ct_ratio: 40, poll_period_s: 60}}
      - {{id: plc-a, role: production_counter, cost_centre: line-a, profile: generic-plc-counter, host: 127.0.0.1, port: 5021, unit_id: 1, poll_period_s: 60}}
cost_centres:
  - {{id: line-a, kind: production, name: Line A}}
products:
  - {{id: widget, name: Widget, cost_centre: line-a, counter: {{meter: plc-a, channel: units_total}}}}
"""


def _site(tmp: Path, site_id: str) -> Site:
    path = tmp / f"{site_id}.yaml"
    path.write_text(SITE_YAML.format(id=site_id))
    return load_site(path)


class Plant:
    """Service + app over a state directory; `restart()` stops and builds both again."""

    def __init__(self, tmp: Path, mosquitto) -> None:
        self.tmp, self.mosquitto = tmp, mosquitto
        self.sites = [_site(tmp, "t-plant"), _site(tmp, "t-other")]
        self.service: AccountingService | None = None
        self.client: TestClient | None = None

    def start(self) -> None:
        self.service = AccountingService(self.sites, SqliteStore(self.tmp / "tanji.sqlite"),
                                         broker_host=self.mosquitto.host, broker_port=self.mosquitto.port,
                                         checkpoints=CheckpointStore(self.tmp / "checkpoints.sqlite"))
        self.service.start()
        assert self.service.wait_connected()
        self.client = TestClient(create_app(self.service, api_token=TOKEN))
        self.client.__enter__()

    def stop(self) -> None:
        if self.client is not None:
            self.client.__exit__(None, None, None)
        if self.service is not None:
            self.service.stop()
        self.client = self.service = None


@pytest.fixture
def plant(tmp_path: Path, mosquitto) -> Iterator[tuple[Plant, int]]:
    p = Plant(tmp_path, mosquitto)
    p.start()
    t0 = hour_start(int(time.time() * 1000)) - 2 * HOUR_MS
    batches = plant_batches(p.sites[0], start_ms=t0, step_ms=60_000, polls=121, kw=KW)
    publisher = Publisher(mosquitto.host, mosquitto.port, client_id="service-writes-pub")
    publisher.publish_all(batches)
    publisher.close()
    expected = sum(b.readings for b in batches)
    assert wait_until(lambda: p.service.stats.accepted == expected, 30), p.service.stats
    try:
        yield p, t0
    finally:
        p.stop()


def _footprint(p: Plant, t0: int) -> dict:
    r = p.client.get("/api/v1/footprints", params={"site": "t-plant", "start": str(t0), "end": str(t0 + 2 * HOUR_MS)})
    assert r.status_code == 200, r.text
    [fp] = r.json()
    return fp


def _month(ms: int) -> str:
    return time.strftime("%Y-%m", time.gmtime(ms / 1000 + 8 * 3600))


def _dataset(version: str, factor: float) -> dict:
    doc = json.loads((Path(__file__).resolve().parents[2] / "accounting" / "factors" / "data"
                      / "cn-mee-regional-co2-2022.json").read_text())
    return {**doc, "version": version, "factors": {**doc["factors"], "Southwest": {"2022": factor}}}


@pytest.mark.timeout(90)
def test_certificates_datasets_and_recompute_on_the_real_service(plant) -> None:
    p, t0 = plant
    before = _footprint(p, t0)
    assert before["energy_kwh"] == pytest.approx(ENERGY_KWH)
    assert before["kgco2e_location"] == pytest.approx(ENERGY_KWH * SW_2022)  # 340.2
    assert before["kgco2e_market"] == pytest.approx(ENERGY_KWH * SW_2022)  # nothing covered yet

    cert = {"serial": "GEC-T-0001", "site_id": "t-plant", "generation_month": _month(t0),
            "technology": "wind", "province": "Sichuan"}
    assert p.client.post("/api/v1/certificates", json=cert).status_code == 401
    assert p.client.post("/api/v1/certificates", json=cert,
                         headers={"Authorization": "Bearer wrong"}).status_code == 401
    r = p.client.post("/api/v1/certificates", json=cert, headers=AUTH)
    assert r.status_code == 201, r.text
    after = _footprint(p, t0)
    # 1 GEC = 1 000 kWh covered at 0 (CO2 basis); the other 500 kWh at the location factor.
    assert after["kgco2e_market"] == pytest.approx((ENERGY_KWH - 1000.0) * SW_2022)  # 113.4
    assert after["kgco2e_location"] == pytest.approx(before["kgco2e_location"])
    assert after["covered_gec_kwh"] == pytest.approx(1000.0)
    again = p.client.post("/api/v1/certificates", json=cert, headers=AUTH)
    assert again.status_code == 409 and "already claimed" in again.json()["detail"]
    elsewhere = p.client.post("/api/v1/certificates", json={**cert, "site_id": "t-other"}, headers=AUTH)
    assert elsewhere.status_code == 409 and "site:t-plant" in elsewhere.json()["detail"]
    bad = p.client.post("/api/v1/certificates", json={**cert, "serial": "GEC-T-2", "earmark": "nope"},
                        headers=AUTH)
    assert bad.status_code == 422 and "earmark" in bad.json()["detail"]
    assert [c["serial"] for c in p.client.get("/api/v1/certificates", params={"site": "t-plant"}).json()] == \
        ["GEC-T-0001"]
    assert p.client.get("/api/v1/certificates", params={"site": "t-other"}).json() == []

    # A new factor dataset version: listed, append-only, not used live.
    new = _dataset("2022-t", 0.5)
    assert p.client.post("/api/v1/factor-datasets", json=new).status_code == 401
    r = p.client.post("/api/v1/factor-datasets", json=new, headers=AUTH)
    assert r.status_code == 201, r.text
    listed = {(d["dataset_id"], d["version"]): d for d in p.client.get("/api/v1/factor-datasets").json()}
    assert listed[("cn-mee-regional-co2", "2022-t")]["origin"] == "loaded"
    assert listed[("cn-mee-regional-co2", "2022")]["in_use_by"] == ["t-other", "t-plant"]
    assert p.client.post("/api/v1/factor-datasets", json=new, headers=AUTH).status_code == 201  # same content
    conflict = p.client.post("/api/v1/factor-datasets", json=_dataset("2022-t", 0.6), headers=AUTH)
    assert conflict.status_code == 409 and "new version" in conflict.json()["detail"]
    shipped = p.client.post("/api/v1/factor-datasets", json=_dataset("2022", 0.6), headers=AUTH)
    assert shipped.status_code == 409

    # Recompute with that version: a new versioned result; the live numbers stay as they were.
    body = {"site_id": "t-plant", "start": str(t0), "end": str(t0 + 2 * HOUR_MS), "dataset_version": "2022-t"}
    assert p.client.post("/api/v1/recompute", json=body).status_code == 401
    r = p.client.post("/api/v1/recompute", json=body, headers=AUTH)
    assert r.status_code == 200, r.text
    result = r.json()
    assert (result["dataset_id"], result["dataset_version"]) == ("cn-mee-regional-co2", "2022-t")
    [fp] = result["footprints"]
    assert fp["kgco2e_location"] == pytest.approx(ENERGY_KWH * 0.5)  # 750
    assert fp["kgco2e_market"] == pytest.approx((ENERGY_KWH - 1000.0) * 0.5)  # the held GEC, reused
    assert fp["dataset_version"] == "2022-t"
    r2 = p.client.post("/api/v1/recompute", json={**body, "dataset_version": None}, headers=AUTH)
    assert r2.json()["result_version"] == result["result_version"] + 1
    assert r2.json()["footprints"][0]["kgco2e_location"] == pytest.approx(ENERGY_KWH * SW_2022)
    unknown = p.client.post("/api/v1/recompute", json={**body, "dataset_version": "1999"}, headers=AUTH)
    assert unknown.status_code == 422 and "unknown dataset" in unknown.json()["detail"]
    live = _footprint(p, t0)
    assert live["kgco2e_location"] == pytest.approx(ENERGY_KWH * SW_2022)
    assert live["kgco2e_market"] == pytest.approx((ENERGY_KWH - 1000.0) * SW_2022)
    assert live["dataset_version"] == "2022"
    assert [x["result_version"] for x in p.service.recompute_results("t-plant")] == \
        [result["result_version"], result["result_version"] + 1]

    # Restart: the claim, the loaded version and the results survive; the GEC still counts live.
    p.stop()
    p.start()
    restarted = _footprint(p, t0)
    assert restarted["kgco2e_market"] == pytest.approx((ENERGY_KWH - 1000.0) * SW_2022)
    for site_id in ("t-plant", "t-other"):
        r = p.client.post("/api/v1/certificates", json={**cert, "site_id": site_id}, headers=AUTH)
        assert r.status_code == 409, r.text
    assert ("cn-mee-regional-co2", "2022-t") in {(d["dataset_id"], d["version"])
                                                 for d in p.client.get("/api/v1/factor-datasets").json()}
    assert p.client.post("/api/v1/factor-datasets", json=_dataset("2022-t", 0.6), headers=AUTH).status_code == 409
    kept = p.service.recompute_result("t-plant", result["result_version"])
    assert kept["footprints"][0]["kgco2e_location"] == pytest.approx(ENERGY_KWH * 0.5)
    r3 = p.client.post("/api/v1/recompute", json=body, headers=AUTH)
    assert r3.json()["result_version"] == result["result_version"] + 2


def test_writes_refused_without_a_server_token(tmp_path: Path, mosquitto) -> None:
    p = Plant(tmp_path, mosquitto)
    p.service = AccountingService(p.sites, SqliteStore(tmp_path / "tanji.sqlite"),
                                  broker_host=mosquitto.host, broker_port=mosquitto.port)
    with TestClient(create_app(p.service)) as client:
        r = client.post("/api/v1/certificates", headers=AUTH,
                        json={"serial": "X-1", "site_id": "t-plant", "generation_month": "2025-01",
                              "technology": "wind", "province": "Sichuan"})
        assert r.status_code == 403
