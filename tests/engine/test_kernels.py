"""Each kernel against a plain reference on seeded data, with corner cases."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from accounting.engine import Engine
from accounting.engine.kernels_energy import (
    FLAG_COUNTER_RESET,
    FLAG_GAP_SPREAD,
    FLAG_IMPLAUSIBLE,
    FLAG_REBASED,
    FLAG_REPLACED,
    FLAG_ROLLOVER,
    counter_to_hours,
    counter_to_hours_replaced,
    counters_to_hours_many,
)
from accounting.engine.kernels_market import STAGE_CONTRACT, STAGE_GEC, match_market
from accounting.factors import load_dataset
from tests.engine.plants import scenarios
from tests.engine.reference import channel_hourly, reference_footprints

H = 3_600_000
T0 = 1_740_787_200_000


def run_kernel(ts, val, rollover=0.0, max_rate=0.0, gap_ms=3 * 60_000):
    ts = np.asarray(ts, np.int64)
    val = np.asarray(val, np.float64)
    origin = int(ts[0] // H)
    n = int((ts[-1] - 1) // H) - origin + 1 if len(ts) > 1 else 1
    energy, est = np.zeros(n), np.zeros(n)
    flags = np.zeros(len(ts), np.uint8)
    counter_to_hours(ts, val, flags, 0, len(ts), rollover, max_rate, gap_ms, origin, origin, energy, est)
    return origin, energy, est, flags


def as_dict(origin, arr):
    return {origin + i: v for i, v in enumerate(arr) if v != 0.0}


CORNERS = {
    "single reading": ([T0], [5.0]),
    "exactly on hour boundaries": ([T0, T0 + H, T0 + 2 * H], [0.0, 10.0, 30.0]),
    "interval across many hours": ([T0 + 1000, T0 + 5 * H + 7], [0.0, 50.0]),
    "flat counter": ([T0, T0 + 60_000, T0 + 120_000], [7.0, 7.0, 7.0]),
    "reset to zero": ([T0, T0 + 60_000, T0 + 120_000], [9.0, 0.0, 1.0]),
    "rollover": ([T0, T0 + 60_000], [995.0, 3.0]),
    "drop far from rollover is a reset": ([T0, T0 + 60_000], [500.0, 3.0]),
    "implausible then back": ([T0, T0 + 60_000, T0 + 120_000, T0 + 180_000], [0.0, 900.0, 2.0, 3.0]),
    "drop too high for a reset, back at once: a glitch": ([T0 + k * 60_000 for k in range(4)], [700.0, 650.0, 702.0, 704.0]),
    "drop too high for a reset that stays: rebased": ([T0 + k * 60_000 for k in range(7)],
                                                      [700.0, 650.0, 651.0, 652.0, 653.0, 654.0, 656.0]),
}


@pytest.mark.parametrize("name", sorted(CORNERS))
def test_energy_kernel_corner_cases(name):
    ts, val = CORNERS[name]
    origin, energy, est, _ = run_kernel(ts, val, rollover=1000.0, max_rate=600.0)
    ref_e, ref_x = channel_hourly(list(zip(ts, val, strict=True)), 1000.0, 600.0, 3 * 60_000)
    assert as_dict(origin, energy) == pytest.approx({h: v for h, v in ref_e.items() if v})
    assert as_dict(origin, est) == pytest.approx({h: v for h, v in ref_x.items() if v})


def test_energy_kernel_flags():
    ts = [T0, T0 + 60_000, T0 + 120_000, T0 + 180_000, T0 + 3_600_000]
    _, _, _, flags = run_kernel(ts, [995.0, 3.0, 900.0, 1.0, 2.0], rollover=1000.0, max_rate=600.0)
    assert list(flags) == [0, FLAG_ROLLOVER, FLAG_IMPLAUSIBLE, FLAG_COUNTER_RESET, FLAG_GAP_SPREAD]


def test_plc_counter_restarted_on_a_saved_count_is_rebased_not_booked():
    """#14 item 5: a PLC simulator restart took units_total 11,507 → 11,489 and the engine booked
    11,489 units (the drop was taken for a reset; PLC counters had no cap). Now, with the PLC
    profile's cap (360,000 units/h), the drop is a glitch for the gap threshold (3 polls of
    0.25 s), then rebased: nothing booked for it, every unit after it counted."""
    poll = 250
    ts = [T0 + k * poll for k in range(14)]
    val = [11_505.0, 11_506.0, 11_507.0, 11_489.0, 11_489.0, 11_490.0, 11_490.0, 11_491.0, 11_492.0,
           11_493.0, 11_493.0, 11_494.0, 11_495.0, 11_496.0]
    origin, energy, _, flags = run_kernel(ts, val, max_rate=360_000.0, gap_ms=3 * poll)
    I, R = FLAG_IMPLAUSIBLE, FLAG_REBASED  # noqa: E741
    assert list(flags) == [0, 0, 0, I, I, I, R, 0, 0, 0, 0, 0, 0, 0]
    assert energy.sum() == pytest.approx(2.0 + (11_496 - 11_490))  # 11,505→11,507, then from the rebase
    ref_e, _ = channel_hourly(list(zip(ts, val, strict=True)), 0.0, 360_000.0, 3 * poll)
    assert as_dict(origin, energy) == pytest.approx({h: v for h, v in ref_e.items() if v})
    # without a cap (as before the PLC profile had one) the whole register is booked
    _, uncapped, _, _ = run_kernel(ts, val, max_rate=0.0, gap_ms=3 * poll)
    assert uncapped.sum() == pytest.approx(2.0 + 11_489 + 7)


def test_a_single_low_glitch_does_not_move_the_baseline():
    poll = 250
    ts = [T0 + k * poll for k in range(5)]
    _, energy, _, flags = run_kernel(ts, [11_507.0, 5_000.0, 11_508.0, 11_509.0, 11_509.0],
                                     max_rate=360_000.0, gap_ms=3 * poll)
    assert list(flags) == [0, FLAG_IMPLAUSIBLE, 0, 0, 0]
    assert energy.sum() == pytest.approx(2.0)


@pytest.mark.parametrize("seed", range(5))
def test_energy_kernel_seeded_against_reference(seed):
    rng = np.random.default_rng(seed)
    n = 500
    ts = T0 + np.cumsum(rng.integers(1, 20 * 60_000, n))
    val = np.cumsum(rng.uniform(0, 5, n))
    val[rng.integers(0, n, 3)] = 0.0  # resets
    origin, energy, est, _ = run_kernel(ts, val, max_rate=200.0, gap_ms=10 * 60_000)
    ref_e, ref_x = channel_hourly(list(zip(ts.tolist(), val.tolist(), strict=True)), 0.0, 200.0, 10 * 60_000)
    assert energy.sum() == pytest.approx(sum(ref_e.values()), rel=1e-12)
    for h, v in ref_e.items():
        assert energy[h - origin] == pytest.approx(v, rel=1e-9, abs=1e-9)
    for h, v in ref_x.items():
        assert est[h - origin] == pytest.approx(v, rel=1e-9, abs=1e-9)


def test_many_channels_kernel_matches_single():
    rng = np.random.default_rng(7)
    offsets, ts_all, val_all = [0], [], []
    for _ in range(6):
        n = int(rng.integers(0, 50))
        ts_all.append(T0 + np.cumsum(rng.integers(1, 30 * 60_000, n)))
        val_all.append(np.cumsum(rng.uniform(0, 3, n)))
        offsets.append(offsets[-1] + n)
    ts = np.concatenate(ts_all).astype(np.int64)
    val = np.concatenate(val_all)
    origin, n_h = T0 // H, 40
    energy, est = np.zeros((6, n_h)), np.zeros((6, n_h))
    z = np.zeros(6)
    counters_to_hours_many(ts, val, np.zeros(len(ts), np.uint8), np.array(offsets, np.int64), z, z,
                           np.full(6, 10 * 60_000, np.int64), origin, energy, est)
    for c in range(6):
        e1, x1 = np.zeros(n_h), np.zeros(n_h)
        lo, hi = offsets[c], offsets[c + 1]
        counter_to_hours(ts, val, np.zeros(len(ts), np.uint8), lo, hi, 0.0, 0.0, 10 * 60_000,
                         origin, origin, e1, x1)
        assert np.array_equal(energy[c], e1) and np.array_equal(est[c], x1)


def plain_market(cons, pv_self, pool_kwh, earmarked):
    """One window, one stage: PV pro rata, then the earmarked row, then the pool."""
    s = np.minimum(1, pv_self / cons.sum(axis=1))
    rem = cons * (1 - s)[:, None]
    member, kwh = earmarked
    d = rem[:, member].sum()
    take = min(kwh, d)
    rem[:, member] *= 1 - take / d
    d = rem.sum()
    rem *= 1 - min(pool_kwh, d) / d
    return cons * s[:, None], rem


@pytest.mark.parametrize("pool", [0.0, 5.0, 1e6])
def test_market_kernel_against_plain(pool):
    rng = np.random.default_rng(1)
    cons = rng.uniform(0, 10, (5, 3))
    pv = rng.uniform(0, 8, 5)
    member = np.array([1, 0, 0], np.uint8)
    cov = [np.zeros_like(cons) for _ in range(4)]
    used = np.zeros(2)
    match_market(cons, pv, 0.0, np.full(5, 0.5), np.array([0]), np.array([5]), np.array([0, 2]),
                 np.array([STAGE_CONTRACT, STAGE_GEC]), np.array([0, -1]), np.array([4.0, pool]),
                 np.zeros(2), member[None, :], *cov, used)
    pv_cov, rem = plain_market(cons, pv, pool, (member.astype(bool), 4.0))
    assert np.allclose(cov[0], pv_cov)
    assert np.allclose(cov[3], rem * 0.5)
    assert np.allclose(cov[0] + cov[1] + cov[2] + rem, cons)
    assert used[0] <= 4.0 and used[1] <= pool + 1e-12


@given(scenarios(instruments=False))
def test_allocation_kernel_against_reference_per_hour(sc):
    """allocate_hours (through the engine) against reference.allocate_hour, hour by hour."""
    engine = Engine(sc.topology, load_dataset("cn-mee-national-co2", "2022"))
    ch = np.array([engine.channel_index(m, c) for m, c, _, _ in sc.readings])
    engine.ingest(ch, np.array([r[2] for r in sc.readings]), np.array([r[3] for r in sc.readings]))
    _, hours = reference_footprints(sc.topology, engine.dataset, sc.readings, 0, 1)
    bal = engine.site_balance()
    assert [int(h // H) for h in bal.hour_start_ms] == sorted(hours)
    for i, h in enumerate(sorted(hours)):
        ref = hours[h]
        assert bal.columns["consumption_kwh"][i] == pytest.approx(ref.consumption, rel=1e-9, abs=1e-9)
        assert bal.columns["pv_self_kwh"][i] == pytest.approx(ref.pv_self, rel=1e-9, abs=1e-9)
        assert bal.columns["unallocated_kwh"][i] == pytest.approx(ref.unallocated, rel=1e-9, abs=1e-9)
        assert bool(bal.columns["alarm"][i]) == ref.alarm
        for fp in engine.footprints(h * H, (h + 1) * H):
            k = fp.product_id
            assert fp.energy_kwh == pytest.approx(ref.product_energy[k], rel=1e-9, abs=1e-9)
            assert fp.units == pytest.approx(ref.product_units[k], rel=1e-9, abs=1e-9)


def run_replaced(ts, val, replacements, max_rate=600.0, gap_ms=3 * 60_000):
    """``counter_to_hours_replaced`` over one channel; ``replacements`` [(at, old final, new initial)]."""
    ts = np.asarray(ts, np.int64)
    val = np.asarray(val, np.float64)
    origin = int(ts[0] // H)
    n = int((ts[-1] - 1) // H) - origin + 1 if len(ts) > 1 else 1
    energy, est = np.zeros(n), np.zeros(n)
    flags = np.zeros(len(ts), np.uint8)
    rep = sorted(replacements)
    counter_to_hours_replaced(ts, val, flags, 0, len(ts), 0.0, max_rate, gap_ms, origin, origin, energy, est,
                              np.array([r[0] for r in rep], np.int64), np.array([r[1] for r in rep], np.float64),
                              np.array([r[2] for r in rep], np.float64))
    ref_e, ref_x = channel_hourly(list(zip(ts.tolist(), val.tolist(), strict=True)), 0.0, max_rate, gap_ms, rep)
    assert as_dict(origin, energy) == pytest.approx({h: v for h, v in ref_e.items() if v}, rel=1e-12, abs=1e-12)
    assert as_dict(origin, est) == pytest.approx({h: v for h, v in ref_x.items() if v}, rel=1e-12, abs=1e-12)
    return energy, est, list(flags)


MINUTE = 60_000
STEPS = [T0 + k * MINUTE for k in range(6)]


def test_a_recorded_meter_replacement_books_the_step_exactly():
    """ACCOUNTING.md §1: (old final − E_{k−1}) + (E_k − new initial). The old meter read 1001.0,
    showed 1001.2 when taken out; the new one showed 5.0 when put in and reads 5.3 next."""
    val = [1000.0, 1000.5, 1001.0, 5.3, 5.9, 6.4]
    energy, est, flags = run_replaced(STEPS, val, [(STEPS[3] - 20_000, 1001.2, 5.0)], max_rate=60.0)
    assert flags == [0, 0, 0, FLAG_REPLACED, 0, 0]
    assert energy.sum() == pytest.approx(1.0 + 0.2 + 0.3 + 1.1, rel=1e-12)
    assert est.sum() == 0.0  # exact: both readings are recorded
    # without the record: a drop no reset explains, a glitch for the gap threshold, then rebased
    _, bare, _, bare_flags = run_kernel(STEPS + [T0 + 6 * MINUTE, T0 + 7 * MINUTE], val + [6.9, 7.4], max_rate=60.0)
    assert list(bare_flags) == [0, 0, 0, FLAG_IMPLAUSIBLE, FLAG_IMPLAUSIBLE, FLAG_IMPLAUSIBLE, FLAG_REBASED, 0]
    assert bare.sum() == pytest.approx(1.0 + 0.5)  # the step and what the new meter counted before the rebase: lost


def test_a_replacement_whose_new_register_is_above_the_old_baseline_is_booked_by_the_formula():
    """No backward step at all: without the record the rise 101.0 → 2000.4 would be booked (or
    rejected as implausible); with it, only what the two meters counted (0.5 + 0.4)."""
    energy, _, flags = run_replaced(STEPS[:4], [100.0, 100.5, 101.0, 2000.4], [(STEPS[3], 101.5, 2000.0)],
                                    max_rate=0.0)
    assert flags == [0, 0, 0, FLAG_REPLACED]  # a reading stamped at the replacement is the new meter's
    assert energy.sum() == pytest.approx(0.5 + 0.5 + (101.5 - 101.0) + (2000.4 - 2000.0), rel=1e-12)
    _, plain, _, _ = run_kernel(STEPS[:4], [100.0, 100.5, 101.0, 2000.4])
    assert plain.sum() == pytest.approx(1900.4)


def test_replacements_in_one_interval_and_records_that_do_not_fit():
    # two replacements between two readings: old 10 → 12 | 3 → 4 | 7 → 7.5
    energy, _, flags = run_replaced(STEPS[:2], [10.0, 7.5], [(T0 + 10_000, 12.0, 3.0), (T0 + 20_000, 4.0, 7.0)])
    assert flags == [0, FLAG_REPLACED] and energy.sum() == pytest.approx(2.0 + 1.0 + 0.5)
    # the new meter reads below its recorded initial value: the record does not fit, nothing is
    # booked for the step and the baseline moves (an alarm, like a rebase)
    energy, _, flags = run_replaced(STEPS[:3], [10.0, 2.0, 2.5], [(T0 + 30_000, 10.5, 4.0)])
    assert flags == [0, FLAG_REBASED | FLAG_REPLACED, 0] and energy.sum() == pytest.approx(0.5)
    # a replacement before the first reading or after the last changes nothing
    energy, _, flags = run_replaced(STEPS[:3], [10.0, 11.0, 12.0], [(T0 - 1, 0.0, 0.0), (STEPS[2] + 1, 99.0, 0.0)])
    assert flags == [0, 0, 0] and energy.sum() == pytest.approx(2.0)


@given(st.integers(0, 2**32 - 1), st.integers(1, 3), st.booleans())
def test_replacement_kernel_against_reference(seed, n_replacements, capped):
    """Random counters with replacements anywhere (between readings, on them, in gaps), new
    registers below and above the old ones, against the plain reference."""
    rng = np.random.default_rng(seed)
    n = 60
    ts = T0 + np.cumsum(rng.choice([MINUTE, MINUTE, 2 * MINUTE, 45 * MINUTE], n))
    val = np.cumsum(rng.uniform(0, 5, n))
    rep = []
    for _ in range(n_replacements):
        i = int(rng.integers(1, n))
        at = int(rng.integers(ts[i - 1] + 1, ts[i] + 1))
        old_final = float(val[i - 1] + rng.uniform(0, 2))
        new_initial = float(rng.choice([0.0, rng.uniform(0, 10), val[i - 1] + rng.uniform(0, 100)]))
        val[i:] += new_initial - old_final
        val = np.maximum(val, 0.0)
        rep.append((at, old_final, new_initial))
    if len({r[0] for r in rep}) < len(rep):
        return  # one record per instant (the site file refuses two)
    run_replaced(ts, val, rep, max_rate=600.0 if capped else 0.0)


def test_the_serial_kernels_release_the_interpreter_and_the_parallel_ones_keep_it():
    """The live feed's and the plant watch's kernels run without the GIL (`nogil=True`), so the
    admitting thread's Python goes on while the engine thread computes (issue #20: the feed
    kernel was ~10 % of the interpreter's time in a drain); their state is only touched under
    `LiveEngines.lock` or on the engine thread, so nothing reads it mid-kernel. The parallel
    kernels keep it: numba's workqueue threading layer (the fallback without TBB or OpenMP)
    terminates the process when two threads launch parallel kernels at once."""
    from accounting.engine import kernels_energy
    from accounting.engine.kernels_allocation import allocate_hours
    from accounting.live.kernels_watch import watch_rows

    serial = [kernels_energy.feed_channels, kernels_energy.run_readings, kernels_energy.finish_run,
              counter_to_hours, counter_to_hours_replaced, watch_rows]
    parallel = [counters_to_hours_many, allocate_hours, match_market]
    assert [k.__name__ for k in serial if not k.targetoptions.get("nogil")] == []
    assert [k.__name__ for k in parallel if not k.targetoptions.get("parallel")] == []
    assert [k.__name__ for k in parallel if k.targetoptions.get("nogil")] == []
