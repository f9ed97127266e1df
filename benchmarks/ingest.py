"""Ingest benchmark: fleet generator → Mosquitto → accounting → InfluxDB and engine, on this machine.

    .venv/bin/python benchmarks/ingest.py [--gateways 50 --meters 100 --rounds 200 --live-s 15]

Phase 1 (throughput): the fleet publishes a backlog of `rounds` polls of every meter into the
persistent session of an offline accounting instance; the instance then starts and drains it.
`readings_per_s` is readings stored in InfluxDB and fed to the engine per second of draining
(the default backlog of 1M readings takes several seconds), so the generator's own cost is
not counted against ingest. CPU use of every process during the drain is reported too.
Phase 2 (freshness): the fleet publishes in real time (one round a second) for `live_s`
seconds; for every round, freshness is the time from the readings' timestamp until the ingest
cycle that fed them to the engine ended — from then on `service.footprints()` (what the live
footprint API serves) includes them.
`lost` = readings published − readings counted back from InfluxDB with InfluxQL, exactly.
The bottleneck: when the accounting process used a full core during the drain, its
interpreter (ingest's Python threads share one core through the GIL); otherwise the ingest
stage where the cycles spent most time. The machine's baseline measured in the same run
(`machine`: bare `json.loads` of fleet payloads, memory copy; benchmarks/machine.py) puts the
rate in proportion.
Prints one JSON object as its last line.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("NUMBA_CACHE_DIR", str(REPO / ".numba-cache"))

import paho.mqtt.client as mqtt  # noqa: E402
import psutil  # noqa: E402

from accounting.ingest.subscriber import subscriptions  # noqa: E402
from accounting.service import AccountingService  # noqa: E402
from accounting.store.influx import InfluxStore  # noqa: E402
from benchmarks.machine import machine_baseline  # noqa: E402
from simulators.fleet import Fleet  # noqa: E402
from tanji.site import parse_site_text  # noqa: E402
from tests.services import InfluxServer, MosquittoServer  # noqa: E402

CLIENT_ID = "bench-accounting"
GROUP = "bench"


def _open_session(host: str, port: int, topics: list[str]) -> None:
    """Create the accounting instance's persistent session, so the broker queues the backlog for it."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=CLIENT_ID, clean_session=False)
    subscribed = threading.Event()
    client.on_subscribe = lambda *a: subscribed.set()
    client.connect(host, port)
    client.loop_start()
    client.subscribe([(t, 1) for t in topics])
    subscribed.wait(10)
    client.disconnect()
    client.loop_stop()


