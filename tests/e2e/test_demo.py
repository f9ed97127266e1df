"""The README's main job: `bin/demo --duration 90 --http-port P` serves positive footprints, then stops by itself.

No wall-clock limit is asserted (DESIGN.md: speed lives in benchmarks/): the test waits for
positive footprints for as long as the demo runs, so a slow or loaded machine (or a cold numba
cache) makes it slower, not red.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.services import free_port

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(360)
def test_bin_demo_serves_positive_footprints_then_stops(tmp_path):
    port = free_port()
    log = tmp_path / "demo.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(REPO / "bin" / "demo"), "--duration", "90", "--http-port", str(port),
                                 "--https-port", str(free_port()),
                                 "--workdir", str(tmp_path / "work")], stdout=out, stderr=subprocess.STDOUT)
    footprints: list[dict] = []
    try:
        while proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/footprints", timeout=5) as resp:
                    footprints = json.loads(resp.read())
            except OSError:
                footprints = []
            if footprints and all(f["kgco2e_per_unit_location"] and f["kgco2e_per_unit_location"] > 0
                                  for f in footprints):
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"no positive footprints while the demo ran: {footprints}\n{log.read_text()[-3000:]}")
        assert {f["product_id"] for f in footprints} == {"pack-48v-100ah", "ess-5kwh"}
        for f in footprints:
            assert f["units"] > 0 and f["energy_kwh"] > 0 and f["kgco2e_location"] > 0
            assert f["dataset_id"] and f["dataset_version"] and f["matching_mode"]
        # It stops by itself when --duration has passed, cleanly.
        assert proc.wait(timeout=200) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert f"http://127.0.0.1:{port}/" in text and "client id 'demo', secret 'demo'" in text
    # a clean run logs nothing an operator must act on (once every stop logged a spool error)
    errors = [line for line in text.splitlines() if " ERROR " in line or "Traceback" in line]
    assert not errors, "\n".join(errors[:20])


@pytest.mark.timeout(180)
def test_demo_runs_the_rs485_plant_over_a_pty_pair_of_its_own(tmp_path):
    """`tanji demo --scenario simulators/scenarios/js-electronics.yaml`: once it crashed for want of
    /dev/ttyUSB0; now its RS-485 meters answer over a linked pty pair the demo makes itself.

    Ports 0: the demo serves on ports the system picks and its banner names them (it once
    printed port 0)."""
    log = tmp_path / "demo.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "tanji", "demo", "--scenario",
                                 "simulators/scenarios/js-electronics.yaml", "--duration", "30",
                                 "--http-port", "0", "--https-port", "0",
                                 "--workdir", str(tmp_path / "work")],
                                stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    rtu = {"air-meter", "hvac-meter"}  # on bus rs485-1 in firmware-config/sites/js-electronics.yaml
    meters: dict[str, dict] = {}
    try:
        banner = None
        while banner is None and proc.poll() is None:
            banner = re.search(r"dashboard +http://127\.0\.0\.1:(\d+)/\n.*PACT v3 +https://127\.0\.0\.1:(\d+)/",
                               log.read_text(errors="replace"), re.S)
            time.sleep(0.2)
        assert banner is not None, log.read_text()[-3000:]
        port, secure_port = int(banner[1]), int(banner[2])
        assert port and secure_port and port != secure_port
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/meters", timeout=5) as resp:
                    meters = {m["meter"]: m for m in json.loads(resp.read())}
            except OSError:
                meters = {}
            if meters and all(meters[m]["readings"] >= 3 for m in rtu):
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"RS-485 meters silent: {meters}\n{log.read_text()[-3000:]}")
        assert all(meters[m]["last_quality"] == "good" for m in rtu), meters
        assert proc.wait(timeout=90) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "RS-485 bus rs485-1: simulator at /dev/pts/" in log.read_text()
