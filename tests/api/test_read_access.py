"""Read protection (accounting.api.read_access) and the start-up gate (accounting.api.starting).

With a read token every read needs it (Bearer, or HTTP Basic with the token as password, which
is how a browser sends it), the API token reads too, and the probes and PACT stay open.
While the service restores its engines, data routes answer 503 and the probes still answer.
"""

from __future__ import annotations

import base64

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from accounting.api import create_app
from tests.api.fake import FakeService

READ = "read-token-0123456789abcdef"
WRITE = "write-token-0123456789abcdef"
READS = ["/", "/dashboard/app.js", "/api/v1/footprints", "/api/v1/meters", "/api/v1/sites",
         "/api/v1/reports/footprints.csv", "/docs", "/openapi.json", "/api/v1/certificates"]


def basic(password: str, user: str = "operator") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture
def protected() -> TestClient:
    with TestClient(create_app(FakeService(), api_token=WRITE, read_token=READ,
                               pact_clients={"partner": "partner-secret-0123456789"}),
                    base_url="https://testserver") as c:  # PACT answers over HTTPS only
        yield c


@pytest.mark.parametrize("path", READS)
def test_every_read_needs_the_token(protected, path):
    refused = protected.get(path)
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].startswith('Basic realm="Tanji"')  # a browser asks for it
    assert protected.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert protected.get(path, headers=basic("wrong")).status_code == 401
    for headers in ({"Authorization": f"Bearer {READ}"}, basic(READ), basic(READ, user=""),
                    {"Authorization": f"Bearer {WRITE}"}):
        assert protected.get(path, headers=headers).status_code == 200, (path, headers)


def test_the_read_token_does_not_write(protected):
    cert = {"serial": "GEC-R-1", "site_id": "cq-battery", "generation_month": "2025-01",
            "technology": "hydro", "province": "Sichuan"}
    assert protected.post("/api/v1/certificates", json=cert,
                          headers={"Authorization": f"Bearer {READ}"}).status_code == 401
    assert protected.post("/api/v1/certificates", json=cert,
                          headers={"Authorization": f"Bearer {WRITE}"}).status_code == 201


def test_the_live_stream_needs_the_token(protected):
    with pytest.raises(WebSocketDisconnect) as closed, protected.websocket_connect("/api/v1/stream") as ws:
        ws.receive_json()
    assert closed.value.code == 1008
    with protected.websocket_connect("/api/v1/stream", headers=basic(READ)) as ws:
        assert ws.receive_json()["type"] in ("footprints", "meters")


def test_probes_and_pact_stay_open(protected):
    assert protected.get("/api/v1/health").status_code == 200
    assert protected.get("/api/v1/ready").status_code == 200
    token = protected.post("/auth/token", data={"grant_type": "client_credentials"},
                           auth=("partner", "partner-secret-0123456789"))
    assert token.status_code == 200, token.text
    listed = protected.get("/3/footprints", headers={"Authorization": f"Bearer {token.json()['access_token']}"})
    assert listed.status_code == 200


def test_without_a_read_token_reads_are_open():
    with TestClient(create_app(FakeService(), api_token=WRITE)) as c:
        assert c.get("/api/v1/footprints").status_code == 200


class Starting(FakeService):
    """A service still restoring its engines: reads would fail, so they must not be reached."""

    state = {"ready": False, "starting": True, "restored": False, "subscribed": False, "caught_up": False,
             "in_flight_messages": 0, "reasons": ["restoring the engines from the checkpoints and the store"]}

    def readiness(self) -> dict:
        return dict(self.state)

    def footprints(self, *args, **kwargs):  # noqa: ANN002, ANN003
        if not self.state["restored"]:
            raise AssertionError("footprints asked before the engines were restored")
        return super().footprints(*args, **kwargs)


def test_data_routes_answer_503_while_the_service_restores():
    service = Starting()
    with TestClient(create_app(service)) as c:
        assert c.get("/api/v1/health").status_code == 200
        ready = c.get("/api/v1/ready")
        assert ready.status_code == 503 and ready.json()["reasons"][0].startswith("restoring")
        starting = c.get("/api/v1/footprints")
        assert starting.status_code == 503 and starting.headers["retry-after"] == "5"
        assert c.get("/").status_code == 200  # the dashboard page loads, and retries its data
        service.state = {**service.state, "starting": False, "restored": True, "subscribed": True,
                         "caught_up": True, "ready": True, "reasons": []}
        assert c.get("/api/v1/footprints").status_code == 200
        assert c.get("/api/v1/ready").status_code == 200