def _cpu_s(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def _count(influx: InfluxServer, db: str) -> int:
    series = influx.query("SELECT COUNT(quality) FROM reading", db)["results"][0].get("series", [])
    return int(series[0]["values"][0][1]) if series else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gateways", type=int, default=50)
    parser.add_argument("--meters", type=int, default=100, help="meters per gateway (readings per message)")
    parser.add_argument("--rounds", type=int, default=200, help="backlog polls of every meter (phase 1)")
    parser.add_argument("--live-s", type=int, default=15, help="seconds of real-time publishing (phase 2)")
    parser.add_argument("--gzip-level", type=int, default=None,
                        help="InfluxStore gzip level (default: the store's, i.e. 0 on loopback)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    machine = machine_baseline()  # before any server starts: the machine as the benchmark found it

    with tempfile.TemporaryDirectory(prefix="tanji-bench-") as tmp:
        tmp_path = Path(tmp)
        broker = MosquittoServer(tmp_path / "mosquitto", extra_conf="max_inflight_messages 1000\n")
        influx = InfluxServer(tmp_path / "influxdb")
        broker.start()
        influx.start()
        influx.create_database("bench")
        service = None
        try:
            fleet = Fleet(broker.host, broker.port, gateways=args.gateways, meters_per_gateway=args.meters,
                          site_id="fleet", period_s=1.0)
            site = parse_site_text(fleet.site_text(), "fleet.yaml")
            _open_session(broker.host, broker.port, subscriptions([site.id], GROUP))

            backlog = fleet.publish(args.rounds, start_ms=int(time.time() * 1000) - (args.rounds + 5) * 1000)
            store = InfluxStore(influx.url, token="bench", org="tanji", bucket="bench", spill_dir=tmp_path / "spill",
                                gzip_level=args.gzip_level)
            gzip_level = store.gzip_level
            service = AccountingService([site], store, broker_host=broker.host, broker_port=broker.port,
                                        client_id=CLIENT_ID, share_group=GROUP, cycle_max_messages=200)
            service.start()
            processes = {"accounting": psutil.Process(), "influxd": psutil.Process(influx.influxd.proc.pid),
                         "influx_bridge": psutil.Process(influx.bridge.proc.pid),
                         "mosquitto": psutil.Process(broker.proc.pid)}
            cpu_before = {k: _cpu_s(p) for k, p in processes.items()}
            drain_started = time.monotonic()
            while service.stats.accepted < backlog.readings and time.monotonic() - drain_started < 300:
                time.sleep(0.01)
            drain_s = time.monotonic() - drain_started
            cores = {k: round((_cpu_s(p) - cpu_before[k]) / drain_s, 2) for k, p in processes.items()}
            stages_backlog = dict(service.stats.stage_s)

            fresh: list[float] = []
            seen: set[tuple[str, int]] = set()

            def on_event(event: dict) -> None:
                if event["type"] != "meters":
                    return
                now_ms = time.time() * 1000
                for m in event["meters"]:
                    ts = m["last_ts_ms"]
                    if ts is not None and ts >= live_start_ms and (m["meter"], ts) not in seen:
                        seen.add((m["meter"], ts))
                        fresh.append((now_ms - ts) / 1000)

            live_start_ms = int(time.time() * 1000) + 1000
            service.add_listener(on_event)
            live = fleet.publish(args.live_s, realtime=True, start_ms=live_start_ms)
            total = backlog.readings + live.readings
            deadline = time.monotonic() + 60
            while service.stats.accepted < total and time.monotonic() < deadline:
                time.sleep(0.05)
            store.flush(120)
            stored = _count(influx, "bench")
            fps = service.footprints(site.id, start_ms=0, end_ms=2**62)
        finally:
            if service is not None:
                service.stop()
            influx.stop()
            broker.stop()

    fresh.sort()
    p99 = fresh[min(len(fresh) - 1, int(0.99 * len(fresh)))] if fresh else None
    rate = backlog.readings / drain_s
    if cores["accounting"] >= 0.9:
        bottleneck = "accounting interpreter (one core, GIL)"
    else:
        bottleneck = max(stages_backlog, key=stages_backlog.get) if stages_backlog else None
    baseline = machine["json_loads_readings_per_s"]
    result = {
        "benchmark": "ingest",
        "meters": args.gateways * args.meters,
        "readings_published": total,
        "readings_per_s": round(rate),
        "drain_s": round(drain_s, 2),
        "goal_readings_per_s": 100_000,
        "gzip_level": gzip_level,
        "lost": total - stored,
        "duplicates": service.stats.duplicates,
        "p99_freshness_s": round(p99, 3) if p99 is not None else None,
        "goal_p99_freshness_s": 1.0,
        "freshness_samples": len(fresh),
        "bottleneck": bottleneck,
        "cpu_cores_during_drain": cores,
        "stage_share": {k: round(v / sum(stages_backlog.values()), 3) for k, v in stages_backlog.items()},
        "baseline_json_loads_readings_per_s": round(baseline),
        "ratio_to_json_loads_baseline": round(rate / baseline, 3),
        "generator_readings_per_s": round(backlog.readings_per_s),
        "footprints": len(fps),
        "machine": machine,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
