"""Every benchmark still runs end to end and prints its contract, at tiny sizes.

Not performance checks (the machine is shared and noisy; no timing is asserted): the figures live
in the docs, quoted with the machine baseline measured in the same run. These keep the
benchmarks from rotting, check their JSON keys and, where a benchmark counts loss, its exact
loss count on real servers.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.machine import machine_baseline
from tests.services import require_binary

REPO = Path(__file__).resolve().parent.parent
MACHINE_KEYS = {"json_loads_readings_per_s", "memory_copy_gb_s", "cpu_count", "load_1m", "python"}


def run_benchmark(name: str, *args: str, timeout: float = 280) -> dict:
    """Run benchmarks/<name>.py as a user would and return its last line, checking the machine baseline."""
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / f"{name}.py"), *args],
                         capture_output=True, text=True, timeout=timeout, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(result["machine"]) == MACHINE_KEYS
    assert result["machine"]["json_loads_readings_per_s"] > 0 and result["machine"]["memory_copy_gb_s"] > 0
    return result


def test_machine_baseline_measures_the_interpreter_and_memory():
    machine = machine_baseline()
    assert set(machine) == MACHINE_KEYS
    assert machine["json_loads_readings_per_s"] > 0 and machine["memory_copy_gb_s"] > 0
    assert machine["cpu_count"] >= 1


@pytest.mark.timeout(300)
def test_ingest_benchmark_prints_its_result_and_loses_nothing():
    require_binary("mosquitto", "mosquitto")  # the benchmark starts its own servers
    require_binary("influxd", "influxdb")
    # 30 meters at 60 readings/s: a live round every 0.5 s, 4 rounds in 2 s
    result = run_benchmark("ingest", "--gateways", "3", "--meters", "10", "--rounds", "5",
                           "--live-rate", "60", "--live-s", "2", "--signature-rounds", "4",
                           "--service-signature-rounds", "3", "--service-signature-pairs", "1")
    assert result["live_period_s"] == 0.5 and result["live_rate_readings_per_s"] == 60
    assert result["live_readings"] == 3 * 10 * 4
    assert result["readings_published"] == 3 * 10 * (5 + 4)
    assert result["lost"] == 0 and result["duplicates"] == 0
    # the figures name the code that made them: here every pass compiled (bin/setup installs gcc)
    assert result["compiled_passes"] == {"readings": "compiled", "columns": "compiled", "line_protocol": "compiled"}
    assert result["readings_per_s"] > 0 and result["drain_s"] > 0
    assert result["freshness_samples"] == 3 * 10 * 4  # every live reading of every meter, exactly once
    assert result["store_ceiling_readings_per_s"] > 0 and len(result["store_ceiling_runs_readings_per_s"]) == 2
    assert result["store_ceiling_two_writers_readings_per_s"] > 0
    assert set(result["store_ceiling_two_writers_cpu_us_per_reading"]) == {"influxd", "influx_bridge"}
    assert result["ratio_to_two_writer_ceiling"] == pytest.approx(
        result["readings_per_s"] / result["store_ceiling_two_writers_readings_per_s"], abs=0.001)
    assert result["ratio_to_store_ceiling"] == pytest.approx(
        result["readings_per_s"] / result["store_ceiling_readings_per_s"], abs=0.001)
    assert 0 < result["p99_freshness_s"] < 30
    assert set(result["cpu_cores_during_drain"]) == {"accounting", "influxd", "influx_bridge", "mosquitto"}
    # CPU time comes in 10 ms ticks: a run this small may measure none in a process
    assert result["cpu_us_per_reading_during_drain"]["accounting"] >= 0
    assert set(result["store_ceiling_cpu_us_per_reading"]) == {"influxd", "influx_bridge"}
    # the bound is the machine's cores over the CPU one reading costs, as reported (none measured: no bound)
    us = result["cpu_us_per_reading_during_drain"]["accounting"] + sum(result["store_ceiling_cpu_us_per_reading"].values()) \
        + result["cpu_us_per_reading_during_drain"]["mosquitto"]
    if us > 0:
        assert result["cpu_bound_readings_per_s"] == pytest.approx(result["machine"]["cpu_count"] / us * 1e6, rel=0.02)
        assert result["cpu_bound_ratio_to_store_ceiling"] == pytest.approx(
            result["cpu_bound_readings_per_s"] / result["store_ceiling_readings_per_s"], abs=0.001)
    else:
        assert result["cpu_bound_readings_per_s"] is None and result["cpu_bound_ratio_to_store_ceiling"] is None
    assert result["gzip_level"] == 0  # InfluxDB on loopback
    assert result["baseline_json_loads_readings_per_s"] == result["machine"]["json_loads_readings_per_s"]
    assert result["signatures_readings"] == 3 * 10 * 4
    assert result["signatures_required_readings_per_s"] > 0 and result["signatures_off_readings_per_s"] > 0
    # `required` really verifies (phase 3 once passed the verifier where Admission takes its
    # quarantine policy, and measured no check at all): one Ed25519 check per chained run at least
    assert 0 < result["signature_checks_per_batch"] <= 1
    assert result["ed25519_verify_us"] > 0 and result["signature_readings_per_batch"] == 10
    # phase 4, the whole service: it fails unless every reading was stored and `required`
    # verified every batch; one check per gateway at least (a drained backlog's runs)
    assert result["signatures_service_readings_per_run"] == 3 * 10 * 3
    (off,), (required,) = result["signatures_service_runs"]["off"], result["signatures_service_runs"]["required"]
    assert off["signature_checks"] == 0 and 3 <= required["signature_checks"] <= 3 * 3
    assert result["signatures_service_pairs_slowdown"] == [result["signatures_service_slowdown"]]
    # the CPU each mode cost a reading, from the same runs, and where accounting spent it
    cpu = result["signatures_service_cpu_us_per_reading"]
    assert cpu == {mode: pytest.approx(run["accounting_cpu_us_per_reading"] + run["influxd_cpu_us_per_reading"]
                                       + run["mosquitto_cpu_us_per_reading"], abs=0.01)
                   for mode, run in (("off", off), ("required", required))}
    assert result["signatures_service_cpu_slowdown"] == (
        pytest.approx(1 - cpu["off"] / cpu["required"], abs=1e-3) if cpu["required"] else None)
    # per thread, threads that ran a clock tick at least (a tiny run may show none)
    assert all(v > 0 for run in (off, required) for v in run["thread_cpu_us_per_reading"].values())


def test_cpu_bound_is_none_when_a_run_measured_no_cpu():
    """CPU time comes in ticks; a tiny run may measure none, which must not end the benchmark."""
    from benchmarks.ingest import cpu_bound

    assert cpu_bound(2, 0.0, 0.0) is None
    assert cpu_bound(2, 4e-6, 6e-6) == pytest.approx(200_000)


@pytest.mark.timeout(300)
def test_ingest_ab_benchmark_drains_both_trees_and_loses_nothing():
    """The A/B runs a second tree's accounting (here this same tree) on the same backlog."""
    result = run_benchmark("ingest_ab", "--old-tree", str(REPO), "--gateways", "2", "--meters", "5",
                           "--rounds", "3", "--repeats", "1")
    assert result["lost"] == 0
    assert result["readings_per_run"] == 2 * 5 * 3
    for tree in ("old", "new"):
        (run,) = result["runs"][tree]
        assert run["accepted"] == 30 and run["lost"] == 0 and run["quarantined"] == 0
        assert set(run["compiled_passes"].values()) == {"compiled"}
        assert result[f"{tree}_readings_per_s"] > 0
    assert result["ratio_new_to_old"] > 0


