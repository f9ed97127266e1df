"""The live stream: footprint and meter updates pushed to dashboards, over WebSocket or SSE.

The service calls its listeners from its engine thread (accounting/live/events.py). The hub turns those
calls into messages on the event loop, coalescing bursts: whatever the number of clients, a
burst of events costs one footprint computation and one JSON encoding, and a slow client only
loses intermediate states of its own queue (each message is a full snapshot), never slows the
others or the ingest.

Messages (JSON objects):
- ``{"type": "footprints", "event_ms", "sent_ms", "footprints": [...], "series": {site: [...]}}``
  — live footprints as `GET /api/v1/footprints` returns them, and today's hourly series per site;
- ``{"type": "meters", "event_ms", "sent_ms", "meters": [...], "gateways": [...], "stats": {...},
  "ingest": ...}``;
- ``{"type": "overview", "event_ms", "sent_ms", "sites": {site: {...}}}`` — each site's live
  overview as `GET /api/v1/sites/{site}/overview` returns it, after footprint or meter updates,
  at most once a second.
`event_ms` is when the service signalled the update, so a client can measure its latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
from fastapi import APIRouter, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import StreamingResponse

from accounting.api import windows
from accounting.api.deps import selected_sites, site_tz
from accounting.api.queries import ingest_state, live_footprints, stats_dict
from accounting.api.responses import dumps
from accounting.api.types import AccountingServiceLike, Event
from accounting.api.views.overview import overview

#: Message kinds, in the order a new client receives its first snapshot.
KINDS = ("footprints", "meters", "overview")
#: Kinds sent at most once per this many seconds (the overview is the costliest to build).
KIND_INTERVAL_S = {"overview": 1.0}
#: Messages a client may fall behind before its oldest ones are dropped.
CLIENT_QUEUE = 8


class StreamHub:
    """Fans out the service's update events to every connected client."""

    def __init__(self, service: AccountingServiceLike, min_interval_s: float = 0.1) -> None:
        self.service = service
        self.min_interval_s = min_interval_s
        self._clients: set[asyncio.Queue[str]] = set()
        self._pending: dict[str, int] = {}
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._sent: dict[str, float] = {}

    async def start(self) -> None:
        """Bind to the running loop; an app may be started again on a new loop (tests do)."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._pending = {}
        self._task = asyncio.create_task(self._run(), name="tanji-stream-hub")
        self.service.add_listener(self._on_event)

    async def stop(self) -> None:
        self.service.remove_listener(self._on_event)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @property
    def clients(self) -> int:
        return len(self._clients)

    def _on_event(self, event: Event) -> None:
        """Called by the service, from any thread."""
        kind = event.get("type")
        if kind not in KINDS or self._loop is None or self._loop.is_closed():
            return
        stamp = int(time.time() * 1000)
        with contextlib.suppress(RuntimeError):  # loop shutting down
            self._loop.call_soon_threadsafe(self._mark, kind, stamp)
            self._loop.call_soon_threadsafe(self._mark, "overview", stamp)  # power, state, per unit moved

    def _mark(self, kind: str, stamp: int) -> None:
        self._pending.setdefault(kind, stamp)  # keep the oldest: latency counts from it
        assert self._wake is not None
        self._wake.set()

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            pending, self._pending = self._pending, {}
            now = time.monotonic()
            due = {}
            for kind, stamp in pending.items():
                wait = self._sent.get(kind, -1e9) + KIND_INTERVAL_S.get(kind, 0.0) - now
                if wait > 0:  # too soon for this kind: it waits, keeping its oldest stamp
                    self._pending.setdefault(kind, stamp)
                    asyncio.get_running_loop().call_later(wait, self._wake.set)
                else:
                    due[kind] = stamp
                    self._sent[kind] = now
            if self._clients and due:
                # Kinds are built side by side: a quick meters update never waits behind the
                # heavier footprint computation.
                await asyncio.gather(*(self._broadcast(kind, stamp) for kind, stamp in due.items()))
            await asyncio.sleep(self.min_interval_s)

    async def _broadcast(self, kind: str, stamp: int) -> None:
        text = await anyio.to_thread.run_sync(self.message, kind, stamp)
        for queue in list(self._clients):
            _offer(queue, text)

    def message(self, kind: str, event_ms: int | None = None) -> str:
        """One message of `kind`, encoded once for every client."""
        svc = self.service
        body: dict[str, Any] = {"type": kind, "event_ms": event_ms}
        if kind == "footprints":
            body["footprints"] = live_footprints(svc)
            body["series"] = {}
            for site in selected_sites(svc, None):
                start, end = windows.resolve("day", None, None, site_tz(site))
                body["series"][site.id] = svc.hourly_series(site.id, start, end)
        elif kind == "overview":
            body["sites"] = {site.id: overview(svc, site) for site in selected_sites(svc, None)}
        else:
            stats = stats_dict(svc)
            body.update(meters=svc.meter_status(None), gateways=svc.gateway_status(), stats=stats,
                        ingest=ingest_state(stats, windows.now_ms()))
        body["sent_ms"] = int(time.time() * 1000)
        return dumps(body)

    @contextlib.asynccontextmanager
    async def subscription(self) -> AsyncIterator[asyncio.Queue[str]]:
        """A queue that first holds a full snapshot, then every update, until the block exits."""
        queue: asyncio.Queue[str] = asyncio.Queue(CLIENT_QUEUE)
        for kind in KINDS:
            _offer(queue, await anyio.to_thread.run_sync(self.message, kind))
        self._clients.add(queue)
        try:
            yield queue
        finally:
            self._clients.discard(queue)


def _offer(queue: asyncio.Queue[str], text: str) -> None:
    """Enqueue without waiting; a full queue drops its oldest (every message is a snapshot)."""
    if queue.full():
        queue.get_nowait()
    queue.put_nowait(text)


router = APIRouter(prefix="/api/v1", tags=["stream"])


def _hub(conn: Request | WebSocket) -> StreamHub:
    return conn.app.state.stream_hub


@router.websocket("/stream")
async def stream_ws(websocket: WebSocket) -> None:
    """WebSocket: a snapshot of each message type on connect, then updates as they happen."""
    await websocket.accept()
    async with _hub(websocket).subscription() as queue:
        try:
            while True:
                await websocket.send_text(await queue.get())
        except (WebSocketDisconnect, RuntimeError):
            return


@router.get("/stream", response_class=StreamingResponse, summary="Server-sent events of live updates",
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "`data:` lines, one JSON message per event"}})
async def stream_sse(request: Request) -> StreamingResponse:
    """The same messages as the WebSocket at this path, as server-sent events (for curl, proxies)."""
    hub = _hub(request)

    async def events() -> AsyncIterator[str]:
        async with hub.subscription() as queue:
            while not await request.is_disconnected():
                try:
                    text = await asyncio.wait_for(queue.get(), timeout=15)
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                yield f"data: {text}\n\n"

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
