"""Green-power contracts over HTTP and the technology names, on the real AccountingService.

One incomer draws 750 kW for two hours (1,500 kWh) into one line and product, with the default
lifecycle dataset (cn-electricity-carbon-footprint 2023: grid 0.6205 kgCO2e/kWh, wind_onshore
0.011, no residual mix), annual matching. A contract delivering 600 kWh of onshore wind in the
month covers 600 kWh at 0.011 and leaves 900 kWh at the grid factor: 565.05 kgCO2e by hand.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from accounting.api import create_app
from accounting.service import AccountingService
from accounting.store.checkpoints import CheckpointStore
from accounting.store.sqlite import SqliteStore
from tanji.site import load_site
from tests.ingest.traffic import HOUR_MS, Publisher, hour_start, plant_batches, wait_until

TOKEN = "contracts-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
KW = 750.0
GRID = 0.6205
WIND = 0.011
SITE = (Path(__file__).resolve().parents[2] / "tests" / "core" / "testcases" / "minimal-site.yaml").read_text()


@pytest.fixture
def client(tmp_path: Path, mosquitto) -> Iterator[tuple[TestClient, AccountingService, int]]:
    path = tmp_path / "site.yaml"
    path.write_text(SITE)
    site = load_site(path)
    service = AccountingService([site], SqliteStore(tmp_path / "tanji.sqlite"), broker_host=mosquitto.host,
                                broker_port=mosquitto.port, checkpoints=CheckpointStore(tmp_path / "cp.sqlite"))
    service.start()
    t0 = hour_start(int(time.time() * 1000)) - 2 * HOUR_MS
    batches = plant_batches(site, start_ms=t0, step_ms=60_000, polls=121, kw=KW)
    publisher = Publisher(mosquitto.host, mosquitto.port, client_id="contracts-pub")
    publisher.publish_all(batches)
    publisher.client.disconnect()
    assert wait_until(lambda: service.stats.accepted == sum(b.readings for b in batches), 30), service.stats
    try:
        with TestClient(create_app(service, api_token=TOKEN)) as c:
            yield c, service, t0
    finally:
        service.stop()


def footprint(client: TestClient, t0: int) -> dict:
    r = client.get("/api/v1/footprints", params={"start": str(t0), "end": str(t0 + 2 * HOUR_MS)})
    assert r.status_code == 200, r.text
    [fp] = r.json()
    return fp


@pytest.mark.timeout(120)
def test_a_contract_held_over_http_covers_its_energy(client):
    c, service, t0 = client
    month = time.strftime("%Y-%m", time.gmtime(t0 / 1000 + 8 * 3600))
    assert footprint(c, t0)["kgco2e_market"] == pytest.approx(1500 * GRID)

    # The names a certificate or contract may carry are listed, with their factors.
    [techs] = c.get("/api/v1/technologies").json()
    assert techs["dataset_id"] == "cn-electricity-carbon-footprint" and techs["kgco2e_per_kwh"]["wind_onshore"] == WIND
    assert "wind" not in techs["kgco2e_per_kwh"]

    contract = {"contract_id": "PPA-2025-01", "site_id": "e2e-site", "technology": "wind_onshore",
                "province": "Sichuan", "granularity": "monthly", "deliveries": [[month, 600.0]],
                "bundled_gec_serials": []}
    assert c.post("/api/v1/contracts", json=contract).status_code == 401
    # A name the dataset does not know is refused, and the error says which ones it does.
    wrong = c.post("/api/v1/contracts", json={**contract, "technology": "wind"}, headers=AUTH)
    assert wrong.status_code == 422
    assert "did you mean 'wind_offshore' or 'wind_onshore'" in wrong.json()["detail"]
    assert "GET /api/v1/technologies" in wrong.json()["detail"]
    bad_period = c.post("/api/v1/contracts", json={**contract, "deliveries": [[0, 600.0]]}, headers=AUTH)
    assert bad_period.status_code == 422 and "YYYY-MM" in bad_period.text

    r = c.post("/api/v1/contracts", json=contract, headers=AUTH)
    assert r.status_code == 201, r.text
    assert r.json()["contract_id"] == "PPA-2025-01"
    fp = footprint(c, t0)
    assert fp["covered_contract_kwh"] == pytest.approx(600.0)
    assert fp["kgco2e_market"] == pytest.approx(900 * GRID + 600 * WIND)  # 565.05
    assert fp["kgco2e_location"] == pytest.approx(1500 * GRID)
    again = c.post("/api/v1/contracts", json=contract, headers=AUTH)
    assert again.status_code == 422 and "already held" in again.json()["detail"]
    assert [x["contract_id"] for x in c.get("/api/v1/contracts", params={"site": "e2e-site"}).json()] == ["PPA-2025-01"]
    assert c.get("/api/v1/contracts", params={"site": "nowhere"}).status_code == 404

    # A certificate with the name the API examples used to show gets the same help.
    cert = {"serial": "GEC-C-1", "site_id": "e2e-site", "generation_month": month, "technology": "wind",
            "province": "Sichuan"}
    refused = c.post("/api/v1/certificates", json=cert, headers=AUTH)
    assert refused.status_code == 422 and "wind_onshore" in refused.json()["detail"]
