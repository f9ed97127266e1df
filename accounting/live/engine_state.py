"""A site's engine across restarts: restored from its last checkpoint plus the store, checkpointed.

The service's engines keep a bounded raw tail (``DEFAULT_TAIL_S``) and the store behind them
(``StoreSource``): memory, checkpoints and restarts cost channels x hours, not readings.

- **Restart with a checkpoint**: the engine is loaded from its last checkpoint (the hour blocks
  and per-channel state), then ``Engine.resume`` rebuilds, from the store, the hours from
  ``replay_margin_ms`` before each channel's newest checkpointed reading to the store's newest
  reading, and refills the raw tails. Readings stored but not yet fed when the process stopped
  are picked up; ones older than the margin are not (a later recompute includes them; being
  between two readings the engine has, they only move energy between hours, never totals).
- **Without a usable checkpoint** (first start, another topology or dataset, a corrupt file
  set aside by ``CheckpointStore``): the engine is rebuilt by streaming the store's readings
  in time windows (``ReadingStore.iter_channel_arrays``), with a progress line in the log
  every ``PROGRESS_S`` seconds; memory stays that of one window.
- **Checkpoints**: ``snapshot`` (under the engines' lock) copies only the hour blocks written
  since the previous checkpoint; ``save`` compresses and writes them in one SQLite
  transaction, outside the lock. If the checkpoint file broke meanwhile, the next one is full.

If the store cannot answer yet (InfluxDB down with acknowledged readings still in the spill
queue), the resume waits and is retried from the periodic jobs; the engine runs meanwhile.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from accounting.engine.checkpoint import Snapshot
from accounting.engine.engine import Engine
from accounting.engine.settings import DEFAULT_TAIL_S, EngineSettings
from accounting.errors import CheckpointError, SourceUnavailableError
from accounting.factors.dataset import FactorRegistry
from accounting.factors.selection import dataset_for
from accounting.instruments import InstrumentPortfolio
from accounting.site_topology import site_topology
from accounting.store.base import ReadingStore, StoredReading
from accounting.store.checkpoints import CheckpointStore
from accounting.store.source import StoreSource
from tanji.site import Site

log = logging.getLogger(__name__)

#: The service's engine settings: a bounded raw tail, the store behind it.
SERVICE_SETTINGS = EngineSettings(tail_s=DEFAULT_TAIL_S)
#: Seconds between progress lines of a rebuild from the store.
PROGRESS_S = 10.0
#: How long a restart waits for the store to take acknowledged readings still queued for it.
FLUSH_WAIT_S = 30.0


@dataclass
class Restored:
    """A site's engine as restored, and the stored readings it still has to be fed."""

    engine: Engine
    replay: list[StoredReading] = field(default_factory=list)
    sequences: dict[str, Any] = field(default_factory=dict)
    from_checkpoint: bool = False


class EngineState:
    """Restores and checkpoints the engines of one service (no checkpoints: always rebuilt)."""

    def __init__(self, store: ReadingStore, checkpoints: CheckpointStore | None, *,
                 replay_margin_ms: int = 3_600_000, settings: EngineSettings = SERVICE_SETTINGS) -> None:
        self.store = store
        self.checkpoints = checkpoints
        self.replay_margin_ms = replay_margin_ms
        self.settings = settings
        self._resume_due: set[str] = set()  # sites restored whose resume waits for the store

    def source(self, site_id: str) -> StoreSource:
        return StoreSource(self.store, site_id)

    def restore(self, site: Site, registry: FactorRegistry,
                instruments: InstrumentPortfolio | None) -> Restored:
        """The site's engine from its last checkpoint plus the store, or rebuilt from the store."""
        topology, dataset = site_topology(site), dataset_for(site, registry)
        source = self.source(site.id)
        saved = self.checkpoints.load_snapshot(site.id) if self.checkpoints is not None else None
        if saved is not None:
            try:
                engine = Engine.restore(saved.snapshot, topology, dataset, self.settings,
                                        instruments=instruments, source=source)
            except CheckpointError as exc:
                log.warning("site %s: checkpoint unusable (%s); rebuilding from the store", site.id, exc)
            else:
                self.store.flush(FLUSH_WAIT_S)
                self._resume(site.id, engine)
                return Restored(engine, [], saved.service.get("sequences", {}), from_checkpoint=True)
        engine = Engine(topology, dataset, self.settings, instruments=instruments, source=source)
        self.store.flush(FLUSH_WAIT_S)
        self.rebuild(site.id, engine)
        return Restored(engine)

    def _resume(self, site_id: str, engine: Engine) -> bool:
        t0 = time.monotonic()
        until = {meter: r.ts_ms + 1 for meter, r in self.store.latest(site_id).items()}
        try:
            reopened = engine.resume(self.replay_margin_ms, until)
        except SourceUnavailableError as exc:
            log.warning("site %s: engine restored from its checkpoint; the store cannot answer yet "
                        "(%s), its newest readings are added when it can", site_id, exc)
            self._resume_due.add(site_id)
            return False
        self._resume_due.discard(site_id)
        log.info("site %s: engine restored from checkpoint and the store's last %.0f min in %.1f s "
                 "(%d closed hours revised)", site_id, self.replay_margin_ms / 60_000,
                 time.monotonic() - t0, reopened)
        return True

    def retry(self, site_id: str, engine: Engine) -> None:
        """From the periodic jobs: finish a resume that waited for the store (engines' lock held)."""
        if site_id in self._resume_due:
            self._resume(site_id, engine)
        engine.retry_pending()

    def rebuild(self, site_id: str, engine: Engine) -> int:
        """Feed the engine every stored reading, window by window in time order; returns the
        number of channel values fed."""
        span = self.store.reading_span(site_id)
        if span is None:
            log.info("site %s: no stored readings; engine starts empty", site_id)
            return 0
        t0 = last_log = time.monotonic()
        total = 0
        for chunk in self.store.iter_channel_arrays(site_id, engine.channel_keys, span[0], span[1] + 1):
            engine.ingest(*chunk)
            total += len(chunk[0])
            if time.monotonic() - last_log >= PROGRESS_S:
                last_log = time.monotonic()
                done = (int(chunk[1].max()) - span[0]) / max(1, span[1] - span[0])
                log.info("site %s: rebuilding from the store, %.0f %% (%d channel values, %.0f s)",
                         site_id, 100 * done, total, last_log - t0)
        log.info("site %s: engine rebuilt from the store (%d channel values) in %.1f s, %.1f MB of "
                 "state", site_id, total, time.monotonic() - t0, engine.memory_bytes() / 1e6)
        return total

    def save(self, site_id: str, snapshot: Snapshot, engine: Engine, *,
             sequences: dict[str, Any]) -> int:
        """Keep one site's checkpoint (the engine's ``snapshot`` and its gateways' sequences);
        returns the bytes written. Outside the engines' lock: the snapshot is a copy."""
        if self.checkpoints is None:
            return 0
        meta = {"sequences": {k: v for k, v in sequences.items() if k.startswith(f"{site_id}/")}}
        try:
            return self.checkpoints.save_snapshot(site_id, int(time.time() * 1000), meta, snapshot)
        except CheckpointError as exc:
            log.error("site %s: checkpoint not saved (%s); the next one is full", site_id, exc)
            engine.mark_checkpoint_lost()
            return 0

    def close(self) -> None:
        if self.checkpoints is not None:
            self.checkpoints.close()

