"""`/api/v1/ready` on the real `tanji accounting` process and a real Mosquitto.

`/api/v1/health` is liveness: it answered before the MQTT subscription existed, and on a fresh
install the broker drops what is published before accounting's first subscription (no session
holds it). Ready is 503 until the service is restored, subscribed and caught up; what is
published once it says 200 is all ingested, and the backlog the broker queued while accounting
was down is all ingested before it says 200 (exact counts).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tanji.site import load_site
from tests.ingest.traffic import Publisher, plant_batches
from tests.services import MosquittoServer, free_port

REPO = Path(__file__).resolve().parents[2]
SITE = REPO / "tests" / "core" / "testcases" / "minimal-site.yaml"


def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


class Accounting:
    """`tanji accounting` as an integrator starts it (SQLite store, HTTP on a free port)."""

    def __init__(self, tmp: Path, broker_port: int) -> None:
        self.url = ""
        # Port 0: the service binds a free port and logs its URLs (no race for a port).
        self.argv = [sys.executable, "-m", "tanji", "accounting", "--config", str(SITE),
                     "--broker", f"127.0.0.1:{broker_port}", "--client-id", "tanji-accounting-1",
                     "--store", f"sqlite:{tmp / 'tanji.sqlite'}", "--http-port", "0"]
        self.log = tmp / "accounting.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        offset = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
                                         start_new_session=True)
        deadline = time.monotonic() + 120
        while not (found := re.search(r"serving dashboard (http://\S+)/\n", self.log.read_text()[offset:])):
            assert self.proc.poll() is None and time.monotonic() < deadline, self.log.read_text()[-3000:]
            time.sleep(0.05)
        self.url = found.group(1)

    def wait(self, path: str, status: int, timeout_s: float = 120) -> dict:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                code, body = get(self.url + path)
                if code == status:
                    return body
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.05)
        raise AssertionError(f"{path} never answered {status}; log:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            assert self.proc.wait(60) == 0
        self.proc = None


@pytest.mark.timeout(300)
def test_ready_waits_for_the_subscription_and_nothing_published_after_is_lost(tmp_path):
    broker = MosquittoServer(tmp_path / "mosquitto", port=free_port())  # not started yet
    accounting = Accounting(tmp_path, broker.port)
    accounting.start()
    try:
        # Alive, restored, but no broker: liveness says yes, readiness says why not.
        accounting.wait("/api/v1/health", 200)
        state = accounting.wait("/api/v1/ready", 503)
        assert state["ready"] is False and state["subscribed"] is False
        assert any("not subscribed" in r for r in state["reasons"])
        # The operator's log says so too (the readiness watcher logs each change at its next
        # look); the broker starts only once it has, or a quick subscription would leave
        # nothing to log and the check below would race it.
        deadline = time.monotonic() + 60
        while "not subscribed at the broker" not in accounting.log.read_text():
            assert time.monotonic() < deadline, accounting.log.read_text()[-3000:]
            time.sleep(0.1)

        broker.start()
        state = accounting.wait("/api/v1/ready", 200)
        assert state == {**state, "ready": True, "restored": True, "subscribed": True, "caught_up": True}

        site = load_site(SITE)
        now = int(time.time() * 1000)
        batches = plant_batches(site, start_ms=now - 60_000, step_ms=1000, polls=50, polls_per_batch=1)
        publisher = Publisher(broker.host, broker.port)
        publisher.publish_all(batches)
        publisher.client.disconnect()
        deadline = time.monotonic() + 60
        while get(accounting.url + "/api/v1/health")[1]["stats"]["received"] < len(batches):
            assert time.monotonic() < deadline, "readings published after ready did not all arrive"
            time.sleep(0.1)
        stats = get(accounting.url + "/api/v1/health")[1]["stats"]
        assert (stats["received"], stats["accepted"]) == (len(batches), sum(b.readings for b in batches))
        # the readiness watcher logs the change at its next look, which a loaded machine may delay
        # past the API's answer: the line is waited for, as the first one was
        deadline = time.monotonic() + 60
        while "ready: restored, subscribed and caught up" not in accounting.log.read_text():
            assert time.monotonic() < deadline, accounting.log.read_text()[-3000:]
            time.sleep(0.1)
        assert "not subscribed at the broker" in accounting.log.read_text()
        # the operator is told the hot path runs compiled (bin/setup installs gcc to build it)
        assert "ingest passes: readings compiled, columns compiled, line_protocol compiled" in accounting.log.read_text()
    finally:
        accounting.stop()
        broker.stop()


@pytest.mark.timeout(300)
def test_ready_only_once_the_brokers_backlog_is_ingested(tmp_path):
    """Accounting down while 3,000 messages queue for it: the first 200 comes after all of them."""
    broker = MosquittoServer(tmp_path / "mosquitto", port=free_port())
    broker.start()
    accounting = Accounting(tmp_path, broker.port)
    try:
        accounting.start()
        accounting.wait("/api/v1/ready", 200)  # its persistent session now exists at the broker
        accounting.stop()

        site = load_site(SITE)
        # What the gateway published during a ten-minute outage of accounting, an hour ago.
        start = int(time.time() * 1000) - 3_600_000
        batches = plant_batches(site, start_ms=start, step_ms=200, polls=3000, polls_per_batch=1)
        publisher = Publisher(broker.host, broker.port)
        publisher.publish_all(batches)
        publisher.client.disconnect()

        accounting.start()
        state = accounting.wait("/api/v1/ready", 200)
        stats = get(accounting.url + "/api/v1/health")[1]["stats"]
        # More than one window of the broker's in-flight messages (100 here) had to be worked off.
        assert stats["received"] == len(batches) == 3000, (state, stats)
        assert stats["accepted"] == sum(b.readings for b in batches)
    finally:
        accounting.stop()
        broker.stop()
