"""The ingest benchmark still runs end to end and prints its contract, on a tiny fleet.

Not a performance check (the machine is shared and noisy): the figures live in docs/storage.md.
This keeps the benchmark from rotting and checks its exact loss count on real servers.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.services import require_binary

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(300)
def test_ingest_benchmark_prints_its_result_and_loses_nothing():
    require_binary("mosquitto", "mosquitto")  # the benchmark starts its own servers
    require_binary("influxd", "influxdb")
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "ingest.py"), "--gateways", "3", "--meters", "10",
                          "--rounds", "5", "--live-s", "2"], capture_output=True, text=True, timeout=280, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["readings_published"] == 3 * 10 * (5 + 2)
    assert result["lost"] == 0 and result["duplicates"] == 0
    assert result["readings_per_s"] > 0 and result["drain_s"] > 0
    assert result["freshness_samples"] == 3 * 10 * 2
    assert 0 < result["p99_freshness_s"] < 30
    assert set(result["cpu_cores_during_drain"]) == {"accounting", "influxd", "influx_bridge", "mosquitto"}
    assert result["gzip_level"] == 0  # InfluxDB on loopback
