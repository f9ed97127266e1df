"""The machine's own speed, measured in the same run as a benchmark's figures.

An absolute figure (readings/s, polls/s) says as much about the machine that ran it as about
Tanji: the same benchmark gave 45k readings/s on one machine and 120k on another. Every
benchmark therefore carries, under the key ``machine`` of its JSON line, two figures of the
machine measured in the same run with nothing of Tanji in them:

- ``json_loads_readings_per_s``: bare ``json.loads`` of fleet-shaped wire payloads (100
  readings a message, the format the gateways publish), per reading: the interpreter speed
  every Python stage of ingest pays at least once a reading;
- ``memory_copy_gb_s``: bytes per second of a plain copy of a 64 MiB buffer (``memcpy``
  through a memoryview: read + write, no cache reuse): the memory bandwidth the numba
  kernels and the stores' bulk paths depend on;

plus what makes a shared machine's figures readable: ``cpu_count``, the 1-minute load average
when the benchmark started (``load_1m``; above ``cpu_count`` the figures are contended) and
the Python version. Each figure is the median of a few short repetitions (well under a second
in all), so it reflects the machine in the state the benchmark found it.

Quote a benchmark figure together with these, or as a ratio to them measured in the same run:
two machines' ratios compare, their absolute figures do not.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPEATS = 5
_COPY_BYTES = 64 * 2**20


def fleet_payload(meters: int = 100) -> bytes:
    """A wire-format batch as a gateway publishes it: `meters` readings of an energy meter."""
    from tanji.wire import encode_batch

    readings = [{"meter": f"m{i}", "ts_ms": 1_700_000_000_000, "quality": "good",
                 "values": {"energy_import_kwh": 12345.678 + i, "power_kw": 21.5}} for i in range(meters)]
    return encode_batch("fleet", "gw", 1, readings)


def json_loads_readings_per_s(meters: int = 100, readings: int = 50_000) -> float:
    """Readings/s of bare `json.loads` on fleet-shaped payloads (median of `REPEATS` rounds)."""
    payload = fleet_payload(meters)
    n = max(1, readings // meters)
    rates = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        for _ in range(n):
            json.loads(payload)
        rates.append(n * meters / (time.perf_counter() - started))
    return statistics.median(rates)


def memory_copy_gb_s(size: int = _COPY_BYTES) -> float:
    """Bytes/s (in GB, 1e9) of copying a buffer larger than any cache (median of `REPEATS`)."""
    src = bytearray(os.urandom(4096)) * (size // 4096)
    dst = bytearray(len(src))
    view = memoryview(dst)
    view[:] = src  # touch every page once before timing
    rates = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        view[:] = src
        rates.append(len(src) / (time.perf_counter() - started) / 1e9)
    return statistics.median(rates)


def machine_baseline() -> dict[str, float | int | str | None]:
    """The `machine` object every benchmark's JSON line carries (see the module docstring).

    Measured in a child process, so that the 128 MiB of copy buffers never count in the
    calling benchmark's peak RSS and its threads do not compete with the measurement.
    """
    out = subprocess.run([sys.executable, __file__], capture_output=True, text=True, timeout=300, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure() -> dict[str, float | int | str | None]:
    """The figures of `machine_baseline`, in this process."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {
        "json_loads_readings_per_s": round(json_loads_readings_per_s()),
        "memory_copy_gb_s": round(memory_copy_gb_s(), 2),
        "cpu_count": os.cpu_count(),
        "load_1m": round(load, 2) if load is not None else None,
        "python": platform.python_version(),
    }


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    print(json.dumps(measure()))
