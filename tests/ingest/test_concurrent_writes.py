"""Several cycles' writes in flight at once (`InfluxStore.concurrent_writes`): nothing lost, nothing doubled.

Real Mosquitto, the real influxd 1.6.7 behind the test's v2 write bridge, the service as an
integrator runs it. The store posts small requests (`batch_lines`), so every cycle is several
requests, and two early requests of readings wait for each other (a barrier): two cycles'
writes are provably in flight together. Then influxd fails or refuses in the middle of a cycle:

- stopped for real right after a request succeeded, while the other writers' requests are on
  their way: the failed requests and every later one spill, ingest carries on, and when influxd
  is back every reading is in it exactly once;
- refusing one message's readings (older than the database's retention): that request fails
  with 400 after the cycle's earlier ones succeeded, the pipeline answers its cycle message by
  message, and exactly that message is quarantined (`store_rejected`), every other reading
  stored once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import pytest

from accounting.service import AccountingService
from accounting.store.influx import InfluxStore
from tests.ingest.traffic import Publisher, plant_batches, wait_until
from tests.services import InfluxServer

MINUTE_MS = 60_000


class WatchedStore(InfluxStore):
    """The real store; its readings requests are counted, and the second and third meet at a
    barrier (so two are in flight at once, or the test fails); `after_success(n)` runs after the
    n-th readings request influxd accepted, on the writer thread that sent it."""

    def __init__(self, *args, after_success=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.meeting = threading.Barrier(2)
        self.met = False
        self.started = 0
        self.in_flight = 0
        self.most_in_flight = 0
        self.accepted_requests = 0
        self.after_success = after_success
        self._count_lock = threading.Lock()

    def _post(self, body: bytes, precision: str) -> None:
        if precision != "ms" or threading.current_thread().name == "influx-spill-flusher":
            super()._post(body, precision)
            return
        with self._count_lock:
            k = self.started
            self.started += 1
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if k in (1, 2):  # not the very first: a cycle's first request waits for the one before's
                try:
                    self.meeting.wait(60)
                    self.met = True
                except threading.BrokenBarrierError:
                    pass  # one write in flight at a time: `met` stays False and the test says so
            super()._post(body, precision)
        finally:
            with self._count_lock:
                self.in_flight -= 1
        with self._count_lock:
            self.accepted_requests += 1
            n = self.accepted_requests
        if self.after_success is not None:
            self.after_success(n)


@contextmanager
def _ingesting(site, store: InfluxStore, mosquitto) -> Iterator[tuple[AccountingService, Publisher]]:
    """The service over `store` as an integrator runs it (five messages a cycle), connected, and a
    publisher; both stopped afterwards."""
    service = AccountingService([site], store, broker_host=mosquitto.host, broker_port=mosquitto.port,
                                cycle_max_messages=5)
    service.start()
    publisher = Publisher(mosquitto.host, mosquitto.port)
    try:
        assert service.wait_connected()
        yield service, publisher
    finally:
        publisher.close()
        service.stop()


def _counts(influx: InfluxServer, q: str) -> dict[str, int]:
    series = influx.query(q, influx.db)["results"][0].get("series", [])
    return {s.get("tags", {}).get("meter", ""): s["values"][0][1] for s in series}


@pytest.mark.timeout(300)
def test_influxd_stopping_mid_cycle_with_writes_in_flight_loses_and_doubles_nothing(cq_site, mosquitto,
                                                                                     influx_private, tmp_path):
    influx = influx_private
    polls = 120
    t0 = int(time.time() * 1000) - 30 * MINUTE_MS
    batches = plant_batches(cq_site, start_ms=t0, step_ms=1_000, polls=polls, polls_per_batch=4)
    expected = sum(b.readings for b in batches)
    stopped = threading.Event()

    def stop_after(n: int) -> None:
        if n == 3 and not stopped.is_set():  # a cycle's request was accepted; its next ones will fail
            influx.stop_influxd()
            stopped.set()

    store = WatchedStore(influx.url, token="test", org="tanji", bucket=influx.db, spill_dir=tmp_path / "spill",
                         max_backoff_s=1.0, batch_lines=7, concurrent_writes=3, after_success=stop_after)
    with _ingesting(cq_site, store, mosquitto) as (service, publisher):
        publisher.publish_all(batches)
        # every message is durable (in influxd or in the spill queue) and acknowledged
        assert wait_until(lambda: service.stats.accepted == expected, 120), service.stats.to_dict()
        assert stopped.is_set()
        spilled = len(store.spill)
        influx.start_influxd()
        assert store.flush(120), f"{len(store.spill)} spilled writes still queued"
    assert store.met, "two cycles' readings requests were never in flight at once"
    assert store.most_in_flight >= 2
    assert spilled > 0 and store.writes_failed > 0
    assert _counts(influx, "SELECT COUNT(quality) FROM reading")[""] == expected
    per_meter = _counts(influx, "SELECT COUNT(quality) FROM reading GROUP BY meter")
    assert per_meter == {m.id: polls for m in cq_site.meters}
    assert service.stats.duplicates == 0 and service.stats.quarantined_by_reason.get("store_rejected", 0) == 0
    assert not list((tmp_path / "spill").glob("*.lp"))


@pytest.mark.timeout(300)
@pytest.mark.parametrize("signatures", ["off", "preferred"])
def test_a_request_refused_mid_cycle_with_writes_in_flight_quarantines_exactly_its_message(cq_site, mosquitto,
                                                                                           influx, tmp_path,
                                                                                           signatures):
    # "off": readings only. "preferred": every message's batch record is written before its
    # readings, and the old message's record is refused too (it is timed at its first reading):
    # before, that refusal was retried forever and stopped ingest for every gateway.
    site = replace(cq_site, signatures=signatures)
    # A retention of one hour: influxd refuses (400, partial write) readings older than that.
    influx.query(f'CREATE RETENTION POLICY "hour" ON "{influx.db}" DURATION 1h REPLICATION 1 DEFAULT', influx.db)
    polls = 120
    t0 = int(time.time() * 1000) - 30 * MINUTE_MS
    batches = plant_batches(site, start_ms=t0, step_ms=1_000, polls=polls, polls_per_batch=4, seq0=100)
    # One message in the middle of the stream carries the same meters three hours back: a batch
    # of the gateway's spool from before the retention (an earlier batch number, so its
    # readings are late, not stamped by a clock gone back).
    old = plant_batches(site, start_ms=t0 - 180 * MINUTE_MS, step_ms=1_000, polls=4, polls_per_batch=4,
                        seq0=50)[0]
    stream = batches[:15] + [old] + batches[15:]
    expected = sum(b.readings for b in batches)
    store = WatchedStore(influx.url, token="test", org="tanji", bucket=influx.db, spill_dir=tmp_path / "spill",
                         batch_lines=7, concurrent_writes=3)
    with _ingesting(site, store, mosquitto) as (service, publisher):
        publisher.publish_all(stream)
        assert wait_until(lambda: service.stats.accepted == expected
                          and service.stats.quarantined_by_reason.get("store_rejected") == 1, 120), \
            dict(service.stats.quarantined_by_reason)
        assert store.flush(60)
        quarantined = influx.query("SELECT * FROM quarantine", influx.db)["results"][0]["series"][0]
    assert store.met, "two cycles' readings requests were never in flight at once"
    assert service.stats.accepted == expected and service.stats.duplicates == 0
    assert dict(service.stats.quarantined_by_reason) == {"store_rejected": 1}
    assert len(quarantined["values"]) == 1
    record = dict(zip(quarantined["columns"], quarantined["values"][0], strict=True))
    assert record["reason"] == "store_rejected" and record["payload"].encode() == old.payload
    assert _counts(influx, "SELECT COUNT(quality) FROM reading")[""] == expected
    per_meter = _counts(influx, "SELECT COUNT(quality) FROM reading GROUP BY meter")
    assert per_meter == {m.id: polls for m in site.meters}
    assert not list((tmp_path / "spill").glob("*.lp"))
    if signatures == "preferred":  # every other message's batch record is kept, once
        batch_points = influx.query("SELECT COUNT(seq) FROM batch", influx.db)["results"][0]["series"][0]
        assert batch_points["values"][0][1] == len(batches)
