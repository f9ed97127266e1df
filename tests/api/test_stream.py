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


def _next(ws, kind: str) -> dict:
    """The next message of `kind` (an overview may come between: it follows every update)."""
    while True:
        message = json.loads(ws.receive_text())
        if message["type"] == kind:
            return message


def test_websocket_sends_snapshot_then_updates(client: TestClient, service: FakeService) -> None:
    with client.websocket_connect("/api/v1/stream") as ws:
        first = [json.loads(ws.receive_text()) for _ in range(3)]
        assert [m["type"] for m in first] == ["footprints", "meters", "overview"]
        before = first[0]["footprints"][0]["kgco2e_per_unit_location"]
        assert first[0]["series"]["cq-battery"]
        assert [line["id"] for line in first[2]["sites"]["cq-battery"]["lines"]]
        service.tick(("footprints",))
        update = _next(ws, "footprints")
        assert update["event_ms"] <= update["sent_ms"]
        assert update["footprints"][0]["kgco2e_per_unit_location"] != before
        service.tick(("meters",))
        meters = _next(ws, "meters")
        assert meters["ingest"] == "live"
        assert len(meters["meters"]) == 7


def test_overview_follows_updates_at_most_once_a_second(client: TestClient, service: FakeService) -> None:
    """A line that stops reaches the overview over the stream, without a reload."""
    with client.websocket_connect("/api/v1/stream") as ws:
        snapshot = _next(ws, "overview")["sites"]["cq-battery"]
        assert {line["id"]: line["state"] for line in snapshot["lines"]}["line-b"] == "running"
        service.stopped.add("line-b")
        service.tick(("meters",))
        while True:
            lines = {line["id"]: line for line in _next(ws, "overview")["sites"]["cq-battery"]["lines"]}
            if lines["line-b"]["state"] == "stopped":
                break
        assert lines["line-b"]["rank"] > lines["line-a"]["rank"]


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
