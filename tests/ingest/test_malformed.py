"""10,000 malformed messages among good ones: all quarantined with reasons, all good ones stored."""

from __future__ import annotations

import time

import pytest

from accounting.service import AccountingService
from accounting.store.sqlite import SqliteStore
from tests.ingest.malformed import malformed
from tests.ingest.traffic import HOUR_MS, Publisher, hour_start, plant_batches, wait_until

BAD = 10_000


@pytest.mark.timeout(240)
def test_ten_thousand_malformed_payloads_quarantined_good_ones_ingested(cq_site, mosquitto, tmp_path):
    t0 = hour_start(int(time.time() * 1000)) - HOUR_MS
    good = plant_batches(cq_site, start_ms=t0, step_ms=5_000, polls=400, polls_per_batch=2)
    templates = [(b.topic, b.payload) for b in good]
    bad = malformed(cq_site, templates, BAD)
    # interleave: a good message after every ~50 bad ones
    stream: list[tuple[str, bytes]] = []
    step = BAD // len(good)
    for i, b in enumerate(good):
        stream.extend(bad[i * step:(i + 1) * step])
        stream.append((b.topic, b.payload))
    stream.extend(bad[len(good) * step:])
    assert len(stream) == BAD + len(good)

    store = SqliteStore(tmp_path / "tanji.sqlite", synchronous="NORMAL")
    service = AccountingService([cq_site], store, broker_host=mosquitto.host, broker_port=mosquitto.port)
    service.start()
    try:
        assert service.wait_connected()
        publisher = Publisher(mosquitto.host, mosquitto.port)
        for i in range(0, len(stream), 500):
            publisher.publish_all(stream[i:i + 500])
        publisher.close()
        expected_good = sum(b.readings for b in good)
        assert wait_until(lambda: service.stats.received == BAD + len(good), 120), service.stats.to_dict()
        stats = service.stats.to_dict()
        assert stats["quarantined"] == BAD
        assert stats["accepted"] == expected_good
        assert stats["duplicates"] == 0
        assert store.count_readings(cq_site.id) == expected_good
        counts = store.quarantine_counts()
        assert sum(counts.values()) == BAD
        assert counts == stats["quarantined_by_reason"]
        # the checks the issue names each fire
        assert {"not_json", "schema", "not_finite", "timestamp", "topic_mismatch", "too_large",
                "unknown_meter", "unknown_gateway", "unknown_quantity"} <= counts.keys()
        newest = store.quarantined(limit=5)
        assert all(q.reason and q.detail and q.topic for q in newest)
        assert service.stats.seq_gaps == {"gw-cq-01": 0}
    finally:
        service.stop()
