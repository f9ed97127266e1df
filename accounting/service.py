"""The accounting process: MQTT ingest → store(s) + engine, live footprints, stats.

One ingest cycle (on the service's worker thread):
1. take up to `cycle_max_messages` messages from the subscriber's inbox;
2. admit them (validate, quarantine, dedup, sequence gaps) — `accounting.ingest.admission`;
3. write quarantine and readings to the store; when that returns they are durable;
4. feed the same readings to each site's engine;
5. PUBACK the messages to the broker, then tell listeners.

Acks after the store write are what make SIGKILL lose nothing: whatever was not acked is
redelivered by the broker (persistent session), and the store and engine are idempotent on
(site, meter, ts_ms). On start each engine is rebuilt from the readings in the store, so a
restart neither loses nor double counts.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from accounting.engine.engine import Engine
from accounting.factors.dataset import FactorDataset, load_dataset
from accounting.ingest.admission import Admission, Admitted
from accounting.ingest.dedup import DedupIndex
from accounting.ingest.engine_feed import EngineFeed
from accounting.ingest.sequence import SequenceTracker
from accounting.ingest.stats import IngestStats
from accounting.ingest.subscriber import InboundMessage, MqttSubscriber, subscriptions
from accounting.site_topology import site_topology
from accounting.store.base import ReadingStore, StoredReading
from tanji.site import Site

log = logging.getLogger(__name__)

DEFAULT_DATASET = "cn-mee-regional-co2"
Listener = Callable[[dict[str, Any]], None]


@dataclass
class _MeterState:
    site: str
    gateway: str
    role: str
    last_ts_ms: int | None = None
    last_values: dict[str, float | None] | None = None
    last_quality: str | None = None
    readings: int = 0
    comm_errors: int = 0

    def update(self, r: StoredReading) -> None:
        self.readings += 1
        if r.quality == "comm_error":
            self.comm_errors += 1
        if self.last_ts_ms is None or r.ts_ms >= self.last_ts_ms:
            self.last_ts_ms, self.last_values, self.last_quality = r.ts_ms, r.values, r.quality


def dataset_for(site: Site) -> FactorDataset:
    """The site's factor dataset (`factor_dataset: id` or `id@version`), else the MEE regional CO2 factors."""
    spec = site.factor_dataset or DEFAULT_DATASET
    dataset_id, _, version = spec.partition("@")
    return load_dataset(dataset_id, version or None)


