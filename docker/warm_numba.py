"""Compile the accounting engine's numba kernels while the image is built, into NUMBA_CACHE_DIR.

Without it the first footprint (and the plant watch's first pass over readings) after every container start waits for LLVM (tens of seconds
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

from accounting.engine import kernels_allocation, kernels_energy, kernels_market
from accounting.engine.warmup import warm_kernels
from accounting.factors.selection import dataset_for
from accounting.live import kernels_watch
from accounting.live.watch import PlantWatch
from accounting.site_topology import site_topology
from accounting.store.alarms import AlarmStore
from tanji.site import load_site

KERNEL_MODULES = (kernels_energy, kernels_allocation, kernels_market, kernels_watch)


def warm(site_file: str) -> list[str]:
    """Run the engine once; returns the kernels that were compiled."""
    site = load_site(site_file)
    warm_kernels(site_topology(site), dataset_for(site))
    PlantWatch({site.id: site}, AlarmStore(), _no_engine)  # its pass over readings (kernels_watch)
    return [f"{module.__name__}.{name}" for module in KERNEL_MODULES
            for name, obj in vars(module).items()
            if isinstance(obj, numba.core.registry.CPUDispatcher) and obj.signatures]


def _no_engine(site_id: str) -> None:
    raise KeyError(site_id)


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
