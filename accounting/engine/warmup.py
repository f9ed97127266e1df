"""Compile the engine's numba kernels before the first reading arrives.

`cache=True` makes this cheap after the first run, but on a fresh install the first ingest
cycle would wait for LLVM for several seconds while holding unacknowledged MQTT messages;
brokers time out their PUBACK wait (amqtt gives up on the delivery) and operators see a
frozen dashboard. Running the real engine on synthetic readings of the site's own topology
compiles the kernels for exactly the argument types the service passes.
"""

from __future__ import annotations

import numpy as np

from accounting.engine.engine import Engine
from accounting.factors.dataset import FactorDataset
from accounting.topology import SiteTopology

HOUR_MS = 3_600_000
T0_MS = 1_735_689_600_000  # 2025-01-01T00:00Z, far from any live data


def warm_kernels(topology: SiteTopology, dataset: FactorDataset) -> None:
    """Run a throwaway engine through the live and the bulk (recompute) paths."""
    engine = Engine(topology, dataset)
    ts = np.arange(T0_MS, T0_MS + 2 * HOUR_MS + 1, 60_000, dtype=np.int64)
    n = len(engine.channel_keys)
    channels = np.repeat(np.arange(n, dtype=np.int64), ts.size)
    times = np.tile(ts, n)
    values = np.tile(np.linspace(0.0, 100.0, ts.size), n)
    engine.ingest(channels, times, values)
    engine.footprints(T0_MS, T0_MS + 2 * HOUR_MS)
    engine.recompute((channels, times, values))
