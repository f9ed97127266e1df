"""Request body limits, enforced before anything reads or parses a body.

Without them a client with no credentials could send a 300 MB body to `/auth/token` or
`/api/v1/certificates` and the process read it all into memory (743 MB / 1,043 MB resident)
before answering 401/400. `BodyLimit` sits outermost: a declared `Content-Length` over the
route's limit is answered 413 at once, without reading a byte; a body streamed without a
length (chunked) is counted as it arrives and cut off with 413 when it passes the limit. Only
the chunks up to the limit are ever held.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Default limit for any route not listed below (bytes).
DEFAULT_LIMIT = 1 << 20
#: Route prefix → limit (bytes), most specific first. A factor dataset with an hourly series
#: is the largest legitimate body; a token request is a short form.
ROUTE_LIMITS: tuple[tuple[str, int], ...] = (
    ("/auth/token", 16 << 10),
    ("/3/events", 4 << 20),
    ("/api/v1/factor-datasets", 32 << 20),
    ("/api/v1/factors", 32 << 20),
    ("/api/v1/certificates/import", 4 << 20),  # a certificate list, ~60 bytes a row
    ("/api/v1/certificates", 64 << 10),
    ("/api/v1/recompute", 64 << 10),
)


def limit_for(path: str) -> int:
    for prefix, limit in ROUTE_LIMITS:
        if path == prefix or path.startswith(prefix + "/"):
            return limit
    return DEFAULT_LIMIT


class BodyLimit:
    """ASGI middleware: 413 for a body over the route's limit, decided before it is read."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = limit_for(scope.get("path", ""))
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _too_large(send, limit)
            return
        seen = 0
        started = False  # the app began its response
        refused = False  # we answered 413 in its place

        async def limited_receive() -> Message:
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    # Answer now and tell the app the client left: whatever it does next
                    # (FastAPI turns a failed body read into 400) is not sent.
                    refused = True
                    if not started:
                        await _too_large(send, limit)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused and not started:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not refused:
                raise
            # The app failed on the body we cut off (e.g. "client disconnected"): answered already.


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _too_large(send: Send, limit: int) -> None:
    body = json.dumps({"code": "BadRequest", "detail": f"request body over {limit} bytes",
                       "message": f"request body over {limit} bytes"}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
