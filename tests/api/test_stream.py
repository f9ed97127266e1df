"""The live stream: a snapshot on connect, then one message per service update."""

from __future__ import annotations

import json
import threading

import httpx
import uvicorn
from fastapi.testclient import TestClient

from accounting.api import create_app
from tests.api.fake import FakeService
from tests.services import free_port, wait_for_port


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


def test_server_sent_events_carry_the_same_messages(service: FakeService) -> None:
    """SSE needs a real server: the stream never ends, so the client hangs up after two events."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(service), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for_port(port)
        with httpx.stream("GET", f"http://127.0.0.1:{port}/api/v1/stream", timeout=10) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            events = []
            for line in r.iter_lines():
                if line.startswith("data: "):
                    events.append(json.loads(line[6:]))
                if len(events) == 2:
                    break
        assert [e["type"] for e in events] == ["footprints", "meters"]
    finally:
        server.should_exit = True
        thread.join(10)
