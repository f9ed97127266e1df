"""The live feed kernel's fast path equals the general step, bit for bit; bundles fit kernels."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from accounting.engine import Engine
from accounting.engine.arrays import MarketWindows
from accounting.engine.kernels_allocation import (
    AllocationOutputs,
    AllocationTopology,
    allocate_hours,
)
from accounting.engine.kernels_energy import (
    FLAG_READ,
    FLAG_REPLACED,
    HOUR_MS,
    counter_to_hours_replaced,
)
from accounting.engine.kernels_market import match_market
from accounting.factors import load_dataset
from accounting.topology import CostCentre, Meter, Product, SiteTopology
from tanji.replacements import MeterReplacement

T0 = 1_740_787_200_000


def topology(max_power_kw: float, rollover_kwh: float, replacements: tuple = ()) -> SiteTopology:
    return SiteTopology("k", "East", (
        Meter("m", "grid_import", ("energy_import_kwh",), poll_period_s=10, max_power_kw=max_power_kw,
              rollover_kwh=rollover_kwh, replacements=replacements),
        Meter("p", "production_counter", ("units_total",), cost_centre="L", poll_period_s=10)),
        (CostCentre("L"),), (Product("P", line="L", units_meter="p"),))


def readings(rng: np.random.Generator, n: int, rollover: float) -> tuple[np.ndarray, np.ndarray]:
    ts = T0 + np.cumsum(rng.choice([10_000, 10_000, 10_000, 9_000, 300_000], n))
    val = np.cumsum(rng.uniform(0, 2, n))
    val[rng.integers(0, n, 3)] = 0.5  # resets
    val[rng.integers(0, n, 3)] += 900.0  # implausible spikes
    if rollover:
        val = val % rollover
    return ts.astype(np.int64), val


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("per_call", [1, 7, 10_000])
def test_live_feed_equals_the_general_step(seed, per_call):
    rng = np.random.default_rng(seed)
    max_power, rollover = (0.0, 0.0) if seed % 2 else (300.0, 1000.0)
    ts, val = readings(rng, 3000, rollover)
    # meter replacements: one between two readings, one on a reading, one spanning a gap
    at = [int(ts[700]) - 1, int(ts[1500]), int(ts[2200]) - 5_000] if seed % 3 == 0 else []
    replacements = tuple(MeterReplacement(a, {"energy_import_kwh": float(val[i - 1]) + 0.25},
                                          {"energy_import_kwh": float(val[i]) - 0.5 * k})
                         for k, (a, i) in enumerate(zip(at, (700, 1500, 2200), strict=False)))
    engine = Engine(topology(max_power, rollover, replacements), load_dataset("cn-mee-national-co2", "2022"))
    c = engine.channel_index("m", "energy_import_kwh")
    for i in range(0, len(ts), per_call):
        engine.ingest(np.full(len(ts[i:i + per_call]), c), ts[i:i + per_call], val[i:i + per_call])
    origin = int(ts[0] // HOUR_MS)
    n_h = int((ts[-1] - 1) // HOUR_MS) - origin + 1
    energy, est = np.zeros(n_h), np.zeros(n_h)
    flags = np.zeros(len(ts), np.uint8)
    counter_to_hours_replaced(ts, val, flags, 0, len(ts), rollover, max_power, 30_000, origin, origin, energy, est,
                              np.array(at, np.int64), np.array([r.old_final["energy_import_kwh"] for r in replacements]),
                              np.array([r.new_initial["energy_import_kwh"] for r in replacements]))
    assert bool(at) == bool((flags & FLAG_REPLACED).any())
    hours, kwh = engine.hourly_energy("m", "energy_import_kwh")
    assert np.array_equal(hours // HOUR_MS, np.arange(origin, origin + n_h))
    assert np.array_equal(kwh, energy)  # bit for bit
    st = engine._state
    assert np.array_equal(st.est[origin - st.origin:origin - st.origin + n_h, c], est)
    # per-hour flags: the OR of the readings' flags in the hour they end, plus FLAG_READ
    flag_hour = (ts - 1) // HOUR_MS
    want = np.zeros(flag_hour[-1] - flag_hour[0] + 1, np.uint8)
    np.bitwise_or.at(want, flag_hour - flag_hour[0], flags | FLAG_READ)
    got = st.flags[flag_hour[0] - st.origin:flag_hour[-1] - st.origin + 1, c]
    assert np.array_equal(got, want)


def test_kernel_bundles_are_the_kernels_parameters_in_order():
    """The bundles are the one place the kernels' argument order is written."""
    params = list(inspect.signature(allocate_hours.py_func).parameters)
    assert params == ["energy", "est", "t", "out"]
    src = inspect.getsource(allocate_hours.py_func)
    for name in AllocationTopology._fields:
        assert f"t.{name}" in src, name
    for name in AllocationOutputs._fields:
        assert f"out.{name}" in src, name
    market = list(inspect.signature(match_market.py_func).parameters)
    start = market.index(MarketWindows._fields[0])
    assert tuple(market[start:start + len(MarketWindows._fields)]) == MarketWindows._fields


def test_finishing_a_rebuild_before_any_hour_closed_ends():
    """A restart from a checkpoint taken before the first reading resumes from the store with no
    closed hour (last_closed = NO_TS): `range(lo, NO_TS + 1)` overflowed numba's int64 range
    length and finish_run looped for ever (the accounting process hung in Engine.resume)."""
    from accounting.engine.kernels_energy import (
        NO_TS,
        R_CLIP,
        R_SWEEP,
        R_ZEROED,
        Hours,
        finish_run,
        new_run,
    )

    run, _ = new_run()
    run[R_CLIP], run[R_ZEROED], run[R_SWEEP] = 498_873, 498_875, 1
    shape = (26, 14)
    hours = Hours(np.zeros(shape), np.zeros(shape), np.zeros(shape, np.uint8), np.zeros(shape, np.int64),
                  np.zeros(shape), 498_873)
    reopen = np.zeros(26, np.uint8)
    finish_run(0, 498_874, hours, run, np.empty(0), NO_TS, reopen)
    assert not reopen.any()
