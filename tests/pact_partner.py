"""A partner's PACT host, for tests: Action Authenticate and Action Events over real HTTP.

It checks what a real partner would: our client credentials by HTTP Basic at `/auth/token`
(discovered through its OpenID document), a bearer token it issued on `/3/events`, the
CloudEvents content type. It records every accepted event. `stop()` and `start()` again on
the same port imitate a partner that is down for a while.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.services import free_port

CLIENT_ID = "tanji-plant"
CLIENT_SECRET = "partner-issued-secret-0123"


class Partner:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.events: list[dict[str, Any]] = []
        self.logins = 0
        self.rejected: list[str] = []  # why requests were refused (bad auth, bad content type)
        self._tokens: set[str] = set()
        self._server: ThreadingHTTPServer | None = None
        self._lock = threading.Lock()
        self.received = threading.Condition(self._lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Partner:
        partner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, status: int, body: Any = None) -> None:
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802
                if self.path == "/.well-known/openid-configuration":
                    self._answer(200, {"issuer": partner.url, "token_endpoint": f"{partner.url}/auth/token"})
                else:
                    self._answer(404, {"code": "NotFound", "message": self.path})

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path == "/auth/token":
                    expected = "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
                    if self.headers.get("Authorization") != expected or b"grant_type=client_credentials" not in body:
                        partner.rejected.append("login")
                        self._answer(401, {"error": "invalid_client"})
                        return
                    token = secrets.token_urlsafe(16)
                    with partner._lock:
                        partner._tokens.add(token)
                        partner.logins += 1
                    self._answer(200, {"access_token": token, "token_type": "Bearer", "expires_in": 3600})
                    return
                if self.path != "/3/events":
                    self._answer(404, {"code": "NotFound", "message": self.path})
                    return
                token = self.headers.get("Authorization", "").removeprefix("Bearer ")
                if token not in partner._tokens:
                    partner.rejected.append("token")
                    self._answer(401, {"code": "BadRequest", "message": "Invalid token provided"})
                    return
                if not self.headers.get("Content-Type", "").startswith("application/cloudevents+json"):
                    partner.rejected.append("content-type")
                    self._answer(400, {"code": "BadRequest", "message": "not a structured CloudEvent"})
                    return
                with partner.received:
                    partner.events.append(json.loads(body))
                    partner.received.notify_all()
                self._answer(200)

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, name="partner", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def wait_for(self, count: int, timeout_s: float = 60.0) -> list[dict[str, Any]]:
        """Wait until `count` events arrived (a timeout only bounds a failing test)."""
        with self.received:
            self.received.wait_for(lambda: len(self.events) >= count, timeout_s)
            return list(self.events)

    def __enter__(self) -> Partner:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
