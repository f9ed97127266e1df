"""Compile the engine's numba kernels before the first reading arrives.

`cache=True` makes this cheap after the first run, but on a fresh install the first ingest
cycle would wait for LLVM for several seconds while holding unacknowledged MQTT messages;
brokers time out their PUBACK wait (amqtt gives up on the delivery) and operators see a
frozen dashboard. Running the real engine on synthetic readings of the site's own topology
compiles the kernels for exactly the argument types the service passes: the live feed, a late
reading placed from the raw tail, one re-spread from a store, footprints and a recomputation.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from accounting.engine.engine import Engine
from accounting.engine.settings import EngineSettings
from accounting.factors.dataset import FactorDataset
from accounting.topology import SiteTopology

HOUR_MS = 3_600_000
T0_MS = 1_735_689_600_000  # 2025-01-01T00:00Z, far from any live data


class _Readings:
    """An in-memory ``ReadingSource`` over the warm-up readings."""

    def __init__(self, keys: Sequence[tuple[str, str]], ts: np.ndarray, values: np.ndarray) -> None:
        self.keys, self.ts, self.values = list(keys), ts, values

    def channel_readings(self, meter_id: str, channels: Sequence[str], start_ms: int,
                         end_ms: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        sel = (self.ts >= start_ms) & (self.ts < end_ms)
        return {c: (self.ts[sel], self.values[sel]) for c in channels}


def warm_kernels(topology: SiteTopology, dataset: FactorDataset) -> None:
    """Run throwaway engines through the live, late, re-spread and bulk (recompute) paths."""
    ts = np.arange(T0_MS, T0_MS + 2 * HOUR_MS + 1, 60_000, dtype=np.int64)
    values = np.linspace(0.0, 100.0, ts.size)
    for settings in (EngineSettings(), EngineSettings(tail_s=0.0)):
        engine = Engine(topology, dataset, settings)
        engine.source = _Readings(engine.channel_keys, ts, values)
        n = len(engine.channel_keys)
        late = np.zeros(ts.size, bool)
        late[ts.size // 2] = True
        channels = np.repeat(np.arange(n, dtype=np.int64), int((~late).sum()))
        engine.ingest(channels, np.tile(ts[~late], n), np.tile(values[~late], n))
        engine.ingest(np.arange(n, dtype=np.int64), np.full(n, ts[late][0]),
                      np.full(n, values[late][0]))  # late: from the tail, or re-spread
        engine.footprints(T0_MS, T0_MS + 2 * HOUR_MS)
        engine.recompute((np.repeat(np.arange(n, dtype=np.int64), ts.size), np.tile(ts, n),
                          np.tile(values, n)), retain_readings=False)
