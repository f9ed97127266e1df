"""The accounting process: MQTT ingest → store(s) + engine, live footprints, stats.

One ingest cycle (steps 1-2 on the ingest thread, 3-4 on the store thread, 5 on the engine
thread, pipelined so cycle N+1 is admitted while cycle N is written; see `_run`):
1. take up to `cycle_max_messages` messages from the subscriber's inbox;
2. admit them (validate, quarantine, dedup, sequence gaps) — `accounting.ingest.admission` —
   and format them for the store (`ReadingStore.encode_readings`);
3. write quarantine and readings to the store; when that returns they are durable;
4. PUBACK the messages to the broker, in cycle order;
5. feed the same readings to each site's engine, then tell listeners.

Acks after the store write are what make SIGKILL lose nothing: whatever was not acked is
redelivered by the broker (persistent session), and the store and engine are idempotent on
(site, meter, ts_ms). On start each engine is restored from its last checkpoint and the
store's readings since (or, without a checkpoint, from all stored readings), so a restart
neither loses nor double counts. A checkpoint is taken only after the readings it holds are
durable, so "checkpoint + store" always covers everything acknowledged.
"""

from __future__ import annotations

import collections
import gc
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from accounting.engine.engine import Engine
from accounting.engine.warmup import warm_kernels
from accounting.errors import CheckpointError
from accounting.factors.catalogue import FactorCatalogue
from accounting.factors.dataset import FactorDataset, FactorRegistry, default_registry
from accounting.ingest.admission import Admission, Admitted
from accounting.ingest.dedup import DedupIndex
from accounting.ingest.engine_feed import EngineFeed
from accounting.ingest.sequence import SequenceTracker
from accounting.ingest.stats import IngestStats
from accounting.ingest.subscriber import InboundMessage, MqttSubscriber, subscriptions
from accounting.portfolio import Portfolios
from accounting.recompute import Recomputations
from accounting.site_topology import site_topology
from accounting.store.base import EncodedReadings, ReadingStore, StoredReading
from accounting.store.checkpoints import CheckpointStore
from accounting.store.ledger import LedgerStore
from tanji.site import Site

log = logging.getLogger(__name__)

# Product footprints (GB/T 24067 / ISO 14067) need the lifecycle basis: upstream fuel supply and
# grid losses included (ACCOUNTING.md §3). The MEE CO2-only factors are for Scope 2 reporting.
DEFAULT_DATASET = "cn-electricity-carbon-footprint"
Listener = Callable[[dict[str, Any]], None]
GC_THRESHOLD = 50_000


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

    def update(self, r: StoredReading, readings: int, comm_errors: int) -> None:
        """Count `readings` new readings, `comm_errors` of them failed; `r` is the newest of them."""
        self.readings += readings
        self.comm_errors += comm_errors
        if self.last_ts_ms is None or r.ts_ms >= self.last_ts_ms:
            self.last_ts_ms, self.last_values, self.last_quality = r.ts_ms, r.values, r.quality


@dataclass(eq=False)
class _Cycle:
    """One ingest cycle on its way through the pipeline (see `AccountingService._run`)."""

    messages: list[InboundMessage]
    admitted: Admitted
    encoded: EncodedReadings  # the store's formatting of admitted.rows
    inserted: int = 0
    stored_at: float = 0.0


_IDLE = _Cycle([], Admitted(), EncodedReadings(()))


def _quiet_gc() -> None:
    """Keep the cyclic garbage collector out of ingest's way (process-wide, once started).

    Ingest allocates a few container objects per reading (values dicts, rows) and frees them a
    cycle later; with the default threshold (700) the collector ran hundreds of times a second
    and cost ~1 µs per reading, ~20 % of the whole ingest budget. Everything built before ingest
    starts (engines, topology, caches) is moved out of the collector's sight with `gc.freeze`,
    and the youngest generation is collected every 50,000 allocations instead. Reference
    counting still frees everything ingest allocates; only cycles wait a little longer.
    """
    gc.collect()
    gc.freeze()
    threshold = gc.get_threshold()
    gc.set_threshold(max(threshold[0], GC_THRESHOLD), *threshold[1:])


