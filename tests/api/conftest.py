"""Fixtures of the API tests: a fake service and the app over it, served in-process."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from accounting.api import create_app
from tests.api.fake import FakeService

API_TOKEN = "test-token"


@pytest.fixture
def service() -> FakeService:
    return FakeService()


@pytest.fixture
def client(service: FakeService) -> Iterator[TestClient]:
    app = create_app(service, api_token=API_TOKEN, pact_clients={"demo": "demo"})
    with TestClient(app) as c:
        yield c
