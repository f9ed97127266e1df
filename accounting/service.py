"""The accounting process assembled: subscriber → ingest pipeline → engines, status, watch, events, jobs.

This module only builds the parts and wires them together; each does its one job elsewhere:
- `accounting.ingest.pipeline`: the cycle on three threads (admit, store then ack, deliver),
  retrying the store until durable, acks in cycle order;
- `accounting.ingest.admission` with `signatures` and `chain`: what is admitted, each batch's
  signature and its gateway's chain checked for the sites that verify them;
- `accounting.live.engines`: the sites' engines behind one lock, and the queries on them;
- `accounting.live.engine_state`: engines restored from checkpoint + store on start, and
  checkpointed (periodically and on stop);
- `accounting.live.status`: what each meter and gateway last said;
- `accounting.live.watch` (with `accounting.store.alarms`): alarms and plant changes, the
  operator's log; `accounting.live.chain_alarms` puts the chains' gaps and forks there too;
- `accounting.live.events`: listeners and the events they hear;
- `accounting.live.jobs`: periodic work between cycles (footprint announcements and writes,
  checkpoints, store catch-up, chain gaps, the plant watch);
- `accounting.audit.evidence`: the evidence a footprint names;
- `accounting.portfolio`, `accounting.factors.catalogue`, `accounting.recompute`: the write
  side (certificates, contracts, factor datasets, recomputation), kept in the ledger.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from accounting.audit.evidence import FootprintEvidence
from accounting.engine.engine import Engine
from accounting.engine.warmup import warm_kernels
from accounting.factors import selection
from accounting.factors.catalogue import FactorCatalogue
from accounting.factors.dataset import FactorDataset
from accounting.factors.diff import factor_diff
from accounting.factors.selection import dataset_for
from accounting.ingest.admission import Admission
from accounting.ingest.chain import ChainTracker
from accounting.ingest.dedup import DedupIndex
from accounting.ingest.meter_order import MeterOrder
from accounting.ingest.pipeline import CYCLE_MAX_MESSAGES, Cycle, Pipeline
from accounting.ingest.readiness import Readiness
from accounting.ingest.sequence import SequenceTracker
from accounting.ingest.signatures import BatchSignatures
from accounting.ingest.stats import IngestStats
from accounting.ingest.subscriber import MqttSubscriber, default_client_id, subscriptions
from accounting.live.chain_alarms import raise_evidence_alarms, sync_chain_alarms
from accounting.live.engine_state import EngineState
from accounting.live.engines import LiveEngines
from accounting.live.events import Listener, Listeners, footprints_event, meters_event
from accounting.live.grid import grid_factors
from accounting.live.jobs import PeriodicJobs
from accounting.live.reading_flags import meter_flags
from accounting.live.status import PlantStatus
from accounting.live.watch import PlantWatch
from accounting.portfolio import Portfolios
from accounting.recompute import Recomputations
from accounting.site_topology import site_topology
from accounting.store.alarms import AlarmStore
from accounting.store.base import ROW_SITE, ReadingStore, StoredReading
from accounting.store.checkpoints import CheckpointStore
from accounting.store.evidence import EvidenceStore
from accounting.store.ledger import LedgerStore
from tanji.civil_calendar import window_bounds
from tanji.site import Site

log = logging.getLogger(__name__)


class AccountingService:
    """Ingest, store and engine of one or more sites; what the API and the CLI drive.

    Threading: `start()` / `stop()` are synchronous; ingest runs on the pipeline's three
    background threads next to paho's network thread. Query methods may be called from any
    thread (the engines' lock serialises them with ingest). Listeners hear the events of
    `accounting.live.events` on the engine thread.

    Attributes: `sites` (id → Site), `stats` (IngestStats), `store` (the ReadingStore).
    Queries: `footprints`, `meter_status`, `gateway_status`, `hourly_series`, `engine(site_id)`.
    """

    def __init__(self, sites: Iterable[Site], store: ReadingStore, *, broker_host: str = "127.0.0.1",
                 broker_port: int = 1883, client_id: str | None = None, share_group: str | None = None,
                 username: str | None = None, password: str | None = None,
                 tls: bool = False, ca_file: str | None = None,
                 cycle_max_messages: int = CYCLE_MAX_MESSAGES, cycle_wait_s: float = 0.02,
                 footprint_interval_s: float = 1.0, dedup_window: int = 4096,
                 checkpoints: CheckpointStore | None = None, checkpoint_interval_s: float = 60.0,
                 replay_margin_ms: int = 3_600_000, footprint_store_interval_s: float = 60.0,
                 ledger: LedgerStore | None = None, mqtt_version: str = "5") -> None:
        self.sites: dict[str, Site] = {s.id: s for s in sites}
        self.store = store
        self.stats = IngestStats()
        self.share_group = share_group
        self.client_id = client_id or default_client_id(  # stable: persisted beside the checkpoints
            Path(checkpoints.path).parent if checkpoints is not None and checkpoints.path != ":memory:" else None,
            share_group)
        self.checkpoints = checkpoints
        # Write extras (accounting.portfolio / factors.catalogue / recompute): durable beside the
        # checkpoints unless a ledger is given; in memory when the service keeps no state.
        self.ledger = ledger or LedgerStore(Path(checkpoints.path).with_name("ledger.sqlite")
                                            if checkpoints is not None and checkpoints.path != ":memory:"
                                            else ":memory:")
        self.factor_catalogue = FactorCatalogue(self.ledger)
        self.portfolios = Portfolios(self.sites.values(), self.ledger)
        self.recomputations = Recomputations(self.ledger, self.factor_catalogue)

        self.engines = LiveEngines()
        self.engine_state = EngineState(store, checkpoints, replay_margin_ms=replay_margin_ms)
        self.status = PlantStatus(self.sites)
        # The operator's log (alarms, acknowledgements, what changed) beside the ledger.
        self.alarm_log = AlarmStore(":memory:" if self.ledger.path == ":memory:"
                                    else Path(self.ledger.path).with_name("alarms.sqlite"))
        self.watch = PlantWatch(self.sites, self.alarm_log, self.engines.engine)
        self.listeners = Listeners()
        self._dedup = DedupIndex(dedup_window)
        self._sequences = SequenceTracker()
        # Each meter's newest reading and its batch, beside the ledger (clock_backwards across restarts).
        self.meter_order = MeterOrder(None if self.ledger.path == ":memory:"
                                      else Path(self.ledger.path).with_name("meter_order.sqlite"))
        self._subscriber = MqttSubscriber(broker_host, broker_port, self.client_id,
                                          subscriptions(sorted(self.sites), share_group),
                                          username=username, password=password, tls=tls, ca_file=ca_file,
                                          mqtt_version=mqtt_version)
        # Batch signatures and chains (docs/audit.md), for the sites that verify them.
        verifying = any(s.signatures != "off" for s in self.sites.values())
        self.signatures = BatchSignatures(self.sites) if verifying else None
        self.chains = ChainTracker(store if isinstance(store, EvidenceStore) else None) if verifying else None
        self.pipeline = Pipeline(self._subscriber, Admission(self.sites, self._dedup, self._sequences,
                                                             lookup=store.find_readings, signatures=self.signatures,
                                                             chains=self.chains, order=self.meter_order),
                                 store, self.stats, deliver=self._deliver, notify=self._notify,
                                 tick=self._tick, cycle_max_messages=cycle_max_messages,
                                 cycle_wait_s=cycle_wait_s)
        self.evidence = FootprintEvidence(store, self.ledger, self.sites)
        self.ready = Readiness(self._subscriber, self.pipeline, self._newest_ms)
        self.jobs = PeriodicJobs()
        self.jobs.every(footprint_interval_s, "footprint announcements", self.announce_footprints)
        self.jobs.every(footprint_store_interval_s, "footprint writes", self.store_footprints)
        self.jobs.every(checkpoint_interval_s, "checkpoints", self.checkpoint)
        self.jobs.every(1.0, "meter order", self.meter_order.flush)
        self.jobs.every(5.0, "store catch-up", self.catch_up)
        self.jobs.every(5.0, "chain gaps", self.check_chains)
        self.jobs.every(1.0, "plant watch", lambda: self.watch.check(self.status.last_seen(), self.gateway_status()))
        self._announced: dict[str, int] = {}  # site → engines.changes() when last announced
        self._touched: dict[str, list[str]] = {}  # meters the last delivery touched (engine thread)
        self._started = False

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Compile the kernels, restore engines and ingest state, then subscribe and ingest."""
        self.ready.starting = True
        for site in self.sites.values():
            warm_kernels(site_topology(site), dataset_for(site))
        self.restore()
        self._subscriber.start()
        self.pipeline.start()
        self._started = True

    def restore(self) -> None:
        """Every site's engine, meter states, dedup index and sequences as the store and checkpoints hold them."""
        for site in self.sites.values():
            restored = self.engine_state.restore(site, self.factor_catalogue.registry,
                                                 self.portfolios.portfolio(site.id))
            self._sequences.restore(restored.sequences)
            self.engines.install(site.id, restored.engine, restored.replay)
            latest = self.store.latest(site.id)
            self.status.seed(site.id, latest)
            self.watch.seed(site.id, latest)
            if self.chains is not None and site.signatures != "off":
                self.chains.restore(site.id, [g.id for g in site.gateways])
            for meter in site.meters:
                self._dedup.seed(site.id, meter.id,
                                 self.store.recent_timestamps(site.id, meter.id, self._dedup.window))
        self.ready.restored = True  # footprints can be asked from here on

    def stop(self) -> None:
        """Finish the current cycle, disconnect, checkpoint, and close the stores."""
        self.pipeline.stop()
        self._subscriber.stop()
        self.checkpoint()
        self.store.close()
        self.engine_state.close()
        self.ledger.close()
        self.alarm_log.close()
        self.meter_order.close()

    def wait_connected(self, timeout_s: float = 60.0) -> bool:
        """Connected and the subscriptions acknowledged (a SUBACK): from then on the broker
        keeps what is published for this session. Connected alone is too early: a reading
        published before the SUBACK of a first session is dropped. Returns as soon as it is
        so; the bound only ends the wait on a broker that never answers (a loaded machine took
        over 10 s to connect)."""
        deadline = time.monotonic() + timeout_s
        if not self._subscriber.connected.wait(timeout_s):
            return False
        while self._subscriber.subscribed_at is None:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def readiness(self) -> dict[str, Any]:
        """Restored, subscribed and caught up? (`accounting.ingest.readiness`, `/api/v1/ready`)."""
        return self.ready.check()

    def _newest_ms(self) -> int | None:
        newest = [t for t in (self.status.newest_ms(s) for s in self.sites) if t is not None]
        return max(newest) if newest else None

    @property
    def failed(self) -> threading.Event:
        """Set when an ingest stage has died: the process must exit non-zero (`tanji accounting` does)."""
        return self.pipeline.failed

    def health(self) -> dict[str, Any]:
        """`{"status": "ok" | "degraded" | "failed", "problems": [...]}`: failed when a stage died
        (restart the process), degraded while the store refuses writes (ingest waits, nothing lost)."""
        problems: list[str] = []
        status = "ok"
        if self.pipeline.failure is not None:
            status = "failed"
            problems.append(f"ingest stopped: {self.pipeline.failure}")
        if self._started and not self._subscriber.network_alive():
            status = "failed"
            problems.append("the MQTT network thread has died")
        since = self.pipeline.store_failing_since
        if since is not None and status == "ok":
            status = "degraded"
            problems.append(f"store writes failing for {time.monotonic() - since:.0f} s; ingest waits, nothing is "
                            "acknowledged meanwhile")
        return {"status": status, "problems": problems}

    # -- the pipeline's hooks (engine thread) ---------------------------------------------

    def _deliver(self, cycles: list[Cycle]) -> None:
        """Stored cycles → each site's engine, meter and gateway status."""
        by_site: dict[str, list[StoredReading]] = {}
        for cycle in cycles:
            rows = cycle.admitted.rows
            sites = set(map(ROW_SITE, rows))
            if len(sites) == 1:  # as a rule a cycle holds one site's readings: split in C, not per row
                by_site.setdefault(sites.pop(), []).extend(rows)
                continue
            for r in rows:
                found = by_site.get(r.site)
                if found is None:
                    found = by_site[r.site] = []
                found.append(r)
        columns = {site_id: self.engines.columns(site_id, rows) for site_id, rows in by_site.items()}
        self.engines.feed_columns(columns)  # the rows made columns once, for the engines and the watch
        self._touched = {site_id: self.status.update_columns(site_id, by_site[site_id], cols)
                         for site_id, cols in columns.items()}
        for site_id, cols in columns.items():
            self.watch.observe_columns(site_id, cols)
        self.watch.report_gaps()
        for cycle in cycles:
            self.status.update_gateways(cycle.admitted.statuses.items())

    def _notify(self, cycles: list[Cycle]) -> None:
        if self.listeners:
            for site_id, meters in self._touched.items():
                self.listeners.emit(meters_event(site_id, self.status.meter_rows(site_id, meters)))

    def _tick(self) -> None:
        self.jobs.run_due()

    # -- periodic jobs --------------------------------------------------------------------

    def announce_footprints(self) -> None:
        """Tell listeners which sites' footprints moved since the last announcement."""
        if not self.listeners:
            return
        for site_id in self.sites:
            changes = self.engines.changes(site_id)
            if self._announced.get(site_id) != changes:
                self._announced[site_id] = changes
                self.listeners.emit(footprints_event(site_id, self.status.newest_ms(site_id)))

    def store_footprints(self) -> None:
        """Write the open hour's (provisional) footprints to the store, for Grafana and history."""
        now_ms = int(time.time() * 1000)
        for site_id, site in self.sites.items():
            start, end = window_bounds("hour", now_ms, site.zone)
            fps = self.footprints(site_id, start_ms=start, end_ms=end)
            if fps:
                self.store.write_footprints(site_id, start, end, now_ms, fps)

    def checkpoint(self) -> None:
        """Save every engine (and the sequence tracker); called periodically and on stop."""
        if self.checkpoints is None:
            return
        sequences = self._sequences.state()
        for site_id in self.engines.site_ids():
            snapshot, engine = self.engines.snapshot(site_id)
            self.engine_state.save(site_id, snapshot, engine, sequences=sequences)

    def check_chains(self) -> None:
        """Record chain gaps still open after their grace, and gaps filled late; mirror open gaps
        and forks into the operator's alarm list."""
        if self.chains is None:
            return
        events = self.chains.check()
        if events and isinstance(self.store, EvidenceStore):
            self.store.write_chain_events(events)
        signing = [s.id for s in self.sites.values() if s.signatures != "off"]
        sync_chain_alarms(self.alarm_log, self.chains.alarms(), signing)
        raise_evidence_alarms(self.alarm_log, self._evidence_damage(), signing)
        with self.stats.lock:
            self.stats.audit = self.audit_status()

    def audit_status(self) -> dict[str, Any]:
        """Signature checks and chain alarms since start (open gaps, forks of the last 24 h)."""
        if self.signatures is None or self.chains is None:
            return {}
        return {"signatures": self.signatures.to_dict(), "chain_events": dict(self.chains.counts),
                "missing_batches_suspected": self.chains.suspected(), "alarms": self.chains.alarms(),
                "evidence_log_damage": self._evidence_damage()}

    def _evidence_damage(self) -> list[dict[str, Any]]:
        """What the evidence log found damaged at start (accounting/store/evidence_log.py)."""
        log = getattr(self.store, "evidence_log", None)
        return list(log.damage) if log is not None else []

    def catch_up(self) -> None:
        """Place late readings, and finish restarts, that waited for the store to answer."""
        for site_id in self.engines.site_ids():
            with self.engines.lock:
                self.engine_state.retry(site_id, self.engines.engine(site_id))

    # -- what the API asks ----------------------------------------------------------------

    def add_listener(self, callback: Listener) -> None:
        self.listeners.add(callback)

    def remove_listener(self, callback: Listener) -> None:
        self.listeners.remove(callback)

    def engine(self, site_id: str) -> Engine:
        return self.engines.engine(site_id)

    def footprints(self, site_id: str | None = None, *, start_ms: int, end_ms: int,
                   product_id: str | None = None, batch_id: str | None = None) -> list[dict[str, Any]]:
        """Engine `ProductFootprint.to_dict()`s over [start_ms, end_ms), optionally one product or batch,
        with the evidence they rest on (`accounting.audit.evidence`)."""
        records = self.engines.footprints([site_id] if site_id else list(self.sites), start_ms=start_ms,
                                          end_ms=end_ms, product_id=product_id, batch_id=batch_id)
        for sid in {r["site_id"] for r in records}:
            self.evidence.annotate(sid, self._dataset(sid).digest, [r for r in records if r["site_id"] == sid])
        return records

    def batch_runs(self, site_id: str) -> list[dict[str, Any]]:
        """The site's production batches (PLC batch register runs), for shipments."""
        return self.engines.batch_runs(site_id)

    def reading_flags(self, site_id: str, meter: str, *, start_ms: int, end_ms: int) -> dict[str, Any]:
        """One meter's flagged readings and hours over [start_ms, end_ms) (accounting/live/reading_flags.py)."""
        return meter_flags(site_id, meter, self.engine(site_id), self.store, self.engines.lock, start_ms, end_ms)

    def meter_status(self, site_id: str | None = None) -> list[dict[str, Any]]:
        """Per meter: id, site, gateway, role, last ts_ms / values / quality, and since this process
        started: readings, comm_errors."""
        return self.status.meter_rows(site_id)

    def gateway_status(self) -> list[dict[str, Any]]:
        """Per configured gateway: its retained status message (None until one arrives) and missing batches."""
        return self.status.gateway_rows(self.stats.seq_gaps)

    def hourly_series(self, site_id: str, start_ms: int, end_ms: int) -> list[dict[str, Any]]:
        """Per hour starting in [start_ms, end_ms), for dashboard charts (`accounting.live.series`)."""
        return self.engines.hourly_series(self.sites[site_id], start_ms, end_ms)

    def grid_factors(self, site_id: str, start_ms: int, end_ms: int) -> dict[str, Any]:
        """The factor dataset's provenance and the factors of each hour (`accounting.live.grid`)."""
        with self.engines.lock:
            return grid_factors(self.engines.engine(site_id), start_ms, end_ms)

    # -- the operator's log (accounting.live.watch, accounting.store.alarms) ---------------

    def alarms(self, site_id: str | None = None, *, active: bool | None = None, since_ms: int | None = None,
               limit: int = 200) -> list[dict[str, Any]]:
        """Alarms, newest first: active ones, ended ones (`active=False`) or both (None)."""
        return self.alarm_log.alarms(site_id, active=active, since_ms=since_ms, limit=limit)

    def acknowledge_alarm(self, alarm_id: int, by: str, note: str = "") -> dict[str, Any]:
        """Record an operator's acknowledgement (durable); an event alarm ends with it."""
        return self.alarm_log.acknowledge(alarm_id, by, note)

    def plant_changes(self, site_id: str | None = None, *, since_ms: int | None = None,
                      until_ms: int | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """What changed (lines started/stopped, factor, meters offline/online, gaps), newest first."""
        return self.alarm_log.changes(site_id, since_ms=since_ms, until_ms=until_ms, limit=limit)

    # -- write extras (accounting.api.types): thin delegates to portfolio / catalogue / recompute

    def certificates(self, site_id: str | None = None) -> list[dict[str, Any]]:
        """Claimed GECs (unbundled and bundled), of one site or all."""
        return self.portfolios.certificates(site_id)

    def add_certificate(self, certificate: dict[str, Any]) -> dict[str, Any]:
        """Claim a GEC durably for its site; the site's live market-based numbers include it at once."""
        site_id = str(certificate.get("site_id"))
        with self.engines.lock:
            row = self.portfolios.add_certificate(certificate, self._dataset(site_id))
            self._attach_instruments(site_id)
        return row

    def contracts(self, site_id: str | None = None) -> list[dict[str, Any]]:
        return self.portfolios.contracts(site_id)

    def technologies(self, site_id: str) -> dict[str, Any]:
        """The technologies the site's live dataset has a life-cycle factor for (instruments must name one)."""
        ds = self._dataset(site_id)
        return {"site_id": site_id, "dataset_id": ds.dataset_id, "dataset_version": ds.version,
                "gas_basis": ds.gas_basis, "kgco2e_per_kwh": dict(sorted(ds.technology_factors.items())),
                # A CO2-only dataset counts covered energy at 0 whatever its technology.
                "any_technology": ds.gas_basis == "co2"}

    def add_contract(self, contract: dict[str, Any]) -> dict[str, Any]:
        """Hold a green-power contract (and claim its bundled GECs) durably for its site."""
        site_id = str(contract.get("site_id"))
        with self.engines.lock:
            row = self.portfolios.add_contract(contract, self._dataset(site_id))
            self._attach_instruments(site_id)
        return row

    def _dataset(self, site_id: str) -> FactorDataset:
        return self.engines.engine(site_id).dataset if site_id in self.engines else dataset_for(self.sites[site_id])

    def _attach_instruments(self, site_id: str) -> None:
        """Swap the site's engine for one holding its current portfolio (same readings and clock)."""
        with self.engines.lock:
            if site_id in self.engines:
                engine = self.engines.engine(site_id).with_instruments(self.portfolios.portfolio(site_id))
                self.engines.install(site_id, engine)

    def factor_datasets(self) -> list[dict[str, Any]]:
        """Every factor dataset version (shipped and loaded), with the sites whose live engine uses it."""
        return self.factor_catalogue.listing(self.engines.datasets_in_use())

    def factor_dataset(self, spec: str) -> dict[str, Any]:
        """One dataset version or series with its values, provenance and verification."""
        return self.factor_catalogue.show(spec)

    def factor_diff(self, site_id: str, old: str, new: str, *, start_ms: int, end_ms: int) -> dict[str, Any]:
        """What ``new`` changes against ``old`` for each product of a site over a period."""
        site = self.sites[site_id]
        with self.engines.lock:
            portfolio = self.portfolios.portfolio(site_id)
        view = self._dataset(site_id)
        datasets = [self.factor_catalogue.resolve(spec).for_site(
            province=view.site_province, uncovered_rule=view.uncovered_rule) for spec in (old, new)]
        return factor_diff(site, self.store, *datasets, start_ms=start_ms, end_ms=end_ms, instruments=portfolio)

    def market_rules(self, site_id: str) -> dict[str, Any]:
        """The site's factor dataset as used, and its market-based settings (disclosed)."""
        site = self.sites[site_id]
        ds = self._dataset(site_id)
        return {"site_id": site_id, "factor_dataset": ds.ref, "factor_selection": ds.selection,
                "factor_region": ds.region_for(site_topology(site).grid_region),
                "uncovered_basis": ds.uncovered_basis(site_topology(site).grid_region),
                **selection.market_rules(site)}

    def import_certificates(self, site_id: str, text: str) -> list[dict[str, Any]]:
        """Claim a CSV certificate list for a site, all or none (`Portfolios.import_certificates`)."""
        with self.engines.lock:
            rows = self.portfolios.import_certificates(site_id, text, self._dataset(site_id))
            self._attach_instruments(site_id)
        return rows

    def add_factor_dataset(self, document: dict[str, Any]) -> dict[str, Any]:
        """Load a dataset version (append-only); available for recompute, live engines unchanged."""
        return self.factor_catalogue.row(self.factor_catalogue.add(document), [])

    def recompute(self, site_id: str, *, start_ms: int, end_ms: int,
                  dataset_version: str | None = None) -> dict[str, Any]:
        """Recompute [start_ms, end_ms) from stored readings into a new stored, versioned result.
        `dataset_version`: a version of the live dataset id, or `id@version`; the live one if None."""
        return self.recomputations.run(site_id, self.engines.engine(site_id), self.store,
                                       start_ms=start_ms, end_ms=end_ms, dataset_spec=dataset_version)

    def recompute_results(self, site_id: str | None = None) -> list[dict[str, Any]]:
        return self.recomputations.results(site_id)

    def recompute_result(self, site_id: str, result_version: int) -> dict[str, Any]:
        return self.recomputations.result(site_id, result_version)
