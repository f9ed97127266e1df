"""Compile the accounting engine's numba kernels while the image is built, into NUMBA_CACHE_DIR.

Without it the first footprint after every container start waits for LLVM (tens of seconds
on a small box), exactly when an operator opens the dashboard to see whether the restart
worked. The kernels are compiled by running the real engine on the shipped site's topology
with two hours of synthetic readings, so they are compiled for the argument types the
service really passes (a hand-written signature list would drift from the engine).

Numba keys its cache on the CPU: an image built on one CPU model and run on another
recompiles once at first use, then caches again (NUMBA_CACHE_DIR must stay writable).

    python docker/warm_numba.py SITE_FILE
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numba
import numpy as np

from accounting.engine import kernels_allocation, kernels_energy, kernels_market
from accounting.engine.engine import Engine
from accounting.factors.dataset import load_dataset
from accounting.site_topology import site_topology
from tanji.site import load_site

HOUR_MS = 3_600_000
T0_MS = 1_735_689_600_000  # 2025-01-01T00:00Z
KERNEL_MODULES = (kernels_energy, kernels_allocation, kernels_market)


def warm(site_file: str) -> list[str]:
    """Run the engine once; returns the kernels that were compiled."""
    site = load_site(site_file)
    engine = Engine(site_topology(site), load_dataset("cn-mee-regional-co2"))
    ts = np.arange(T0_MS, T0_MS + 2 * HOUR_MS + 1, 60_000, dtype=np.int64)
    channels, times, values = [], [], []
    for index in range(len(engine.channel_keys)):
        channels.append(np.full(ts.size, index, dtype=np.int64))
        times.append(ts)
        values.append(np.linspace(0.0, 100.0, ts.size))
    readings = (np.concatenate(channels), np.concatenate(times), np.concatenate(values))
    engine.ingest(*readings)  # the live path
    engine.footprints(T0_MS, T0_MS + 2 * HOUR_MS)
    engine.recompute(readings)  # the bulk path: restarts and recomputation from the store
    return [f"{module.__name__}.{name}" for module in KERNEL_MODULES
            for name, obj in vars(module).items()
            if isinstance(obj, numba.core.registry.CPUDispatcher) and obj.signatures]


def main() -> int:
    cache = os.environ.get("NUMBA_CACHE_DIR")
    if not cache:
        sys.exit("warm_numba: set NUMBA_CACHE_DIR, or the cache lands beside the installed sources")
    compiled = warm(sys.argv[1])
    index_files = list(Path(cache).rglob("*.nbi"))
    if not compiled or not index_files:
        sys.exit(f"warm_numba: nothing was compiled into {cache}")
    print(f"warm_numba: {len(compiled)} kernels cached in {cache}: {', '.join(compiled)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
