"""Ingest keeps flowing while a year's recompute runs (issue #12): the recomputation streams the
store window by window into an engine of its own and never takes the live engines' lock.

Real Mosquitto, the real service on a SQLite store holding a year of 5-minute readings of the
shipped battery plant. While `recompute` runs on another thread, gateway batches are published
one at a time; each must be stored, acknowledged and fed to the live engine, and the dashboard
answered, before the recompute returns.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from accounting.service import AccountingService
from accounting.store.base import StoredReading
from accounting.store.checkpoints import CheckpointStore
from accounting.store.sqlite import SqliteStore
from tanji.site import load_site
from tests.ingest.traffic import HOUR_MS, Publisher, plant_batches, wait_until

REPO = Path(__file__).resolve().parents[2]
YEAR_START = 1_735_660_800_000  # 2025-01-01T00:00+08:00
STEP_MS = 300_000


def year_of_rows(site, day: int) -> list[StoredReading]:
    """One day of 5-minute readings of every meter (values rise steadily)."""
    ts = YEAR_START + day * 24 * HOUR_MS + np.arange(0, 24 * HOUR_MS, STEP_MS)
    k = (ts - YEAR_START) // STEP_MS
    rows = []
    for m in site.meters:
        gateway = m.gateway
        if m.role == "production_counter":
            values = [{"units_total": float(x // 3), "batch_id": float(1 + x // 5000)} for x in k.tolist()]
        else:
            values = [{"energy_import_kwh": 1000.0 + 1.2 * x, "energy_export_kwh": 0.0} for x in k.tolist()]
        rows += [StoredReading(site.id, gateway, m.id, t, "good", v)
                 for t, v in zip(ts.tolist(), values, strict=True)]
    return rows


@pytest.fixture
def cq_site():
    return load_site(REPO / "firmware-config" / "sites" / "cq-battery.yaml")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_ingest_and_the_dashboard_go_on_during_a_years_recompute(cq_site, mosquitto, tmp_path):
    store = SqliteStore(tmp_path / "tanji.sqlite")
    for day in range(365):
        store.write_readings(year_of_rows(cq_site, day))
    stored_year = store.count_readings(cq_site.id)
    service = AccountingService([cq_site], store, broker_host=mosquitto.host, broker_port=mosquitto.port,
                                client_id="acc-recompute", checkpoints=CheckpointStore(tmp_path / "cp.sqlite"))
    service.start()
    publisher = Publisher(mosquitto.host, mosquitto.port)
    live_start = YEAR_START + 366 * 24 * HOUR_MS
    batches = plant_batches(cq_site, start_ms=live_start, step_ms=1000, polls=2000, polls_per_batch=1)
    result: dict = {}
    try:
        assert service.wait_connected(30)
        recompute = threading.Thread(target=lambda: result.update(service.recompute(
            cq_site.id, start_ms=YEAR_START, end_ms=YEAR_START + 365 * 24 * HOUR_MS)))
        recompute.start()
        during = answered = late = 0
        sent = 0
        slowest_s = 0.0  # the longest a batch took to be fed while the recompute ran
        for batch in batches:
            if not recompute.is_alive():
                break
            published = time.monotonic()
            publisher.publish_all([batch])
            sent += batch.readings
            ts = batch_ts(batch)
            fed = wait_until(lambda ts=ts: newest_fed(service, cq_site.id) >= ts or not recompute.is_alive(), 120)
            assert fed
            if newest_fed(service, cq_site.id) < ts:
                # The recompute ended with this batch on its way: late only if it had waited far
                # longer than any batch fed meanwhile (a batch the recompute held back waits for all
                # of it), not if it was merely in flight at the end.
                waited_s = time.monotonic() - published
                assert wait_until(lambda ts=ts: newest_fed(service, cq_site.id) >= ts, 60)
                if waited_s > max(2.0, 3 * slowest_s):
                    late += 1
                continue
            slowest_s = max(slowest_s, time.monotonic() - published)
            assert store.count_readings(cq_site.id) == stored_year + sent  # stored and acknowledged
            if recompute.is_alive():
                during += 1
            if recompute.is_alive() and service.footprints(cq_site.id, start_ms=live_start,
                                                           end_ms=live_start + HOUR_MS):
                answered += 1  # the dashboard's query took the live engines' lock meanwhile
        recompute.join(600)
        assert not recompute.is_alive()
        # and structurally: with the live engines' lock held elsewhere, a recompute still finishes
        with service.engines.lock:
            again = threading.Thread(target=lambda: result.update(again=service.recompute(
                cq_site.id, start_ms=YEAR_START, end_ms=YEAR_START + 30 * 24 * HOUR_MS)))
            again.start()
            again.join(300)
            assert not again.is_alive(), "the recompute waited for the live engines' lock"
    finally:
        publisher.close()
        service.stop()
    assert result["readings"] > 0 and result["footprints"]
    assert during > 0, "no batch was stored and fed while the year was recomputed"
    assert late == 0, f"{late} batch(es) were fed only once the recompute ended"
    assert answered > 0


def newest_fed(service: AccountingService, site_id: str) -> int:
    """The newest reading the live engine was fed (meter status follows each feed)."""
    return max((m["last_ts_ms"] or 0) for m in service.meter_status(site_id))


def batch_ts(batch) -> int:
    from tanji import wire
    return max(r["ts_ms"] for r in wire.decode_batch(batch.payload)["readings"])

