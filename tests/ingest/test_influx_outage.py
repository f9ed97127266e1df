"""InfluxDB stopped for 60 s under load, then restarted: every reading in InfluxDB exactly once.

Real Mosquitto, the real influxd 1.6.7 (behind the test's v2 write bridge, which answers 503
while influxd is down, as a load balancer would). During the outage the store spills to its
disk queue and ingest keeps acknowledging; when influxd returns the queue drains in order.
"""

from __future__ import annotations

import threading
import time

import pytest

from accounting.service import AccountingService
from accounting.store.influx import InfluxStore
from tests.ingest.traffic import HOUR_MS, Publisher, hour_start, plant_batches, wait_until

OUTAGE_S = 60.0
LOAD_S = OUTAGE_S + 15.0
BATCHES_PER_S = 20


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_influxdb_down_for_a_minute_under_load_loses_and_doubles_nothing(cq_site, mosquitto, influx_private,
                                                                         tmp_path):
    influx = influx_private
    polls_per_batch = 5
    polls = int(LOAD_S * BATCHES_PER_S * polls_per_batch)
    t0 = hour_start(int(time.time() * 1000)) - 4 * HOUR_MS
    batches = plant_batches(cq_site, start_ms=t0, step_ms=1_000, polls=polls, polls_per_batch=polls_per_batch)
    expected = sum(b.readings for b in batches)
    store = InfluxStore(influx.url, token="test", org="tanji", bucket=influx.db, spill_dir=tmp_path / "spill",
                        max_backoff_s=2.0)
    service = AccountingService([cq_site], store, broker_host=mosquitto.host, broker_port=mosquitto.port)
    service.start()
    publisher = Publisher(mosquitto.host, mosquitto.port)
    try:
        assert service.wait_connected()

        def load() -> None:
            for i in range(0, len(batches), BATCHES_PER_S):
                started = time.monotonic()
                publisher.publish_all(batches[i:i + BATCHES_PER_S])
                time.sleep(max(0.0, 1.0 - (time.monotonic() - started)))

        sender = threading.Thread(target=load)
        sender.start()
        time.sleep(5)
        influx.stop_influxd()
        time.sleep(OUTAGE_S)
        spilled_during_outage = len(store.spill)
        accepted_during_outage = service.stats.accepted
        influx.start_influxd()
        sender.join()
        assert wait_until(lambda: service.stats.accepted == expected, 60), service.stats.to_dict()
        assert store.flush(120), f"{len(store.spill)} spilled writes still queued"
    finally:
        publisher.close()
        service.stop()
    assert spilled_during_outage > 0 and store.writes_failed > 0
    assert accepted_during_outage > expected // 2, "ingest must carry on while InfluxDB is down"
    rows = influx.query("SELECT COUNT(quality) FROM reading", influx.db)["results"][0]["series"][0]["values"]
    assert rows[0][1] == expected
    per_meter = influx.query("SELECT COUNT(quality) FROM reading GROUP BY meter", influx.db)["results"][0]["series"]
    assert {s["tags"]["meter"]: s["values"][0][1] for s in per_meter} == {m.id: polls for m in cq_site.meters}
    assert service.stats.duplicates == 0
    assert not list((tmp_path / "spill").glob("*.lp"))
