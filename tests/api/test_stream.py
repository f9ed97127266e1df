"""The live stream: a snapshot on connect, then one message per service update."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from accounting.api import create_app
from tests.api.fake import FakeService


def test_websocket_sends_snapshot_then_updates(client: TestClient, service: FakeService) -> None:
    with client.websocket_connect("/api/v1/stream") as ws:
        first = [json.loads(ws.receive_text()) for _ in range(2)]
        assert [m["type"] for m in first] == ["footprints", "meters"]
        before = first[0]["footprints"][0]["kgco2e_per_unit_location"]
        assert first[0]["series"]["cq-battery"]
        service.tick(("footprints",))
        update = json.loads(ws.receive_text())
        assert update["type"] == "footprints" and update["event_ms"] <= update["sent_ms"]
        assert update["footprints"][0]["kgco2e_per_unit_location"] != before
        service.tick(("meters",))
        meters = json.loads(ws.receive_text())
        assert meters["type"] == "meters" and meters["ingest"] == "live"
        assert len(meters["meters"]) == 7


def test_listener_is_removed_when_the_app_stops(service: FakeService) -> None:
    with TestClient(create_app(service)):
        assert len(service._listeners) == 1
    assert service._listeners == []
