"""Read protection of the dashboard and API: a read token, or nothing at all.

A plant network is not always a trusted one (a contractor's laptop, a guest Wi-Fi bridged by
mistake), and footprints, production counts and meter readings are business data. Started with
a read token (`tanji accounting --read-token-file`), the server answers every request for the
dashboard, the REST API, the live stream, the reports and the API documentation only when it
carries that token (or the API token, which may write and so may read):

- `Authorization: Bearer <token>` (scripts, `curl -H`), or
- HTTP Basic with any user name and the token as password: a browser asks for it once and
  sends it with every request of the dashboard, its WebSocket included (`curl -u :TOKEN`).

Left open on purpose: the probes `/api/v1/health` and `/api/v1/ready` (load balancers and
container health checks; they show ingest counters and site ids, no readings or footprints),
and the PACT routes (`/auth/token`, `/3/...`), which have their own OAuth2 client credentials.
Without a read token nothing is protected, as before; docs/deploy.md also shows the
reverse-proxy recipe for single sign-on or client certificates in front of Tanji.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json

from starlette.types import ASGIApp, Receive, Scope, Send

OPEN_PATHS = frozenset({"/api/v1/health", "/api/v1/ready", "/favicon.ico"})
#: PACT's own authentication (OAuth2 client credentials) guards these.
OPEN_PREFIXES = ("/auth/", "/3/", "/.well-known/")
REALM = 'Basic realm="Tanji", charset="UTF-8"'


def presented_token(authorization: str) -> str | None:
    """The token in a Bearer header, or the password of a Basic one."""
    scheme, _, value = authorization.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return value
    if scheme.lower() == "basic" and value:
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        _, sep, password = decoded.partition(":")
        return password if sep else None
    return None


class ReadAccess:
    """ASGI middleware: with tokens configured, every read needs one of them (see module doc)."""

    def __init__(self, app: ASGIApp, tokens: tuple[str, ...] = ()) -> None:
        self.app = app
        self.tokens = tuple(t.encode() for t in tokens if t)

    def allows(self, scope: Scope) -> bool:
        path = scope.get("path", "")
        if not self.tokens or path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
            return True
        headers = dict(scope.get("headers") or [])
        token = presented_token(headers.get(b"authorization", b"").decode("latin-1"))
        if token is None:
            return False
        given = token.encode()
        # Compare with every token (no early exit), so timing tells nothing about which matched.
        return sum(hmac.compare_digest(given, t) for t in self.tokens) > 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self.allows(scope):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": "read token required"})
            return
        body = json.dumps({"detail": "this server needs its read token: 'Authorization: Bearer <token>', or any "
                                     "user name with the token as password"}).encode()
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"www-authenticate", REALM.encode()), (b"cache-control", b"no-store")]})
        await send({"type": "http.response.body", "body": body})
