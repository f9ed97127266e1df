"""A site's engine across restarts: restored from its last checkpoint plus the store, checkpointed.

On start each engine is restored from its last checkpoint and the store's readings since
(minus a margin for late ones), or, without a usable checkpoint, from all stored readings, so
a restart neither loses nor double counts (the engine ignores the overlap). A checkpoint is
taken only over readings that are durable, so "checkpoint + store" always covers everything
acknowledged. The ingest state kept beside it (batch sequence numbers) travels in its meta.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from accounting.engine.engine import Engine
from accounting.errors import CheckpointError
from accounting.factors import selection
from accounting.factors.dataset import FactorDataset, FactorRegistry
from accounting.instruments import InstrumentPortfolio
from accounting.site_topology import site_topology
from accounting.store.base import ReadingStore, StoredReading
from accounting.store.checkpoints import CheckpointStore
from tanji.site import Site

log = logging.getLogger(__name__)

# Product footprints (GB/T 24067 / ISO 14067) need the lifecycle basis: upstream fuel supply and
# grid losses included (ACCOUNTING.md §3). The MEE CO2-only factors are for Scope 2 reporting.
DEFAULT_DATASET = selection.DEFAULT_DATASET


def dataset_for(site: Site, registry: FactorRegistry | None = None) -> FactorDataset:
    """The site's factor dataset as it uses it (`accounting.factors.selection.dataset_for`)."""
    return selection.dataset_for(site, registry)


@dataclass
class Restored:
    """A site's engine as restored, and the stored readings it still has to be fed."""

    engine: Engine
    replay: list[StoredReading]
    sequences: dict[str, Any] = field(default_factory=dict)
    from_checkpoint: bool = False


class EngineState:
    """Restores and checkpoints the engines of one service (no checkpoints: always rebuilt)."""

    def __init__(self, store: ReadingStore, checkpoints: CheckpointStore | None, *,
                 replay_margin_ms: int = 3_600_000) -> None:
        self.store = store
        self.checkpoints = checkpoints
        self.replay_margin_ms = replay_margin_ms

    def restore(self, site: Site, registry: FactorRegistry,
                instruments: InstrumentPortfolio | None) -> Restored:
        """Engine = last checkpoint + stored readings since (minus a margin for late ones), or all stored."""
        topology, dataset = site_topology(site), dataset_for(site, registry)
        engine, since_ms, sequences = None, 0, {}
        saved = self.checkpoints.load(site.id) if self.checkpoints is not None else None
        if saved is not None:
            _, meta, blob = saved
            try:
                engine = Engine.restore(blob, topology, dataset, instruments=instruments)
                since_ms = max(0, int(meta["replay_from_ms"]) - self.replay_margin_ms)
                sequences = meta.get("sequences", {})
            except CheckpointError as exc:
                log.warning("site %s: checkpoint unusable (%s); rebuilding from the store", site.id, exc)
                engine, since_ms = None, 0
        from_checkpoint = engine is not None and since_ms > 0
        engine = engine or Engine(topology, dataset, instruments=instruments)
        rows = self.store.read_readings(site.id, None, since_ms, 2**62)
        log.info("site %s: engine %s, %d stored readings replayed", site.id,
                 "restored from checkpoint" if from_checkpoint else "rebuilt", len(rows))
        return Restored(engine, rows, sequences, from_checkpoint)

    def save(self, site_id: str, blob: bytes, *, replay_from_ms: int, sequences: dict[str, Any]) -> None:
        """Keep one site's checkpoint: the engine `blob`, where replay must start, its gateways' sequences."""
        if self.checkpoints is None:
            return
        meta = {"replay_from_ms": replay_from_ms,
                "sequences": {k: v for k, v in sequences.items() if k.startswith(f"{site_id}/")}}
        self.checkpoints.save(site_id, int(time.time() * 1000), meta, blob)

    def close(self) -> None:
        if self.checkpoints is not None:
            self.checkpoints.close()
