"""PACT v3: client-credentials tokens, ListFootprints / GetFootprint, v3 schema of the response."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from fastapi.testclient import TestClient

from tests.api.fake import FakeService

SCHEMA = json.loads((Path(__file__).parent / "pact_v3_schema.json").read_text())


def token(client: TestClient, **kwargs) -> str:
    r = client.post("/auth/token", data={"grant_type": "client_credentials"}, **kwargs)
    assert r.status_code == 200, r.text
    assert r.json()["token_type"] == "Bearer" and r.json()["expires_in"] > 0
    return r.json()["access_token"]


@pytest.fixture
def bearer(client: TestClient) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(client, auth=('demo', 'demo'))}"}


def test_token_by_basic_auth_or_form_fields(client: TestClient) -> None:
    assert token(client, auth=("demo", "demo"))
    r = client.post("/auth/token", data={"grant_type": "client_credentials", "client_id": "demo",
                                         "client_secret": "demo"})
    assert r.status_code == 200


@pytest.mark.parametrize(("data", "auth", "status", "error"), [
    ({"grant_type": "client_credentials"}, ("demo", "wrong"), 401, "invalid_client"),
    ({"grant_type": "client_credentials"}, ("nobody", "demo"), 401, "invalid_client"),
    ({"grant_type": "client_credentials"}, None, 401, "invalid_client"),
    ({"grant_type": "password"}, ("demo", "demo"), 400, "unsupported_grant_type"),
    ({}, ("demo", "demo"), 400, "unsupported_grant_type"),
])
def test_bad_credentials_are_refused(client: TestClient, data, auth, status, error) -> None:
    r = client.post("/auth/token", data=data, auth=auth)
    assert r.status_code == status and r.json()["error"] == error


def test_footprints_need_a_valid_token(client: TestClient) -> None:
    for headers in ({}, {"Authorization": "Bearer invalid-access-token"}, {"Authorization": "Basic x"}):
        r = client.get("/3/footprints", headers=headers)
        assert r.status_code == 400 and r.json()["code"] == "BadRequest", headers


def test_list_is_valid_v3_and_built_from_the_engine_numbers(client: TestClient, bearer: dict) -> None:
    r = client.get("/3/footprints", headers=bearer)
    assert r.status_code == 200
    data = r.json()["data"]
    assert len(data) == 4  # 2 products × (current month, previous month)
    for pf in data:
        jsonschema.validate(pf, SCHEMA)
    current = [pf for pf in data if pf["productIds"] == ["urn:tanji:product:cq-battery:ess-5kwh"]][0]
    tanji = current["extensions"][0]["data"]
    # ess-5kwh declares 5 kWh of battery energy: the PACT declared unit is the kWh.
    assert current["pcf"]["declaredUnitOfMeasurement"] == "kilowatt hour"
    assert current["pcf"]["declaredUnitAmount"] == "5"
    assert float(current["pcf"]["pcfExcludingBiogenicUptake"]) == pytest.approx(
        tanji["kgco2e_per_unit_market"] / 5.0, abs=1e-6)
    assert current["pcf"]["productMassPerDeclaredUnit"] == "11"  # 55 kg / 5 kWh
    assert current["pcf"]["geographyCountry"] == "CN"


def test_ids_are_stable_and_get_footprint_finds_them(client: TestClient, bearer: dict,
                                                      service: FakeService) -> None:
    first = client.get("/3/footprints", headers=bearer).json()["data"]
    service.tick()
    again = client.get("/3/footprints", headers=bearer).json()["data"]
    assert [pf["id"] for pf in first] == [pf["id"] for pf in again]
    one = client.get(f"/3/footprints/{first[0]['id']}", headers=bearer)
    assert one.status_code == 200
    jsonschema.validate(one.json()["data"], SCHEMA)
    missing = client.get("/3/footprints/non-existent-id", headers=bearer)
    assert missing.status_code == 404 and missing.json()["code"] == "NoSuchFootprint"


def test_pagination_follows_the_link_header(client: TestClient, bearer: dict) -> None:
    seen, url = [], "/3/footprints?limit=3"
    while url:
        r = client.get(url, headers=bearer)
        seen += [pf["id"] for pf in r.json()["data"]]
        link = r.headers.get("link")
        url = link.split(">")[0].lstrip("<").replace("http://testserver", "") if link else None
    assert len(seen) == len(set(seen)) == 4


def test_product_filter(client: TestClient, bearer: dict) -> None:
    r = client.get("/3/footprints", headers=bearer, params={"productId": "pack-48v-100ah"})
    assert {pf["productNameCompany"] for pf in r.json()["data"]} == {"48 V 100 Ah LFP module pack"}