def test_mqtt_receive_benchmark_drains_both_clients_and_loses_nothing():
    """Both clients drain the same backlog from a real Mosquitto, every payload in order."""
    for version in ("5", "3.1.1"):
        result = run_benchmark("mqtt_receive", "--messages", "120", "--repeats", "1", "--mqtt-version", version)
        assert result["lost"] == 0 and result["messages_per_run"] == 120 and result["mqtt_version"] == version
        for kind in ("paho", "ingest"):
            (run,) = result["runs"][kind]
            assert run["messages"] == 120 and run["lost"] == 0
            assert result[f"{kind}_messages_per_s"] > 0
            assert result[f"{kind}_network_cpu_us_per_message"] >= 0
        assert "network_cpu_ratio_ingest_to_paho" in result


def test_gateway_benchmark_quick_run_prints_every_figure():
    require_binary("mosquitto", "mosquitto")
    result = run_benchmark("gateway", "--quick")
    for key in ("polls_per_s", "rss_mb_200_meters", "spool_write_readings_per_s", "spool_replay_readings_per_s",
                "backlog_drain_readings_per_s", "backlog_drain_confirmed_readings_per_s",
                "serial_server_polls_per_s", "serial_server_bus_max_polls_per_s", "dlt645_polls_per_s",
                "dlt645_9600_polls_per_s", "dlt645_bus_max_polls_per_s", "cpu_ms_per_1000_readings_signed",
                "cpu_ms_per_1000_readings_unsigned"):
        assert result[key] > 0, key
    assert result["requests_per_poll"] < result["naive_requests_per_poll"]
    assert result["poll_errors"] == 0
    side = result["side_by_side"]
    assert side["meters"] == 3 and side["outage_s"] == 2.0
    tanji = side["tanji"]
    # across a broker outage and a SIGKILL (no poll in flight at the kill): every reading the meters
    # answered reached the broker, counted by (meter, timestamp)
    assert tanji["readings_polled"] > 0 and tanji["lost"] == 0
    assert tanji["readings_received"] == tanji["readings_polled"]
    for key in ("readings_per_s", "cpu_s_per_1000_readings", "rss_mb"):
        assert tanji[key] > 0, key
    peer = side["thingsboard"]
    if "skipped" in peer:  # the peer is installed only by a full run (minutes of pip), then cached
        assert "peer_thingsboard.py" in peer["skipped"]
    else:
        assert peer["readings_polled"] > 0
        assert peer["lost"] == peer["readings_polled"] - peer["readings_received"]


