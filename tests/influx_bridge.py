"""Test-only: InfluxDB 1.8's `/api/v2/write` endpoint in front of Debian's influxd 1.6.7.

    python tests/influx_bridge.py --upstream-port 8086 --port 8087

Maps `/api/v2/write?org=&bucket=&precision=` to `/write?db=&rp=&precision=` and passes
everything else (`/query`, `/ping`) through; answers `/health` itself, and 503 while influxd is
down, as a load balancer in front of InfluxDB would. It runs as its own process so that, in
tests and benchmarks, it takes no time from the accounting process's interpreter: real
InfluxDB 1.8+/2.x serve this endpoint natively.
"""

from __future__ import annotations

import argparse
import http.client
import http.server
import threading
import urllib.parse

_PRECISIONS = {"ns": "n", "us": "u", "ms": "ms", "s": "s"}
_PASSED_HEADERS = ("content-type", "content-encoding", "accept", "accept-encoding")


def serve(upstream_port: int, port: int) -> None:
    local = threading.local()  # one kept-alive upstream connection per handler thread

    def upstream(method: str, path: str, body: bytes | None, headers: dict[str, str]) -> tuple[int, bytes, str]:
        for attempt in (0, 1):
            conn = getattr(local, "conn", None)
            if conn is None:
                conn = local.conn = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=30)
            try:
                conn.request(method, path, body=body, headers=headers)
                resp = conn.getresponse()
                return resp.status, resp.read(), resp.getheader("Content-Type", "application/json")
            except OSError:
                conn.close()
                local.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _forward(self, method: str) -> None:
            parsed = urllib.parse.urlsplit(self.path)
            query = urllib.parse.parse_qs(parsed.query)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            headers = {k: v for k, v in self.headers.items() if k.lower() in _PASSED_HEADERS}
            path = parsed.path
            if path == "/health":
                self._reply(200, b'{"status":"pass","message":"ready for queries and writes"}')
                return
            if path == "/api/v2/write":
                db, _, rp = query.get("bucket", [""])[0].partition("/")
                params = {"db": db, "precision": _PRECISIONS[query.get("precision", ["ns"])[0]]}
                if rp:
                    params["rp"] = rp
                path = "/write?" + urllib.parse.urlencode(params)
            elif parsed.query:
                path = f"{path}?{parsed.query}"
            try:
                status, data, ctype = upstream(method, path, body, headers)
            except OSError:
                self._reply(503, b'{"code":"unavailable","message":"influxd is down"}')
                return
            if parsed.path == "/api/v2/write" and status >= 400:
                data = b'{"code":"invalid","message":' + repr(data.replace(b"\n", b" ")[:2000]).encode() + b"}"
            self._reply(status, data, ctype)

        def _reply(self, status: int, data: bytes, ctype: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if data:
                self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802
            self._forward("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._forward("POST")

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream-port", type=int, required=True, help="influxd's HTTP port")
    parser.add_argument("--port", type=int, required=True, help="port to serve the v2 endpoint on")
    args = parser.parse_args()
    serve(args.upstream_port, args.port)


if __name__ == "__main__":
    main()