def dataset_for(site: Site, registry: FactorRegistry | None = None) -> FactorDataset:
    """The site's factor dataset (`factor_dataset: id` or `id@version`), else China's electricity carbon footprint factor."""
    spec = site.factor_dataset or DEFAULT_DATASET
    dataset_id, _, version = spec.partition("@")
    return (registry or default_registry()).get(dataset_id, version or None)


class AccountingService:
    """Ingest, store and engine of one or more sites; what the API and the CLI drive.

    Threading: `start()` / `stop()` are synchronous; ingest runs on three background threads
    ("accounting-ingest" admits and formats, "accounting-store" writes and acks,
    "accounting-engine" feeds the engines) next to paho's network thread. Query methods may be called from any thread (an engine lock
    serialises them with ingest). Listeners are called on the engine thread after each cycle with `{"type": "meters", "site": ..., "meters": [...]}` (the
meters that cycle touched, as `meter_status` rows) and, at
    most every `footprint_interval_s`, `{"type": "footprints", "site": ..., "footprints": [...]}`;
    an asyncio consumer must hop threads with `loop.call_soon_threadsafe`.

    Attributes: `sites` (id → Site), `stats` (IngestStats), `store` (the ReadingStore).
    Queries: `footprints`, `meter_status`, `gateway_status`, `hourly_series`, `engine(site_id)`.
    """

    def __init__(self, sites: Iterable[Site], store: ReadingStore, *, broker_host: str = "127.0.0.1",
                 broker_port: int = 1883, client_id: str | None = None, share_group: str | None = None,
                 username: str | None = None, password: str | None = None,
                 tls: bool = False, ca_file: str | None = None,
                 cycle_max_messages: int = 500, cycle_wait_s: float = 0.02,
                 footprint_interval_s: float = 1.0, dedup_window: int = 4096,
                 checkpoints: CheckpointStore | None = None, checkpoint_interval_s: float = 60.0,
                 replay_margin_ms: int = 3_600_000, footprint_store_interval_s: float = 60.0,
                 ledger: LedgerStore | None = None) -> None:
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
                                          username=username, password=password, tls=tls, ca_file=ca_file)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_footprints = 0.0
        self.checkpoints = checkpoints
        self.checkpoint_interval_s = checkpoint_interval_s
        self.replay_margin_ms = replay_margin_ms
        self._last_checkpoint = time.monotonic()
        self.footprint_store_interval_s = footprint_store_interval_s
        self._last_footprint_store = time.monotonic()
        # Write extras (accounting.portfolio / factors.catalogue / recompute): durable beside the
        # checkpoints unless a ledger is given; in memory when the service keeps no state.
        self.ledger = ledger or LedgerStore(Path(checkpoints.path).with_name("ledger.sqlite")
                                            if checkpoints is not None and checkpoints.path != ":memory:"
                                            else ":memory:")
        self.factor_catalogue = FactorCatalogue(self.ledger)
        self.portfolios = Portfolios(self.sites.values(), self.ledger)
        self.recomputations = Recomputations(self.ledger, self.factor_catalogue)

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Compile the kernels, rebuild engines and dedup state from the store, then subscribe and ingest."""
        for site in self.sites.values():
            warm_kernels(site_topology(site), dataset_for(site))
            self._rebuild(site)
        _quiet_gc()
        self._subscriber.start()
        self._thread = threading.Thread(target=self._run, name="accounting-ingest", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Finish the current cycle, disconnect, and close the store."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._subscriber.stop()
        self.checkpoint()
        self.store.close()
        if self.checkpoints is not None:
            self.checkpoints.close()
        self.ledger.close()

    def wait_connected(self, timeout_s: float = 10.0) -> bool:
        return self._subscriber.connected.wait(timeout_s)

    def _rebuild(self, site: Site) -> None:
        """Engine = last checkpoint + stored readings since (minus a margin for late ones), or all stored."""
        topology, dataset = site_topology(site), dataset_for(site, self.factor_catalogue.registry)
        instruments = self.portfolios.portfolio(site.id)
        engine, since_ms = None, 0
        saved = self.checkpoints.load(site.id) if self.checkpoints is not None else None
        if saved is not None:
            _, meta, blob = saved
            try:
                engine = Engine.restore(blob, topology, dataset, instruments=instruments)
                since_ms = max(0, int(meta["replay_from_ms"]) - self.replay_margin_ms)
                self._sequences.restore(meta.get("sequences", {}))
            except CheckpointError as exc:
                log.warning("site %s: checkpoint unusable (%s); rebuilding from the store", site.id, exc)
                engine, since_ms = None, 0
        engine = engine or Engine(topology, dataset, instruments=instruments)
        feed = EngineFeed(engine)
        rows = self.store.read_readings(site.id, None, since_ms, 2**62)
        with self._engine_lock:
            self._engines[site.id] = engine
            self._feeds[site.id] = feed
            feed.feed(rows)
        for meter, r in self.store.latest(site.id).items():
            state = self._meters.get((site.id, meter))
            if state is not None:
                state.last_ts_ms, state.last_values, state.last_quality = r.ts_ms, r.values, r.quality
        for meter in site.meters:
            self._dedup.seed(site.id, meter.id,
                             self.store.recent_timestamps(site.id, meter.id, self._dedup.window))
        log.info("site %s: engine %s, %d stored readings replayed", site.id,
                 "restored from checkpoint" if saved is not None and since_ms else "rebuilt", len(rows))

    def checkpoint(self) -> None:
        """Save every engine (and the sequence tracker); called periodically and on stop."""
        if self.checkpoints is None:
            return
        self._last_checkpoint = time.monotonic()
        sequences = self._sequences.state()
        for site_id, engine in self._engines.items():
            with self._engine_lock:
                blob = engine.checkpoint()
            newest = [st.last_ts_ms for (sid, _), st in self._meters.items()
                      if sid == site_id and st.last_ts_ms is not None]
            meta = {"replay_from_ms": min(newest) if newest else 0,
                    "sequences": {k: v for k, v in sequences.items() if k.startswith(f"{site_id}/")}}
            self.checkpoints.save(site_id, int(time.time() * 1000), meta, blob)

    # -- the ingest cycle -----------------------------------------------------------------
    # Pipelined on three threads, each handing cycles to the next through a bounded queue (a
    # slow stage blocks the ones before it, and in the end the broker holds the backlog):
    # - "accounting-ingest" takes and admits cycle N+2 and formats it for the store;
    # - "accounting-store" writes cycle N+1 and, once it is durable, acks its messages;
    # - "accounting-engine" feeds cycle N to the engines, updates meter states and stats,
    #   notifies listeners, and runs the periodic work (footprint events and writes, checkpoints).
    # The store thread mostly waits on the database, so the other two have the interpreter
    # meanwhile. The dedup index learns readings as they are admitted (safe because cycles are
    # written in order and retried until durable), so a copy arriving meanwhile still counts as
    # a duplicate; a message is acked only after its own cycle's write and every earlier one
    # returned. Under a backlog the engine is fed many cycles at once (at most `engine_batch_s`
    # late), since its cost is per channel touched, not per reading; once caught up, at once.

    pipeline_depth = 2  # admitted cycles waiting for the store thread
    engine_queue_depth = 8  # stored cycles waiting for the engine thread
    engine_batch_s = 1.0

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

    @staticmethod
    def _hand_over(q: queue.Queue[_Cycle | None], item: _Cycle | None, consumer: threading.Thread) -> None:
        """Put, waiting while the consumer is behind; give up only if it has died."""
        while consumer.is_alive():
            try:
                q.put(item, timeout=0.1)
                return
            except queue.Full:
                pass

    def _run(self) -> None:
        admitted: queue.Queue[_Cycle | None] = queue.Queue(self.pipeline_depth)
        stored: queue.Queue[_Cycle | None] = queue.Queue(self.engine_queue_depth)
        feeder = threading.Thread(target=self._engine_loop, args=(stored,), name="accounting-engine", daemon=True)
        writer = threading.Thread(target=self._write_loop, args=(admitted, stored, feeder),
                                  name="accounting-store", daemon=True)
        feeder.start()
        writer.start()
        try:
            while not self._stopping.is_set() and writer.is_alive():
                batch = self._take()
                if batch:
                    self._hand_over(admitted, self._admit(batch), writer)
        finally:
            self._hand_over(admitted, None, writer)
            writer.join()
            feeder.join()

    def _write_loop(self, admitted: queue.Queue[_Cycle | None], stored: queue.Queue[_Cycle | None],
                    feeder: threading.Thread) -> None:
        try:
            while True:
                try:
                    cycle = admitted.get(timeout=0.05)
                except queue.Empty:
                    if self._stopping.is_set():
                        return
                    continue
                if cycle is None:
                    return
                self._write(cycle)
                self._hand_over(stored, cycle, feeder)
        finally:
            self._hand_over(stored, None, feeder)

    def _caught_up(self, stored: queue.Queue[_Cycle | None]) -> bool:
        """Nothing stored waits and less than a cycle's worth is in the inbox: feed now, not later."""
        return stored.empty() and self._subscriber.inbox.qsize() < self.cycle_max_messages

    def _engine_loop(self, stored: queue.Queue[_Cycle | None]) -> None:
        held: list[_Cycle] = []  # stored and acked, engine not yet fed
        while True:
            try:
                cycle = stored.get(timeout=0.05)
            except queue.Empty:
                cycle = _IDLE
            if cycle is None:
                self._feed(held)
                return
            if cycle is not _IDLE:
                held.append(cycle)
            if held and (self._caught_up(stored) or time.monotonic() - held[0].stored_at >= self.engine_batch_s):
                self._feed(held)
                held = []
            if time.monotonic() - self._last_footprints >= self.footprint_interval_s and self._listeners:
                self._publish_footprints()
            if time.monotonic() - self._last_footprint_store >= self.footprint_store_interval_s:
                self.store_footprints()
            if time.monotonic() - self._last_checkpoint >= self.checkpoint_interval_s:
                self.checkpoint()

    def _store(self, cycle: _Cycle) -> int:
        """Write until durable; retries forever (nothing is acked meanwhile, so nothing is lost)."""
        delay = 0.1
        while True:
            try:
                self.store.quarantine(cycle.admitted.quarantined)
                return self.store.write_encoded(cycle.encoded)
            except Exception:
                if self._stopping.is_set():
                    raise
                log.exception("store write failed; retrying in %.1f s", delay)
                time.sleep(delay)
                delay = min(delay * 2, 10.0)

    def _cycle(self, messages: list[InboundMessage]) -> None:
        """One cycle start to end on the calling thread (what the pipeline does on two)."""
        cycle = self._admit(messages)
        self._write(cycle)
        self._feed([cycle])

    def _admit(self, messages: list[InboundMessage]) -> _Cycle:
        t0 = time.perf_counter()
        admitted = self._admission.admit(messages)
        t1 = time.perf_counter()
        encoded = self.store.encode_readings(admitted.rows)
        t2 = time.perf_counter()
        with self.stats.lock:
            self.stats.stage_s["admit"] += t1 - t0
            self.stats.stage_s["encode"] += t2 - t1
        return _Cycle(messages, admitted, encoded)

    def _write(self, cycle: _Cycle) -> None:
        """Store (durable), then ack: in cycle order, on the store thread."""
        t1 = time.perf_counter()
        cycle.inserted = self._store(cycle)
        cycle.stored_at = time.monotonic()
        t2 = time.perf_counter()
        self._subscriber.ack(cycle.messages)
        t3 = time.perf_counter()
        with self.stats.lock:
            self.stats.stage_s["store"] += t2 - t1
            self.stats.stage_s["ack"] += t3 - t2

    def _feed(self, cycles: list[_Cycle]) -> None:
        """Feed stored cycles to the engines, update meter states and stats, notify listeners."""
        if not cycles:
            return
        t3 = time.perf_counter()
        by_site: dict[str, list[StoredReading]] = {}
        for cycle in cycles:
            for r in cycle.admitted.rows:
                rows = by_site.get(r.site)
                if rows is None:
                    rows = by_site[r.site] = []
                rows.append(r)
        with self._engine_lock:
            for site_id, rows in by_site.items():
                self._feeds[site_id].feed(rows)
        t4 = time.perf_counter()
        touched: dict[str, list[str]] = {}
        meters = self._meters
        for site_id, rows in by_site.items():
            newest: dict[str, StoredReading] = {}
            for r in rows:
                meter = r.meter
                seen = newest.get(meter)
                if seen is None or r.ts_ms >= seen.ts_ms:
                    newest[meter] = r
            counts = collections.Counter([r.meter for r in rows])
            comm_errors = collections.Counter([r.meter for r in rows if r.quality == "comm_error"])
            for meter, r in newest.items():
                meters[(site_id, meter)].update(r, counts[meter], comm_errors[meter])
            touched[site_id] = sorted(newest)
        for cycle in cycles:
            admitted = cycle.admitted
            self._gateways.update(admitted.statuses)
            with self.stats.lock:
                s = self.stats
                s.received += admitted.readings_messages
                s.accepted += cycle.inserted
                s.duplicates += admitted.duplicates + len(admitted.rows) - cycle.inserted
                for q in admitted.quarantined:
                    s.quarantined_by_reason[q.reason] += 1
                s.last_message_ms = max(m.received_ms for m in cycle.messages)
                s.cycles += 1
        with self.stats.lock:
            self.stats.seq_gaps = self._sequences.gaps()
        if self._listeners:
            for site_id, names in touched.items():
                self._emit({"type": "meters", "site": site_id,
                            "meters": [self._meter_row(m, meters[(site_id, m)]) for m in names]})
        t5 = time.perf_counter()
        with self.stats.lock:
            self.stats.stage_s["engine"] += t4 - t3
            self.stats.stage_s["notify"] += t5 - t4

    def store_footprints(self) -> None:
        """Write the open hour's (provisional) footprints to the store, for Grafana and history."""
        self._last_footprint_store = time.monotonic()
        now_ms = int(time.time() * 1000)
        start = now_ms - now_ms % 3_600_000
        for site_id in self.sites:
            fps = self.footprints(site_id, start_ms=start, end_ms=start + 3_600_000)
            if fps:
                self.store.write_footprints(site_id, start, start + 3_600_000, now_ms, fps)

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
        """Per meter: id, site, gateway, role, last ts_ms / values / quality, and since this process
        started: readings, comm_errors."""
        return [self._meter_row(meter, st)
                for (sid, meter), st in list(self._meters.items()) if site_id is None or sid == site_id]

    @staticmethod
    def _meter_row(meter: str, st: _MeterState) -> dict[str, Any]:
        return {"meter": meter, "site": st.site, "gateway": st.gateway, "role": st.role,
                "last_ts_ms": st.last_ts_ms, "last_values": st.last_values, "last_quality": st.last_quality,
                "readings": st.readings, "comm_errors": st.comm_errors}

    def gateway_status(self) -> list[dict[str, Any]]:
        """Per configured gateway: its retained status message (None until one arrives) and missing batches."""
        gaps = self.stats.seq_gaps
        return [{"site": s.id, "gateway": g.id, "status": self._gateways.get((s.id, g.id)),
                 "seq_gaps": gaps.get(g.id, 0)}
                for s in self.sites.values() for g in s.gateways]

    def hourly_series(self, site_id: str, start_ms: int, end_ms: int) -> list[dict[str, Any]]:
        """Per hour starting in [start_ms, end_ms), for dashboard charts.

        `consumption_kwh`, `allocated_kwh`, `unallocated_kwh` from the engine's site balance;
        `cost_centres_kwh` the net energy of each cost centre's submeters; `kgco2e_location`,
        `kgco2e_market` and `covered_kwh` (PV + contracts + certificates) summed over the
        products, i.e. for the energy allocated to products in that hour; `provisional` until
        the hour closes.
        """
        site = self.sites[site_id]
        submeters = [(m.id, m.cost_centre) for m in site.meters if m.role == "submeter" and m.cost_centre]
        with self._engine_lock:
            engine = self._engines[site_id]
            balance = engine.site_balance(start_ms, end_ms)
            centre_kwh: dict[int, dict[str, float]] = {}
            for meter_id, centre in submeters:
                hours, imported = engine.hourly_energy(meter_id, "energy_import_kwh", start_ms, end_ms)
                exported = (engine.hourly_energy(meter_id, "energy_export_kwh", start_ms, end_ms)[1]
                            if "energy_export_kwh" in engine.topology.meter(meter_id).channels
                            else np.zeros_like(imported))
                for h, kwh in zip(hours.tolist(), (imported - exported).tolist(), strict=True):
                    row = centre_kwh.setdefault(h, {})
                    row[centre] = row.get(centre, 0.0) + kwh
            out = []
            cols = balance.columns
            for i, h in enumerate(balance.hour_start_ms.tolist()):
                fps = engine.footprints(h, h + 3_600_000)
                out.append({
                    "hour_start_ms": h,
                    "consumption_kwh": float(cols["consumption_kwh"][i]),
                    "allocated_kwh": float(cols["allocated_kwh"][i]),
                    "unallocated_kwh": float(cols["unallocated_kwh"][i]),
                    "cost_centres_kwh": centre_kwh.get(h, {}),
                    "kgco2e_location": sum(f.kgco2e_location for f in fps),
                    "kgco2e_market": sum(f.kgco2e_market for f in fps),
                    "covered_kwh": sum(f.covered_pv_kwh + f.covered_contract_kwh + f.covered_gec_kwh for f in fps),
                    "provisional": not bool(balance.closed[i]),
                })
        return out

    # -- write extras (accounting.api.types): thin delegates to portfolio / catalogue / recompute

    def certificates(self, site_id: str | None = None) -> list[dict[str, Any]]:
        """Claimed GECs (unbundled and bundled), of one site or all."""
        return self.portfolios.certificates(site_id)

    def add_certificate(self, certificate: dict[str, Any]) -> dict[str, Any]:
        """Claim a GEC durably for its site; the site's live market-based numbers include it at once."""
        site_id = str(certificate.get("site_id"))
        with self._engine_lock:
            dataset = self._engines[site_id].dataset if site_id in self._engines else None
            row = self.portfolios.add_certificate(certificate, dataset or dataset_for(self.sites[site_id]))
            self._attach_instruments(site_id)
        return row

    def contracts(self, site_id: str | None = None) -> list[dict[str, Any]]:
        return self.portfolios.contracts(site_id)

    def add_contract(self, contract: dict[str, Any]) -> dict[str, Any]:
        """Hold a green-power contract (and claim its bundled GECs) durably for its site."""
        site_id = str(contract.get("site_id"))
        with self._engine_lock:
            dataset = self._engines[site_id].dataset if site_id in self._engines else None
            row = self.portfolios.add_contract(contract, dataset or dataset_for(self.sites[site_id]))
            self._attach_instruments(site_id)
        return row

    def _attach_instruments(self, site_id: str) -> None:
        """Swap the site's engine for one holding its current portfolio (same readings and clock)."""
        with self._engine_lock:
            if site_id in self._engines:
                engine = self._engines[site_id].with_instruments(self.portfolios.portfolio(site_id))
                self._engines[site_id], self._feeds[site_id] = engine, EngineFeed(engine)

    def factor_datasets(self) -> list[dict[str, Any]]:
        """Every factor dataset version (shipped and loaded), with the sites whose live engine uses it."""
        with self._engine_lock:
            used: dict[tuple[str, str], list[str]] = {}
            for sid in sorted(self._engines):
                ds = self._engines[sid].dataset
                used.setdefault((ds.dataset_id, ds.version), []).append(sid)
        return self.factor_catalogue.listing(used)

    def add_factor_dataset(self, document: dict[str, Any]) -> dict[str, Any]:
        """Load a dataset version (append-only); available for recompute, live engines unchanged."""
        return self.factor_catalogue.row(self.factor_catalogue.add(document), [])

    def recompute(self, site_id: str, *, start_ms: int, end_ms: int,
                  dataset_version: str | None = None) -> dict[str, Any]:
        """Recompute [start_ms, end_ms) from stored readings into a new stored, versioned result.
        `dataset_version`: a version of the live dataset id, or `id@version`; the live one if None."""
        return self.recomputations.run(site_id, self._engines[site_id], self.store, self._engine_lock,
                                       start_ms=start_ms, end_ms=end_ms, dataset_spec=dataset_version)

    def recompute_results(self, site_id: str | None = None) -> list[dict[str, Any]]:
        return self.recomputations.results(site_id)

    def recompute_result(self, site_id: str, result_version: int) -> dict[str, Any]:
        return self.recomputations.result(site_id, result_version)