@pytest.mark.timeout(600)
def test_engine_benchmark_small_plant_prints_every_figure():
    # the kernels compile on a clean checkout (~90 s on a quiet 2-core machine)
    result = run_benchmark("engine", "--meters", "20", "--days", "2", timeout=580)
    assert result["meters"] == 20 and result["readings"] == result["channels"] * 2 * 24 * 60
    for key in ("readings_per_s", "python_reference_readings_per_s", "numpy_readings_per_s",
                "live_ingest_readings_per_s", "year_recompute_s", "peak_rss_mb"):
        assert result[key] > 0, key


@pytest.mark.timeout(200)
def test_api_benchmark_short_run_prints_every_figure():
    result = run_benchmark("api", "--clients", "3", "--seconds", "1", "--concurrency", "2", timeout=180)
    assert result["clients"] == 3 and result["updates_received"] > 0
    for key in ("p99_update_latency_s", "single_client_p99_update_latency_s", "requests_per_s",
                "health_requests_per_s", "footprints_vs_health"):
        assert result[key] > 0, key


@pytest.mark.timeout(200)
def test_simulators_benchmark_small_site_prints_every_figure():
    result = run_benchmark("simulators", "--meters", "10", "--seconds", "0.5", timeout=180)
    assert result["meters"] == 10
    assert result["meter_polls_per_s"] > 0 and result["baseline_one_meter_polls_per_s"] > 0


@pytest.mark.timeout(600)
def test_longrun_benchmark_prints_its_result_and_stays_bounded():
    """benchmarks/longrun.py on a tiny site (issue #12): it runs, prints every key of its
    contract, and the sizes it reports (not its timings) show state bounded by hours: the
    bounded engine's state and incremental checkpoints do not grow with the readings fed, a
    whole checkpoint and the keep-every-reading baseline do."""
    result = run_benchmark("longrun", "--quick", "--meters", "6", "--days-per-month", "0.5",
                           "--issue-days", "0.25,0.5", timeout=580)
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
