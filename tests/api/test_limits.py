"""Body limits are enforced before a body is read: a 300 MB body costs the server nothing.

Found: a 300 MB body to `/auth/token` or `/api/v1/certificates` without credentials took the
process to 743 MB / 1,043 MB resident before it answered 401/400.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from accounting.api import create_app
from accounting.api.limits import DEFAULT_LIMIT, limit_for
from tests.api.fake import FakeService
from tests.services import free_port, wait_for_port

BIG = 300 << 20
CHUNK = 64 << 10
ROUTES = ["/auth/token", "/api/v1/certificates", "/api/v1/factor-datasets", "/api/v1/recompute",
          "/3/events", "/api/v1/health", "/no/such/route"]


def _call(app, path: str, *, declare_length: bool) -> tuple[int, int]:
    """POST a BIG body to `path` through the ASGI interface; (status, bytes the app pulled)."""
    pulled = 0
    status = 0
    headers = [(b"host", b"testserver"), (b"content-type", b"application/x-www-form-urlencoded")]
    if declare_length:
        headers.append((b"content-length", str(BIG).encode()))
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "https", "path": path, "raw_path": path.encode(), "query_string": b"",
             "root_path": "", "headers": headers, "client": ("127.0.0.1", 5000), "server": ("testserver", 80)}
    chunk = b"a" * CHUNK

    async def receive():
        nonlocal pulled
        if pulled >= BIG:
            return {"type": "http.disconnect"}
        pulled += CHUNK
        return {"type": "http.request", "body": chunk, "more_body": pulled < BIG}

    async def send(message):
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    asyncio.run(app(scope, receive, send))
    return status, pulled


@pytest.mark.parametrize("path", ROUTES)
def test_a_streamed_body_is_cut_off_at_the_routes_limit(path: str) -> None:
    app = create_app(FakeService(), api_token="t", pact_clients={"demo": "demo-secret-0123456789"})
    status, pulled = _call(app, path, declare_length=False)
    # At most the limit and one more chunk were read, never the 300 MB: a route that reads
    # its body gets 413 in its place; one that refuses without reading it (no token: 401; no
    # such route or method: 404, 405) is fine.
    assert pulled <= limit_for(path) + CHUNK
    assert status == 413 or (status in (401, 404, 405) and pulled <= CHUNK), status


@pytest.mark.parametrize("path", ROUTES)
def test_a_declared_length_over_the_limit_is_refused_unread(path: str) -> None:
    app = create_app(FakeService(), api_token="t")
    status, pulled = _call(app, path, declare_length=True)
    assert (status, pulled) == (413, 0)


def test_limits_leave_ordinary_bodies_alone() -> None:
    assert limit_for("/api/v1/factor-datasets") > DEFAULT_LIMIT >= limit_for("/auth/token")
    from fastapi.testclient import TestClient
    with TestClient(create_app(FakeService(), api_token="t", pact_clients={"demo": "demo-secret-0123456789"}),
                    base_url="https://testserver") as c:
        r = c.post("/auth/token", data={"grant_type": "client_credentials"}, auth=("demo", "demo-secret-0123456789"))
        assert r.status_code == 200


SERVER = """
import sys, uvicorn
from accounting.api import create_app
from accounting.pact.clients import PactClients
from accounting.pact.host import PactHost
sys.path.insert(0, {repo!r})
from tests.api.fake import FakeService
service = FakeService()
# Plain HTTP here (PACT would refuse it unread): the limit is what is under test.
host = PactHost(service, PactClients.from_secrets({{"demo": "demo-secret-0123456789"}}), require_https=False)
uvicorn.run(create_app(service, api_token="t", pact=host), host="127.0.0.1", port={port}, log_level="warning")
"""


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def _send_big(port: int, path: str) -> tuple[str, int]:
    """Stream BIG bytes (chunked) until the server answers; (status line, bytes sent)."""
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                  "Transfer-Encoding: chunked\r\n\r\n".encode())
        chunk = f"{CHUNK:x}\r\n".encode() + b"a" * CHUNK + b"\r\n"
        s.setblocking(False)
        answer, pending = b"", b""
        while sent < BIG:
            try:
                answer += s.recv(4096)
                if answer:
                    break
            except BlockingIOError:
                pass
            pending = pending or chunk
            try:
                n = s.send(pending)  # may be partial: keep the chunk framing intact
                pending, sent = pending[n:], sent + n
            except BlockingIOError:
                time.sleep(0.001)
            except (BrokenPipeError, ConnectionResetError):
                break
        s.setblocking(True)
        while b"\r\n" not in answer:
            more = s.recv(4096)
            if not more:
                break
            answer += more
    return answer.split(b"\r\n", 1)[0].decode(), sent


@pytest.mark.timeout(120)
def test_a_real_server_answers_413_without_growing(tmp_path) -> None:
    port = free_port()
    repo = str(Path(__file__).resolve().parents[2])
    proc = subprocess.Popen([sys.executable, "-c", SERVER.format(repo=repo, port=port)], cwd=repo)
    try:
        wait_for_port(port)
        before = _peak_rss_mb(proc.pid)
        for path in ("/auth/token", "/api/v1/certificates"):
            status, sent = _send_big(port, path)
            assert status.startswith("HTTP/1.1 413"), (path, status)
            assert sent < BIG, "the server read the whole 300 MB before answering"
        grown = _peak_rss_mb(proc.pid) - before
        # Before the limits: +690 MB and +990 MB. Now only buffers up to the 16 KiB / 64 KiB limits.
        assert grown < 32, f"server grew by {grown:.0f} MB"
    finally:
        proc.terminate()
        proc.wait(10)