class AccountingService:
    """Ingest, store and engine of one or more sites; what the API and the CLI drive.

    Threading: `start()` / `stop()` are synchronous; ingest runs on a background thread
    ("accounting-ingest") next to paho's network thread. Query methods may be called from any
    thread (an engine lock serialises them with ingest). Listeners are called on the ingest
    thread after each cycle with `{"type": "meters", "site": ..., "meters": [...]}` and, at
    most every `footprint_interval_s`, `{"type": "footprints", "site": ..., "footprints": [...]}`;
    an asyncio consumer must hop threads with `loop.call_soon_threadsafe`.

    Attributes: `sites` (id → Site), `stats` (IngestStats), `store` (the ReadingStore).
    Queries: `footprints`, `meter_status`, `gateway_status`, `hourly_series`, `engine(site_id)`.
    """

    def __init__(self, sites: Iterable[Site], store: ReadingStore, *, broker_host: str = "127.0.0.1",
                 broker_port: int = 1883, client_id: str | None = None, share_group: str | None = None,
                 username: str | None = None, password: str | None = None,
                 cycle_max_messages: int = 500, cycle_wait_s: float = 0.02,
                 footprint_interval_s: float = 1.0, dedup_window: int = 4096) -> None:
        self.sites: dict[str, Site] = {s.id: s for s in sites}
        self.store = store
        self.stats = IngestStats()
        self.share_group = share_group
        self.client_id = client_id or f"tanji-accounting-{share_group or 'solo'}-{uuid.uuid4().hex[:8]}"
        self.cycle_max_messages = cycle_max_messages
        self.cycle_wait_s = cycle_wait_s
        self.footprint_interval_s = footprint_interval_s
        self._dedup = DedupIndex(dedup_window)
        self._sequences = SequenceTracker()
        self._admission = Admission(self.sites, self._dedup, self._sequences)
        self._engines: dict[str, Engine] = {}
        self._feeds: dict[str, EngineFeed] = {}
        self._engine_lock = threading.RLock()
        self._meters: dict[tuple[str, str], _MeterState] = {
            (s.id, m.id): _MeterState(s.id, m.gateway, m.role) for s in self.sites.values() for m in s.meters}
        self._gateways: dict[tuple[str, str], dict[str, Any]] = {}
        self._listeners: list[Listener] = []
        self._subscriber = MqttSubscriber(broker_host, broker_port, self.client_id,
                                          subscriptions(sorted(self.sites), share_group),
                                          username=username, password=password)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_footprints = 0.0

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Rebuild engines and dedup state from the store, then subscribe and start ingesting."""
        for site in self.sites.values():
            self._rebuild(site)
        self._subscriber.start()
        self._thread = threading.Thread(target=self._run, name="accounting-ingest", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Finish the current cycle, disconnect, and close the store."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._subscriber.stop()
        self.store.close()

    def wait_connected(self, timeout_s: float = 10.0) -> bool:
        return self._subscriber.connected.wait(timeout_s)

    def _rebuild(self, site: Site) -> None:
        engine = Engine(site_topology(site), dataset_for(site))
        feed = EngineFeed(engine)
        rows = self.store.read_readings(site.id, None, 0, 2**62)
        with self._engine_lock:
            self._engines[site.id] = engine
            self._feeds[site.id] = feed
            feed.feed(rows)
        for r in rows:
            state = self._meters.get((site.id, r.meter))
            if state is not None:
                state.update(r)
        for meter in site.meters:
            self._dedup.seed(site.id, meter.id,
                             self.store.recent_timestamps(site.id, meter.id, self._dedup.window))
        log.info("site %s: engine rebuilt from %d stored readings", site.id, len(rows))

    # -- the ingest cycle -----------------------------------------------------------------

    def _take(self) -> list[InboundMessage]:
        inbox = self._subscriber.inbox
        try:
            first = inbox.get(timeout=0.1)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + self.cycle_wait_s
        while len(batch) < self.cycle_max_messages:
            try:
                batch.append(inbox.get_nowait())
            except queue.Empty:
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.001)
        return batch

    def _run(self) -> None:
        while not self._stopping.is_set():
            batch = self._take()
            if batch:
                self._cycle(batch)
            if time.monotonic() - self._last_footprints >= self.footprint_interval_s and self._listeners:
                self._publish_footprints()

    def _store(self, admitted: Admitted) -> int:
        """Write until durable; retries forever (nothing is acked meanwhile, so nothing is lost)."""
        delay = 0.1
        while True:
            try:
                self.store.quarantine(admitted.quarantined)
                return self.store.write_readings(admitted.rows)
            except Exception:
                if self._stopping.is_set():
                    raise
                log.exception("store write failed; retrying in %.1f s", delay)
                time.sleep(delay)
                delay = min(delay * 2, 10.0)

    def _cycle(self, messages: list[InboundMessage]) -> None:
        admitted = self._admission.admit(messages)
        inserted = self._store(admitted)
        for r in admitted.rows:
            self._dedup.add(r.site, r.meter, r.ts_ms)
        by_site: dict[str, list[StoredReading]] = {}
        for r in admitted.rows:
            by_site.setdefault(r.site, []).append(r)
        with self._engine_lock:
            for site_id, rows in by_site.items():
                self._feeds[site_id].feed(rows)
        self._subscriber.ack(messages)
        for r in admitted.rows:
            self._meters[(r.site, r.meter)].update(r)
        self._gateways.update(admitted.statuses)
        with self.stats.lock:
            s = self.stats
            s.received += admitted.readings_messages
            s.accepted += inserted
            s.duplicates += admitted.duplicates + len(admitted.rows) - inserted
            for q in admitted.quarantined:
                s.quarantined_by_reason[q.reason] += 1
            s.seq_gaps = self._sequences.gaps()
            s.last_message_ms = max(m.received_ms for m in messages)
            s.cycles += 1
        for site_id in by_site:
            self._emit({"type": "meters", "site": site_id, "meters": self.meter_status(site_id)})

    def _publish_footprints(self) -> None:
        self._last_footprints = time.monotonic()
        now_ms = int(time.time() * 1000)
        start = now_ms - now_ms % 3_600_000
        for site_id in self.sites:
            self._emit({"type": "footprints", "site": site_id, "window_start_ms": start, "window_end_ms": now_ms,
                        "footprints": self.footprints(site_id, start_ms=start, end_ms=now_ms)})

    def _emit(self, event: dict[str, Any]) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("listener %r failed on a %s event", listener, event.get("type"))

    # -- what the API asks ----------------------------------------------------------------

    def add_listener(self, callback: Listener) -> None:
        self._listeners.append(callback)

    def remove_listener(self, callback: Listener) -> None:
        if callback in self._listeners:
            self._listeners.remove(callback)

    def engine(self, site_id: str) -> Engine:
        return self._engines[site_id]

    def footprints(self, site_id: str | None = None, *, start_ms: int, end_ms: int,
                   product_id: str | None = None, batch_id: str | None = None) -> list[dict[str, Any]]:
        """Engine `ProductFootprint.to_dict()`s over [start_ms, end_ms), optionally one product or batch."""
        out = []
        with self._engine_lock:
            for sid in [site_id] if site_id else list(self.sites):
                for fp in self._engines[sid].footprints(start_ms, end_ms):
                    d = fp.to_dict()
                    if product_id is not None and d.get("product_id") != product_id:
                        continue
                    if batch_id is not None and str(d.get("batch_id")) != str(batch_id):
                        continue
                    out.append(d)
        return out

    def meter_status(self, site_id: str | None = None) -> list[dict[str, Any]]:
        """Per meter: id, site, gateway, role, last ts_ms / values / quality, readings, comm_errors."""
        return [{"meter": meter, "site": st.site, "gateway": st.gateway, "role": st.role,
                 "last_ts_ms": st.last_ts_ms, "last_values": st.last_values, "last_quality": st.last_quality,
                 "readings": st.readings, "comm_errors": st.comm_errors}
                for (sid, meter), st in list(self._meters.items()) if site_id is None or sid == site_id]

    def gateway_status(self) -> list[dict[str, Any]]:
        """Per configured gateway: its retained status message (None until one arrives) and missing batches."""
        gaps = self.stats.seq_gaps
        return [{"site": s.id, "gateway": g.id, "status": self._gateways.get((s.id, g.id)),
                 "seq_gaps": gaps.get(g.id, 0)}
                for s in self.sites.values() for g in s.gateways]
