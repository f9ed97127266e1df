"""The raw-tail arena is mapped page by page: zeros like `np.zeros`, resident only where written,
and the kernels compute the same hours over it (accounting/engine/state.py, `sparse_zeros`)."""

from __future__ import annotations

import mmap

import numpy as np
import pytest

from accounting.engine import Engine, EngineSettings
from accounting.engine import state as engine_state
from accounting.factors import load_dataset
from tests.engine.test_live_kernel import topology

T0 = 1_740_787_200_000
MIB = 1 << 20


def _resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * mmap.PAGESIZE


@pytest.mark.parametrize("dtype", [np.int64, np.float64, np.uint8])
@pytest.mark.parametrize("n", [10, 3 * MIB])
def test_sparse_zeros_is_a_zeroed_writable_array(dtype, n):
    a = engine_state.sparse_zeros(n, dtype)
    assert a.shape == (n,) and a.dtype == np.dtype(dtype)
    assert a.flags.c_contiguous and a.flags.writeable and a.flags.aligned
    assert not a.any()
    a[n // 2] = 7
    assert a[n // 2] == 7 and int(a.sum()) == 7


@pytest.mark.skipif(not hasattr(mmap, "MAP_ANONYMOUS"), reason="anonymous mappings: Linux and other Unixes")
def test_a_large_arena_is_resident_only_where_written():
    """One write per MiB of a 64 MiB arena makes a few pages resident, not the arena: numpy's
    own zeros are advised huge pages, so the same writes made ~64 MiB resident here (and took
    ~60x longer) on a kernel whose THP policy is `madvise`."""
    before = _resident_bytes()
    a = engine_state.sparse_zeros(64 * MIB // 8, np.int64)
    a[:: MIB // 8] = 1
    grown = _resident_bytes() - before
    assert int(a.sum()) == 64
    assert grown < 16 * MIB, f"{grown / MIB:.1f} MiB resident after 64 writes"


def test_the_feed_over_a_mapped_tail_gives_the_same_hours(monkeypatch):
    """Late readings are placed from the raw tail; with the tail mapped page by page the hours
    are bit for bit those of an ordinary array's."""
    rng = np.random.default_rng(7)
    ts = T0 + np.cumsum(rng.choice([10_000, 9_000, 11_000], 2000)).astype(np.int64)
    val = np.cumsum(rng.uniform(0.0, 0.5, 2000))
    # delivered after the rest: readings of the last hour begun, which the tail still holds the start of
    late = (rng.random(2000) < 0.3) & (ts >= ts[-1] - 900_000)

    def hours(min_bytes: int) -> tuple[np.ndarray, np.ndarray, bool]:
        monkeypatch.setattr(engine_state, "SPARSE_MIN_BYTES", min_bytes)
        engine = Engine(topology(300.0, 1000.0), load_dataset("cn-mee-national-co2", "2022"),
                        EngineSettings(tail_s=3600.0))
        c = engine.channel_index("m", "energy_import_kwh")
        for sel in (~late, late):
            for i in range(0, int(sel.sum()), 50):
                engine.ingest(np.full(len(ts[sel][i:i + 50]), c), ts[sel][i:i + 50], val[sel][i:i + 50])
        mapped = isinstance(getattr(engine._state.tail.ts.base, "obj", None), mmap.mmap)
        return *engine.hourly_energy("m", "energy_import_kwh"), mapped

    h_plain, kwh_plain, mapped_plain = hours(1 << 62)
    h_mapped, kwh_mapped, mapped = hours(0)
    assert mapped and not mapped_plain  # the two runs really used the two kinds of arena
    assert np.array_equal(h_mapped, h_plain)
    assert np.array_equal(kwh_mapped, kwh_plain)
    assert kwh_plain.sum() > 0


def test_a_copied_state_holds_the_same_tails_in_a_mapped_arena(monkeypatch):
    """`LiveState.copy` (an instrument added at run time) copies each channel's readings into a
    new mapped arena, not the whole arena densely (which made all of it resident)."""
    monkeypatch.setattr(engine_state, "SPARSE_MIN_BYTES", 0)
    engine = Engine(topology(300.0, 1000.0), load_dataset("cn-mee-national-co2", "2022"), EngineSettings(tail_s=3600.0))
    c = engine.channel_index("m", "energy_import_kwh")
    ts = T0 + 10_000 * np.arange(1, 1001, dtype=np.int64)
    engine.ingest(np.full(1000, c), ts, np.linspace(0.0, 50.0, 1000))
    copied = engine._state.copy()
    assert isinstance(getattr(copied.tail.ts.base, "obj", None), mmap.mmap)
    for ch in range(engine._state.n):
        for a, b in zip(engine._state.tail_readings(ch), copied.tail_readings(ch), strict=True):
            assert np.array_equal(a, b)
    assert len(copied.tail_readings(c)[0]) > 0
    copied.tail.ts[copied.tail.offset[c]] = -1  # a copy: the engine's own tail is untouched
    assert copied.tail_readings(c)[0][0] == -1 and engine._state.tail_readings(c)[0][0] != -1
