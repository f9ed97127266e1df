"""Write endpoints: bearer token required, inputs validated, ledger rules surfaced as 4xx."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from accounting.api import create_app
from tests.api.conftest import API_TOKEN
from tests.api.fake import FakeService

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
CERT = {"serial": "GEC-2025-0001", "site_id": "cq-battery", "generation_month": "2025-01",
        "technology": "wind", "province": "Sichuan"}
DATASET = json.loads((Path(__file__).resolve().parents[2] / "accounting" / "factors" / "data"
                      / "cn-mee-national-co2-2022.json").read_text())


@pytest.mark.parametrize(("path", "body"), [("/api/v1/certificates", CERT),
                                            ("/api/v1/factor-datasets", {**DATASET, "version": "2022-r1"}),
                                            ("/api/v1/recompute", {"site_id": "cq-battery", "start": "0",
                                                                   "end": "1"})])
def test_writes_need_the_token(client: TestClient, path: str, body: dict) -> None:
    assert client.post(path, json=body).status_code == 401
    r = client.post(path, json=body, headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401 and "not this server's" in r.json()["detail"]


def test_writes_are_refused_when_the_server_has_no_token(service: FakeService) -> None:
    with TestClient(create_app(service)) as c:
        r = c.post("/api/v1/certificates", json=CERT, headers=AUTH)
        assert r.status_code == 403 and "API token" in r.json()["detail"]


def test_certificate_serial_is_claimed_once(client: TestClient) -> None:
    assert client.post("/api/v1/certificates", json=CERT, headers=AUTH).status_code == 201
    again = client.post("/api/v1/certificates", json=CERT, headers=AUTH)
    assert again.status_code == 409 and "already claimed" in again.json()["detail"]
    assert [c["serial"] for c in client.get("/api/v1/certificates").json()] == ["GEC-2025-0001"]


@pytest.mark.parametrize(("change", "words"), [({"generation_month": "2025-13"}, "YYYY-MM"),
                                               ({"serial": ""}, "at least 1"),
                                               ({"site_id": "elsewhere"}, "no site")])
def test_bad_certificates_are_4xx(client: TestClient, change: dict, words: str) -> None:
    r = client.post("/api/v1/certificates", json={**CERT, **change}, headers=AUTH)
    assert r.status_code in (404, 422) and words in json.dumps(r.json()), r.text


def test_factor_dataset_versions_are_append_only(client: TestClient) -> None:
    new = {**DATASET, "version": "2022-r1"}
    r = client.post("/api/v1/factor-datasets", json=new, headers=AUTH)
    assert r.status_code == 201
    assert ("cn-mee-national-co2", "2022-r1") in {(d["dataset_id"], d["version"])
                                                  for d in client.get("/api/v1/factor-datasets").json()}
    assert client.post("/api/v1/factor-datasets", json=new, headers=AUTH).status_code == 422
    bad = client.post("/api/v1/factor-datasets", json={**new, "version": "x", "gas_basis": "ch4"}, headers=AUTH)
    assert bad.status_code == 422


def test_recompute_validates_its_period(client: TestClient) -> None:
    ok = client.post("/api/v1/recompute", headers=AUTH,
                     json={"site_id": "cq-battery", "start": "2025-03-01T00:00:00+08:00",
                           "end": "2025-04-01T00:00:00+08:00", "dataset_version": "2022"})
    assert ok.status_code == 200 and ok.json()["revision"] == 1
    backwards = client.post("/api/v1/recompute", headers=AUTH,
                            json={"site_id": "cq-battery", "start": "2025-04-01T00:00:00+08:00",
                                  "end": "2025-03-01T00:00:00+08:00"})
    assert backwards.status_code == 422 and "after start" in backwards.json()["detail"]


def test_without_service_support_reference_data_answers_501() -> None:
    """A service offering only the read interface: the API says what it lacks (it used to list
    the process-wide factor registry and reach into engines instead; the service protocol is
    now the API's only way to the data)."""

    class ReadOnly(FakeService):
        factor_datasets = add_factor_dataset = certificates = add_certificate = recompute = None

    with TestClient(create_app(ReadOnly(), api_token=API_TOKEN)) as c:
        listed = c.get("/api/v1/factor-datasets")
        assert listed.status_code == 501 and "no factor dataset catalogue" in listed.json()["detail"]
        held = c.get("/api/v1/certificates")
        assert held.status_code == 501 and "no certificate ledger" in held.json()["detail"]
        assert c.post("/api/v1/certificates", json=CERT, headers=AUTH).status_code == 501
        r = c.post("/api/v1/recompute", headers=AUTH, json={"site_id": "cq-battery", "start": "0", "end": "1"})
        assert r.status_code == 422  # 0 is before 2000: validated before asking the service
