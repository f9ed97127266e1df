"""While the service starts (restores its engines), data routes answer 503 instead of failing.

`tanji accounting` serves HTTP from the start, so liveness (`/api/v1/health`) and readiness
(`/api/v1/ready`) answer during a restore that can take minutes on a large store. Until the
engines exist, a footprint, a meter list or a PACT document cannot be computed: those requests
get 503 with `Retry-After`, and the dashboard's static files still load (it retries).
"""

from __future__ import annotations

import json
from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

#: Served whatever the state: probes, and the dashboard's static files.
ALWAYS = ("/api/v1/health", "/api/v1/ready", "/favicon.ico", "/dashboard/")
RETRY_AFTER_S = 5


class StartingUp:
    """ASGI middleware: 503 for data routes while `restored()` is False (the service is starting;
    one that was never started, as in an embedding that restores by itself, is let through)."""

    def __init__(self, app: ASGIApp, restored: Callable[[], bool] = lambda: True) -> None:
        self.app = app
        self.restored = restored
        self._done = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (self._done or scope["type"] not in ("http", "websocket") or scope.get("path", "") in ("", "/")
                or scope.get("path", "").startswith(ALWAYS)):
            await self.app(scope, receive, send)
            return
        if self.restored():
            self._done = True  # restored once is restored for good
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1013, "reason": "starting: try again later"})
            return
        body = json.dumps({"detail": "starting: the engines are being restored from the checkpoints and "
                                     "the store; see /api/v1/ready"}).encode()
        await send({"type": "http.response.start", "status": 503,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"retry-after", str(RETRY_AFTER_S).encode())]})
        await send({"type": "http.response.body", "body": body})
