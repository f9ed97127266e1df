"""`tanji gateway status` exits non-zero when what it reports is down (monitoring relies on it).

A real `tanji gateway` polls simulated meters; its broker is first unreachable (nothing listens
on the site file's port), then a real Mosquitto starts there, then the gateway is stopped.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from simulators.plant import PlantSimulator
from tests.gateway.conftest import simulated_site
from tests.services import MosquittoServer, free_port

REPO = Path(__file__).resolve().parents[2]


def status(site_file: Path, spool: Path) -> tuple[int, dict]:
    out = subprocess.run([sys.executable, "-m", "tanji", "gateway", "status", "--config", str(site_file),
                          "--spool", str(spool), "--json"], capture_output=True, text=True, cwd=REPO, timeout=60)
    return out.returncode, json.loads(out.stdout) if out.stdout.startswith("{") else {}


def wait_status(site_file: Path, spool: Path, want_rc: int, timeout_s: float = 60) -> dict:
    """The first status (exit code and health) with `want_rc` once the gateway has polled."""
    deadline = time.monotonic() + timeout_s
    rc, health = -1, {}
    while time.monotonic() < deadline:
        rc, health = status(site_file, spool)
        if rc == want_rc and health.get("polls"):
            return health
        time.sleep(0.5)
    raise AssertionError(f"status never exited {want_rc}: last {rc} {health}")


@pytest.mark.timeout(180)
def test_gateway_status_exits_1_while_its_broker_is_unreachable(tmp_path):
    broker = MosquittoServer(tmp_path / "mosquitto", port=free_port())
    site_file, site = simulated_site(tmp_path, broker.port, period_s=0.5)
    spool = tmp_path / "spool.sqlite"
    plant = PlantSimulator.from_site(site, seed=0)
    plant.start()
    gateway = subprocess.Popen([sys.executable, "-m", "tanji", "gateway", "--config", str(site_file)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO,
                               start_new_session=True)
    try:
        down = wait_status(site_file, spool, 1)
        assert down["connected"] is False
        assert down["problems"] == ["the broker is unreachable or refuses the gateway (readings wait in the spool)"]

        broker.start()
        up = wait_status(site_file, spool, 0)
        assert up["connected"] is True and up["problems"] == []
        text = subprocess.run([sys.executable, "-m", "tanji", "gateway", "status", "--config", str(site_file),
                               "--spool", str(spool)], capture_output=True, text=True, cwd=REPO, timeout=60)
        assert text.returncode == 0 and text.stdout.rstrip().endswith("OK")

        os.killpg(gateway.pid, signal.SIGTERM)
        assert gateway.wait(30) == 0
        rc, stopped = status(site_file, spool)
        assert rc == 1 and stopped["problems"][0].startswith("the gateway is not running")
    finally:
        if gateway.poll() is None:
            os.killpg(gateway.pid, signal.SIGKILL)
            gateway.wait()
        plant.stop()
        broker.stop()
