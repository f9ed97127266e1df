"""MQTT (real Mosquitto) → validation → SQLite and InfluxDB → engine → footprints."""

from __future__ import annotations

import time

import pytest

from accounting.service import AccountingService
from accounting.store.influx import InfluxStore
from accounting.store.sqlite import SqliteStore
from tests.ingest.traffic import HOUR_MS, Publisher, hour_start, plant_batches, wait_until


@pytest.mark.timeout(120)
@pytest.mark.parametrize("backend", ["sqlite", "influx"])
def test_readings_reach_store_and_footprints(backend, cq_site, mosquitto, tmp_path, request):
    if backend == "sqlite":
        store = SqliteStore(tmp_path / "tanji.sqlite")
    else:
        influx = request.getfixturevalue("influx")
        store = InfluxStore(influx.url, token="t", org="tanji", bucket=influx.db, spill_dir=tmp_path / "spill")
    t0 = hour_start(int(time.time() * 1000)) - 2 * HOUR_MS
    batches = plant_batches(cq_site, start_ms=t0, step_ms=10_000, polls=720)  # two hours at 10 s
    expected = sum(b.readings for b in batches)
    service = AccountingService([cq_site], store, broker_host=mosquitto.host, broker_port=mosquitto.port)
    service.start()
    try:
        assert service.wait_connected()
        publisher = Publisher(mosquitto.host, mosquitto.port)
        publisher.publish_all(batches)
        publisher.close()
        assert wait_until(lambda: service.stats.accepted == expected, 60), service.stats
        assert store.count_readings(cq_site.id) == expected
        fps = service.footprints(cq_site.id, start_ms=t0, end_ms=t0 + 2 * HOUR_MS)
        by_product = {f["product_id"]: f for f in fps}
        assert set(by_product) == {"pack-48v-100ah", "ess-5kwh"}
        line_a = by_product["pack-48v-100ah"]
        assert line_a["units"] == pytest.approx(359)  # 720 polls, one unit per two polls, first at 0
        assert line_a["energy_kwh"] > 0
        assert line_a["kgco2e_location"] > 0
        assert service.stats.quarantined == 0 and service.stats.duplicates == 0
    finally:
        service.stop()
