"""Real Mosquitto and real InfluxDB, started on free ports in temporary directories.

Test-only code. InfluxDB here is Debian's 1.6.7, which lacks `/api/v2/write`; `V2WriteBridge`
runs `influx_bridge.py`, which does what InfluxDB 1.8 does natively (../shared/DESIGN.md): it
maps `/api/v2/write?org=&bucket=&precision=` to `/write?db=&rp=&precision=` and passes
everything else (`/query`, `/ping`) through, in a process of its own. influxdb-client's real write path and influxd's real
storage and query engine are both exercised; nothing is mocked.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port free now, and never one this process was given before.

    The system may hand the same free port to two binds in a row once the first socket is
    closed; two ports asked for one setup (a site's meters, HTTP and HTTPS) then came back equal
    and the second server could not listen, or two meters' unit ids collided on one port."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def wait_for_port(port: int, timeout_s: float = 20.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout_s} s")


def require_binary(name: str, package: str) -> str:
    path = shutil.which(name) or (f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None)
    if path is None:
        raise RuntimeError(f"{name} is not installed: apt-get install -y {package} (bin/test does it when root)")
    return path


class Process:
    """A server process that can be stopped, killed and started again on the same port."""

    def __init__(self, argv: list[str], port: int, log: Path) -> None:
        self.argv = argv
        self.port = port
        self.log = log
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        try:
            wait_for_port(self.port)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"{self.argv[0]} did not start; its log:\n{self.log.read_text()[-3000:]}") from None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class MosquittoServer(Process):
    """Debian's mosquitto with persistence, sized for store-and-forward tests."""

    def __init__(self, workdir: Path, port: int | None = None, extra_conf: str = "",
                 allow_anonymous: bool = True) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        port = port or free_port()
        self.host = "127.0.0.1"
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {port} 127.0.0.1\n"
            f"allow_anonymous {'true' if allow_anonymous else 'false'}\n"
            "persistence true\n"
            f"persistence_location {self.workdir}/\n"
            "autosave_interval 1\n"
            # Persistent sessions of offline subscribers must hold a whole outage's backlog.
            "max_queued_messages 1000000\n"
            "max_inflight_messages 100\n"
            "message_size_limit 0\n"
            "log_type error\nlog_type warning\nlog_type notice\n"
            + extra_conf)
        super().__init__([require_binary("mosquitto", "mosquitto"), "-c", str(conf)], port,
                         self.workdir / "mosquitto.log")


class V2WriteBridge(Process):
    """`tests/influx_bridge.py` in its own process: InfluxDB 1.8's v2 write endpoint (test-only)."""

    def __init__(self, upstream_port: int, log: Path, port: int | None = None) -> None:
        port = port or free_port()
        super().__init__([sys.executable, str(Path(__file__).with_name("influx_bridge.py")),
                          "--upstream-port", str(upstream_port), "--port", str(port)], port, log)


#: influxd writes a shard's cache to TSM files once it has had no write for this long (and
#: whenever the cache outgrows its size limit): benchmarks wait it out so that one phase's
#: snapshot is not charged to the next.
SNAPSHOT_COLD_S = 10


class InfluxServer:
    """Debian's influxd 1.6.7 plus the v2 write bridge. `url` is what influxdb-client talks to."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.http_port = free_port()
        self.rpc_port = free_port()
        conf = self.workdir / "influxdb.conf"
        conf.write_text(f"""
reporting-disabled = true
bind-address = "127.0.0.1:{self.rpc_port}"
[meta]
  dir = "{self.workdir}/meta"
[data]
  dir = "{self.workdir}/data"
  wal-dir = "{self.workdir}/wal"
  query-log-enabled = false
  cache-snapshot-write-cold-duration = "{SNAPSHOT_COLD_S}s"
[http]
  enabled = true
  bind-address = "127.0.0.1:{self.http_port}"
  log-enabled = false
  max-body-size = 0
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
[logging]
  level = "warn"
""")
        self.influxd = Process([require_binary("influxd", "influxdb"), "-config", str(conf)],
                               self.http_port, self.workdir / "influxd.log")
        self.bridge = V2WriteBridge(self.http_port, self.workdir / "bridge.log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.bridge.port}"

    @property
    def direct_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> None:
        self.influxd.start()
        self._wait_ready()
        if not self.bridge.running:
            self.bridge.start()

    def _wait_ready(self, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=1)
                conn.request("GET", "/ping")
                if conn.getresponse().status == 204:
                    return
            time.sleep(0.1)
        raise RuntimeError("influxd did not answer /ping")

    def stop_influxd(self) -> None:
        """Take the database down while the bridge keeps answering 503, as a load balancer would."""
        self.influxd.stop()

    def start_influxd(self) -> None:
        self.influxd.start()
        self._wait_ready()

    def stop(self) -> None:
        self.bridge.stop()
        self.influxd.stop()

    def query(self, q: str, db: str) -> dict:
        """Run InfluxQL directly against influxd (what the tests use to read back)."""
        import json
        conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=30)
        conn.request("POST", "/query?" + urllib.parse.urlencode({"db": db, "q": q}),
                     headers={"Accept": "application/json"})
        resp = conn.getresponse()
        return json.loads(resp.read())

    def create_database(self, db: str) -> None:
        self.query(f'CREATE DATABASE "{db}"', db)
