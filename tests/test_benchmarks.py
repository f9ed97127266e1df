"""The ingest and long-run benchmarks still run end to end and print their contract, tiny.

Not a performance check (the machine is shared and noisy): the figures live in docs/storage.md
and docs/accounting.md. This keeps the benchmarks from rotting and checks what they count
exactly (lost readings on real servers; bytes of state and checkpoints).
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


@pytest.mark.timeout(600)
def test_longrun_benchmark_prints_its_result_and_stays_bounded():
    """benchmarks/longrun.py on a tiny site (issue #12): it runs, prints every key of its
    contract, and the sizes it reports (not its timings) show state bounded by hours: the
    bounded engine's state and incremental checkpoints do not grow with the readings fed, a
    whole checkpoint and the keep-every-reading baseline do."""
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "longrun.py"), "--quick", "--meters", "6",
                          "--days-per-month", "0.5", "--issue-days", "0.25,0.5"],
                         capture_output=True, text=True, timeout=580, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    for key in ("rss_mb_month_1", "rss_mb_month_12", "checkpoint_s_month_1", "checkpoint_s_month_12",
                "checkpoint_mb_month_12", "restore_s_month_12", "footprints_year_ms",
                "live_channel_updates_per_s", "numpy_floor_updates_per_s", "checkpoint_full_mb_month_12"):
        assert result[key] > 0, key
    assert result["hours"] == 36 and result["readings_fed"] == result["channels"] * 3600 * 36
    # bounded: the state after 3 "months" is that of month 1 plus a few hour rows
    assert result["state_mb_month_12"] <= 1.2 * result["state_mb_month_1"]
    assert result["checkpoint_mb_month_12"] < result["checkpoint_full_mb_month_12"] / 10
    table = result["issue_table"]
    assert set(table) == {"bounded", "keep-every-reading"}  # no --old-tree
    bounded, keep = table["bounded"], table["keep-every-reading"]
    assert [r["days"] for r in bounded] == [r["days"] for r in keep] == [0.25, 0.5]
    assert [r["readings_held"] for r in keep] == [r["readings_fed"] for r in keep]
    assert bounded[1]["readings_held"] <= bounded[0]["readings_held"] < bounded[0]["readings_fed"]
    assert keep[1]["checkpoint_mb"] > 1.8 * keep[0]["checkpoint_mb"]  # grows with readings
    assert bounded[1]["checkpoint_mb"] < keep[0]["checkpoint_mb"] / 10
