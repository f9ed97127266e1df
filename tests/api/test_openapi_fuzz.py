"""Schemathesis against the published OpenAPI spec: no generated input may cause a 5xx.

Requests carry valid credentials (the API token on /api/v1, a PACT token on /3), so the
generated inputs reach the validation and the service rather than stopping at the auth check.
The SSE stream is left out: it never ends by design (the WebSocket is tested in test_stream).
"""

from __future__ import annotations

import hypothesis
import schemathesis
from fastapi.testclient import TestClient
from schemathesis.checks import not_a_server_error

from accounting.api import create_app
from tests.api.conftest import API_TOKEN
from tests.api.fake import FakeService

APP = create_app(FakeService(), api_token=API_TOKEN, pact_clients={"demo": "demo"})
with TestClient(APP, base_url="https://testserver") as _client:  # PACT answers over HTTPS only
    PACT_TOKEN = _client.post("/auth/token", data={"grant_type": "client_credentials"},
                              auth=("demo", "demo")).json()["access_token"]

schema = schemathesis.openapi.from_asgi("/openapi.json", APP).exclude(
    path="/api/v1/stream", method="GET")


@schema.parametrize()
@hypothesis.settings(max_examples=25, deadline=None, derandomize=True,
                     suppress_health_check=list(hypothesis.HealthCheck))
def test_no_server_errors(case: schemathesis.Case) -> None:
    token = PACT_TOKEN if case.path.startswith("/3/") else API_TOKEN
    case.call_and_validate(base_url="https://testserver", headers={"Authorization": f"Bearer {token}"},
                           checks=[not_a_server_error])
