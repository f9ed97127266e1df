"""Engine benchmark: ingest-kernel throughput and a year recomputation.

Prints progress lines, then as its LAST line one JSON object:

- ``readings_per_s``: the counters -> hourly energy kernel (``counters_to_hours_many``) on
  sorted 1-minute readings, after compilation;
- ``live_ingest_readings_per_s``: ``Engine.ingest`` fed one reading of every channel per call
  (one poll cycle per MQTT batch), the live path with its per-channel bookkeeping;
- ``python_reference_readings_per_s`` and ``numpy_readings_per_s``: the plain-Python reference
  and a vectorised numpy version of the same step, measured in the same run (baselines);
- ``year_recompute_s``: ``Engine.recompute`` of a year of 1-minute readings of 1,000 meters
  (525.6 M readings; hourly factors, hourly matching, all products), readings streamed in
  per-meter chunks; data generation time is excluded and reported as ``year_generate_s``;
- ``peak_rss_mb``;
- ``machine``: the machine's baseline measured in the same run (benchmarks/machine.py).

``--quick`` runs the same pipeline on 200 meters x 30 days (< 30 s).
Usage: ``.venv/bin/python benchmarks/engine.py [--quick]``
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numba
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from accounting.engine import Engine  # noqa: E402
from accounting.engine.kernels_energy import HOUR_MS, counters_to_hours_many  # noqa: E402
from accounting.factors import FactorDataset  # noqa: E402
from accounting.instruments import GecLedger, GreenPowerContract, InstrumentPortfolio  # noqa: E402
from accounting.topology import CostCentre, Meter, Product, SiteTopology  # noqa: E402
from benchmarks.machine import machine_baseline  # noqa: E402
from tests.engine.reference import channel_hourly  # noqa: E402

T0 = 1_735_660_800_000  # 2025-01-01T00:00+08:00
MINUTE = 60_000


@numba.njit(cache=True, parallel=True)
def generate(first_channel: int, n_channels: int, n_per: int, rates: np.ndarray, seed: int,
             ch: np.ndarray, ts: np.ndarray, val: np.ndarray) -> None:
    """Deterministic 1-minute cumulative readings for channels first..first+n-1 (sorted)."""
    for j in numba.prange(n_channels):
        c = first_channel + j
        state = np.uint64(seed * 1_000_003 + c * 7919 + 1)
        v = 0.0
        base = j * n_per
        for k in range(n_per):
            state ^= state << np.uint64(13)
            state ^= state >> np.uint64(7)
            state ^= state << np.uint64(17)
            u = (state >> np.uint64(11)) * (1.0 / 9007199254740992.0)
            v += rates[c] * (0.5 + u)
            ch[base + k] = c
            ts[base + k] = T0 + k * MINUTE + int(u * 2000)
            val[base + k] = v


def plant(n_meters: int) -> tuple[SiteTopology, int]:
    """A site with one incomer (import+export), PV, utilities, lines with several submeters,
    one production counter and product per line. Returns (topology, number of channels)."""
    n_lines = max(1, n_meters // 5)
    n_util = max(1, n_meters // 20)
    n_sub = n_meters - 2 - n_util - n_lines
    lines = [f"L{i}" for i in range(n_lines)]
    meters = [Meter("grid", "grid_import", ("energy_import_kwh", "energy_export_kwh"),
                    accuracy_class_pct=0.5, max_power_kw=1e7),
              Meter("pv", "pv", ("energy_import_kwh",), max_power_kw=1e6)]
    ccs = [CostCentre(line) for line in lines]
    for u in range(n_util):
        ccs.append(CostCentre(f"U{u}", kind="utility", allocation_key=("energy", "units")[u % 2]))
        meters.append(Meter(f"u{u}", "submeter", ("energy_import_kwh",), cost_centre=f"U{u}",
                            max_power_kw=1e5))
    for s in range(n_sub):
        meters.append(Meter(f"s{s}", "submeter", ("energy_import_kwh",),
                            cost_centre=lines[s % n_lines], max_power_kw=1e5))
    products = []
    for i, line in enumerate(lines):
        meters.append(Meter(f"plc{i}", "production_counter", ("units_total",), cost_centre=line,
                            max_power_kw=1e6))
        products.append(Product(f"P{i}", line=line, units_meter=f"plc{i}"))
    topo = SiteTopology("bench", "East", tuple(meters), tuple(ccs), tuple(products),
                        matching_mode="hourly", remainder_key="energy")
    return topo, len(topo.counter_keys())


def channel_rates(topo: SiteTopology) -> np.ndarray:
    """kWh (or units) per minute of each channel, consistent enough to leave a positive remainder."""
    rates = []
    for m in topo.meters:
        for c in m.counter_channels:
            if m.role == "grid_import":
                rates.append(1.0 * len(topo.meters) if c == "energy_import_kwh" else 0.5)
            elif m.role == "pv":
                rates.append(20.0)
            elif m.role == "production_counter":
                rates.append(2.0)
            else:
                rates.append(0.6)
    return np.array(rates)


def hourly_dataset(n_hours: int) -> FactorDataset:
    hours = T0 + np.arange(n_hours + 48, dtype=np.int64) * HOUR_MS
    values = 0.55 + 0.1 * np.sin(np.arange(len(hours)) * 2 * np.pi / 24)
    return FactorDataset("bench-hourly", "1", "benchmark", "2025-01-01", "synthetic", "kgCO2/kWh",
                         "co2", "hourly", {"East": dict(zip(hours.tolist(), values.tolist(), strict=True))},
                         residual_mix={"East": dict(zip(hours.tolist(), (values + 0.05).tolist(), strict=True))})


def numpy_counters_to_hours(ch: np.ndarray, ts: np.ndarray, val: np.ndarray, n_ch: int,
                            hour_origin: int, n_hours: int) -> np.ndarray:
    """The vectorised numpy baseline: deltas with reset handling, pro rata split over at most
    two hour buckets (1-minute readings), accumulated with bincount."""
    same = ch[1:] == ch[:-1]
    d = val[1:] - val[:-1]
    d = np.where(d >= 0, d, val[1:])[same]
    a, b, c = ts[:-1][same], ts[1:][same], ch[1:][same]
    ha = a // HOUR_MS
    split = np.minimum(b, (ha + 1) * HOUR_MS)
    first = d * ((split - a) / (b - a))
    idx = c * n_hours + (ha - hour_origin)
    out = np.bincount(idx, weights=first, minlength=n_ch * n_hours)
    out += np.bincount(np.minimum(idx + 1, n_ch * n_hours - 1), weights=d - first,
                       minlength=n_ch * n_hours)
    return out.reshape(n_ch, n_hours)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 meters x 30 days")
    parser.add_argument("--meters", type=int, help="meters (overrides --quick's and the default 1000)")
    parser.add_argument("--days", type=int, help="days of 1-minute readings (overrides 30 / 365)")
    args = parser.parse_args()
    machine = machine_baseline()
    n_meters, days = (200, 30) if args.quick else (1000, 365)
    n_meters, days = args.meters or n_meters, args.days or days
    n_per = days * 24 * 60
    topo, n_ch = plant(n_meters)
    rates = channel_rates(topo)
    n_hours = days * 24
    chunk_channels = 25

    # ---- kernel throughput on one chunk of sorted readings (compile first)
    def make_chunk(first: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ch = np.empty(n * n_per, np.int64)
        ts = np.empty(n * n_per, np.int64)
        val = np.empty(n * n_per, np.float64)
        generate(first, n, n_per, rates, 42, ch, ts, val)
        return ch, ts, val

    ch, ts, val = make_chunk(0, min(chunk_channels, n_ch))
    n_k = len(ch)
    offsets = np.searchsorted(ch, np.arange(n_ch + 1)).astype(np.int64)
    z = np.zeros(n_ch)
    gap = np.full(n_ch, 3 * MINUTE, np.int64)
    origin = T0 // HOUR_MS
    energy = np.zeros((n_ch, n_hours + 1))
    est = np.zeros_like(energy)
    flags = np.zeros(n_k, np.uint8)
    counters_to_hours_many(ts[:1000], val[:1000], flags, offsets.clip(max=1000), z, z, gap, origin, energy, est)
    best = float("inf")
    for _ in range(3):
        energy[:] = 0.0
        t = time.perf_counter()
        counters_to_hours_many(ts, val, flags, offsets, z, z, gap, origin, energy, est)
        best = min(best, time.perf_counter() - t)
    readings_per_s = n_k / best
    print(f"kernel: {n_k:,} readings in {best:.3f} s = {readings_per_s:,.0f}/s", flush=True)

    n_np = 5 * n_per  # a few channels: numpy's temporaries would dominate peak memory
    t = time.perf_counter()
    np_energy = numpy_counters_to_hours(ch[:n_np], ts[:n_np], val[:n_np], n_ch, origin, n_hours + 1)
    numpy_s = time.perf_counter() - t
    assert np.allclose(np_energy[:5].sum(axis=1), energy[:5].sum(axis=1))
    numpy_readings_per_s = n_np / numpy_s
    print(f"numpy: {numpy_readings_per_s:,.0f}/s", flush=True)

    n_py = min(200_000, len(ts))
    sample = list(zip(ts[:n_py].tolist(), val[:n_py].tolist(), strict=True))
    t = time.perf_counter()
    channel_hourly(sample, 0.0, 0.0, 3 * MINUTE)
    python_readings_per_s = n_py / (time.perf_counter() - t)
    print(f"python reference: {python_readings_per_s:,.0f}/s", flush=True)
    del ch, ts, val, flags, energy, est, np_energy, sample

    # ---- live path: one ingest call per minute carrying one reading of every channel
    live = Engine(topo, hourly_dataset(n_hours))
    batch_ch = np.arange(n_ch, dtype=np.int64)
    minutes = 60
    t = time.perf_counter()
    for k in range(minutes):
        live.ingest(batch_ch, np.full(n_ch, T0 + k * MINUTE, np.int64), rates * k)
    live_readings_per_s = minutes * n_ch / (time.perf_counter() - t)
    print(f"live ingest (1-minute batches of {n_ch} readings): {live_readings_per_s:,.0f}/s", flush=True)
    del live

    # ---- recompute a period from streamed per-meter chunks
    ledger = GecLedger()
    portfolio = InstrumentPortfolio("bench", ledger)
    portfolio.add_contract(GreenPowerContract(
        "ppa", "wind_onshore", "Gansu", "hourly",
        tuple((T0 + h * HOUR_MS, 200.0 * (h % 24 < 12)) for h in range(n_hours))))
    engine = Engine(topo, hourly_dataset(n_hours), instruments=portfolio)
    gen_s = 0.0

    def chunks():
        nonlocal gen_s
        for first in range(0, n_ch, chunk_channels):
            t = time.perf_counter()
            chunk = make_chunk(first, min(chunk_channels, n_ch - first))
            gen_s += time.perf_counter() - t
            yield chunk

    warm = make_chunk(0, 2)
    engine.recompute([tuple(x[: 2 * 24 * 60] for x in warm)])  # load the compiled kernels
    t = time.perf_counter()
    result = engine.recompute(chunks(), retain_readings=False)
    total_s = time.perf_counter() - t
    recompute_s = total_s - gen_s
    n_total = n_ch * n_per
    fp = result.footprints[0]
    print(f"recompute: {n_total:,} readings, {len(result.footprints)} products in {recompute_s:.2f} s "
          f"(+{gen_s:.2f} s generating); P0 {fp.kgco2e_per_unit_market:.4f} kg/unit", flush=True)
    print(json.dumps({
        "quick": args.quick,
        "meters": n_meters,
        "channels": n_ch,
        "readings": n_total,
        "readings_per_s": round(readings_per_s),
        "python_reference_readings_per_s": round(python_readings_per_s),
        "numpy_readings_per_s": round(numpy_readings_per_s),
        "live_ingest_readings_per_s": round(live_readings_per_s),
        "speedup_vs_python": round(readings_per_s / python_readings_per_s, 1),
        "speedup_vs_numpy": round(readings_per_s / numpy_readings_per_s, 1),
        ("year_recompute_s" if not args.quick else "quick_recompute_s"): round(recompute_s, 3),
        "year_generate_s" if not args.quick else "quick_generate_s": round(gen_s, 3),
        "threads": numba.get_num_threads(),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "machine": machine,
    }))


if __name__ == "__main__":
    main()
