"""The engine's live state: bounded by channels x hours, plus a bounded raw tail per channel.

Per counter channel and hour (hour-major matrices, one row per hour): energy, estimated
energy, per-hour flags and the anchor (the counter's state entering the hour); per hour, the
site-wide revision counter. Per channel: the current baseline, the newest and first reading
times, and the newest raw readings (the *tail*). Nothing here grows with the number of
readings: the hour axis grows by whole steps as time passes, and a bounded tail drops its
oldest half when full. An unbounded tail (no store behind the engine) keeps every reading.

Hours are also grouped in blocks of ``BLOCK_HOURS`` for incremental checkpoints: every write
marks its blocks dirty, and a checkpoint copies only those (``accounting.engine.checkpoint``).
"""

from __future__ import annotations

import mmap

import numpy as np

from accounting.engine.kernels_energy import (
    HOUR_MS,
    NO_TS,
    ChannelParams,
    ChannelState,
    Hours,
    Tail,
)

#: Hours per checkpoint block (a UTC day).
BLOCK_HOURS = 24
#: The hour axis grows by an eighth of its size, at least a day, at most a week until then.
MIN_GROW_HOURS = 24
GROW_HOURS = 168
#: Readings an unbounded tail starts with per channel (it doubles when full).
UNBOUNDED_TAIL_START = 16


def tail_capacity(tail_s: float | None, poll_period_s: np.ndarray) -> np.ndarray | None:
    """Raw tail size per channel for a horizon of ``tail_s`` seconds: twice the readings of the
    horizon at the channel's poll period, plus 16, so that after dropping its oldest half a
    tail still spans the horizon. ``None``: unbounded (every reading kept)."""
    if tail_s is None:
        return None
    if tail_s <= 0:
        return np.zeros(len(poll_period_s), np.int64)
    periods = np.maximum(np.asarray(poll_period_s, dtype=np.float64), 1e-3)
    return (np.ceil(2.0 * tail_s / periods) + 16).astype(np.int64)


class LiveState:
    """Arrays of the live state; the kernels get them as bundles (``hours()``, ``channels``,
    ``tail``). Thread safety: none (the engine's owner serialises access)."""

    def __init__(self, n_channels: int, params: ChannelParams, tail_caps: np.ndarray | None) -> None:
        self.n = n_channels
        self.params = params
        self.bounded = tail_caps is not None
        self.origin = 0
        self.energy = np.zeros((0, n_channels))
        self.est = np.zeros((0, n_channels))
        self.flags = np.zeros((0, n_channels), np.uint8)
        self.anc_ts = np.zeros((0, n_channels), np.int64)
        self.anc_val = np.zeros((0, n_channels))
        self.revision = np.zeros(0, np.int64)
        self.h_lo: int | None = None  # hours with data (counters): first reading's hour ..
        self.h_hi: int | None = None  # .. the hour the newest reading ends
        self.watermark_ms = NO_TS
        self.channels = ChannelState(
            np.full(n_channels, NO_TS, np.int64), np.zeros(n_channels),
            np.full(n_channels, NO_TS, np.int64), np.full(n_channels, NO_TS, np.int64),
            np.full(n_channels, NO_TS, np.int64))
        caps = (np.full(n_channels, UNBOUNDED_TAIL_START, np.int64) if tail_caps is None
                else np.asarray(tail_caps, dtype=np.int64).copy())
        self.tail = _new_tail(caps)
        self.dirty: set[int] = set()
        self.full_checkpoint_due = True  # the next checkpoint writes every block

    # ------------------------------------------------------------------ views
    def hours(self) -> Hours:
        """The matrices as the kernels' bundle (valid until the axis grows)."""
        return Hours(self.energy, self.est, self.flags, self.anc_ts, self.anc_val, self.origin)

    @property
    def capacity(self) -> int:
        return self.energy.shape[0]

    def span(self) -> tuple[int, int] | None:
        """Hours with data ``(h_lo, h_hi)``, or None."""
        if self.h_lo is None or self.h_hi is None:
            return None
        return self.h_lo, self.h_hi

    # ------------------------------------------------------------------ growth
    def ensure_hours(self, lo: int, hi: int) -> None:
        """Grow the hour axis to cover absolute hours ``lo..hi`` (new anchors: no reading)."""
        cap = self.capacity
        if cap and lo >= self.origin and hi < self.origin + cap:
            return
        new_origin = lo if cap == 0 else min(lo, self.origin)
        end = hi + 1 if cap == 0 else max(hi + 1, self.origin + cap)
        step = max(MIN_GROW_HOURS, min(GROW_HOURS, cap // 8) if cap < 8 * GROW_HOURS else cap // 8)
        if cap == 0:
            new_origin, end = lo, hi + 1 + step
        elif new_origin < self.origin:
            new_origin = min(new_origin, self.origin - step)
        else:
            end = max(end, self.origin + cap + step)
        new_cap = end - new_origin
        shift = self.origin - new_origin
        for name, fill in (("energy", 0.0), ("est", 0.0), ("flags", 0), ("anc_ts", NO_TS),
                           ("anc_val", 0.0)):
            old = getattr(self, name)
            new = np.full((new_cap, self.n), fill, dtype=old.dtype)
            if cap:
                new[shift:shift + cap] = old
            setattr(self, name, new)
        rev = np.zeros(new_cap, np.int64)
        if cap:
            rev[shift:shift + cap] = self.revision
        self.revision = rev
        self.origin = new_origin

    def reserve_tail(self, channels: np.ndarray, extra: np.ndarray) -> None:
        """Unbounded tails: make room for ``extra[i]`` more readings on ``channels[i]``."""
        if self.bounded or not len(channels):
            return
        t = self.tail
        need = t.length[channels] + extra
        short = need > t.cap[channels]
        if not short.any():
            return
        caps = t.cap.copy()
        grow = channels[short]
        caps[grow] = np.maximum(need[short], 2 * caps[grow])
        self.tail = _resized_tail(t, caps)

    # ------------------------------------------------------------------ bookkeeping
    def note_span(self, lo: int, hi: int) -> None:
        self.h_lo = lo if self.h_lo is None else min(self.h_lo, lo)
        self.h_hi = hi if self.h_hi is None else max(self.h_hi, hi)

    def mark_dirty(self, lo_hours: np.ndarray, hi_hours: np.ndarray) -> None:
        """Blocks holding hours ``lo[i]..hi[i]`` changed (unset pairs: lo > hi, ignored)."""
        ok = lo_hours <= hi_hours
        if not ok.any():
            return
        lo_b = np.floor_divide(lo_hours[ok], BLOCK_HOURS)
        hi_b = np.floor_divide(hi_hours[ok], BLOCK_HOURS)
        first, last = int(lo_b.min()), int(hi_b.max())
        if last - first < 8:  # the live feed: a block or two around now
            self.dirty.update(range(first, last + 1))
            return
        self.dirty.update(np.unique(lo_b).tolist())
        self.dirty.update(np.unique(hi_b).tolist())
        wide = hi_b > lo_b + 1
        for a, b in zip(lo_b[wide].tolist(), hi_b[wide].tolist(), strict=True):
            self.dirty.update(range(a + 1, b))

    def last_closed_hour(self, grace_period_s: float) -> int:
        if self.watermark_ms == NO_TS:
            return NO_TS
        return int((self.watermark_ms - int(grace_period_s * 1000)) // HOUR_MS) - 1

    def tail_readings(self, c: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Channel ``c``'s raw tail (ts, value, reading flags), copies."""
        t = self.tail
        off, n = int(t.offset[c]), int(t.length[c])
        return t.ts[off:off + n].copy(), t.val[off:off + n].copy(), t.fl[off:off + n].copy()

    def set_tail(self, c: int, ts: np.ndarray, val: np.ndarray, fl: np.ndarray) -> None:
        """Replace channel ``c``'s tail by the newest readings given (as many as fit)."""
        t = self.tail
        cap = int(t.cap[c])
        if not self.bounded and len(ts) > cap:
            caps = t.cap.copy()
            caps[c] = max(len(ts), 2 * cap)
            self.tail = t = _resized_tail(t, caps)
            cap = int(t.cap[c])
        keep = min(len(ts), cap if len(ts) <= cap else cap - cap // 2)
        off = int(t.offset[c])
        if keep:
            t.ts[off:off + keep] = ts[len(ts) - keep:]
            t.val[off:off + keep] = val[len(ts) - keep:]
            t.fl[off:off + keep] = fl[len(ts) - keep:]
        t.length[c] = keep

    def copy(self) -> LiveState:
        other = LiveState.__new__(LiveState)
        other.__dict__.update(self.__dict__)
        for name in ("energy", "est", "flags", "anc_ts", "anc_val", "revision"):
            setattr(other, name, getattr(self, name).copy())
        other.channels = ChannelState(*(a.copy() for a in self.channels))
        other.tail = _resized_tail(self.tail, self.tail.cap.copy())  # the readings, not the empty arena
        other.dirty = set(self.dirty)
        return other

    def nbytes(self) -> int:
        """Bytes held by the arrays (for logs and benchmarks)."""
        arrays = [self.energy, self.est, self.flags, self.anc_ts, self.anc_val, self.revision,
                  *self.channels, *self.tail]
        return int(sum(a.nbytes for a in arrays))


def _new_tail(caps: np.ndarray) -> Tail:
    offsets = np.zeros(len(caps), np.int64)
    if len(caps) > 1:
        np.cumsum(caps[:-1], out=offsets[1:])
    total = int(caps.sum())
    return Tail(offsets, np.zeros(len(caps), np.int64), caps, sparse_zeros(total, np.int64),
                sparse_zeros(total, np.float64), sparse_zeros(total, np.uint8))


#: Below this size an arena is an ordinary array (numpy advises huge pages from 4 MiB on).
SPARSE_MIN_BYTES = 1 << 22


def sparse_zeros(n: int, dtype: type | np.dtype) -> np.ndarray:
    """Zeros for an arena that is written sparsely: anonymous memory that the kernel maps 4 KiB
    at a time, on first touch, never as huge pages.

    Why not `np.zeros`: numpy advises transparent huge pages for arrays of 4 MiB and more
    (`madvise(MADV_HUGEPAGE)`), and where the kernel's THP defrag policy is `madvise` (Debian's
    default) the first touch of each 2 MiB then waits for memory compaction. The raw-tail arena
    is the worst case: a fresh engine writes one slot in every channel's region, i.e. touches
    every huge page of it. For 5,000 channels (an hour of 1 s polls each) that cost the first
    live feed 0.72-1.01 s of the engine thread and 223 MB resident on the development VM; mapped
    page by page, 40-53 ms and 52 MB (docs/storage.md, "The raw tail's first touch"). The arena
    is resident only as far as the tails have filled.
    """
    dtype = np.dtype(dtype)
    nbytes = n * dtype.itemsize
    if nbytes < SPARSE_MIN_BYTES or not hasattr(mmap, "MAP_ANONYMOUS"):
        return np.zeros(n, dtype)
    arena = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if hasattr(mmap, "MADV_NOHUGEPAGE"):
        arena.madvise(mmap.MADV_NOHUGEPAGE)  # also where THP is `always`: resident only as far as used
    return np.frombuffer(arena, dtype, n)


def _resized_tail(t: Tail, caps: np.ndarray) -> Tail:
    """A new arena with capacities ``caps``, each channel's readings copied over."""
    new = _new_tail(caps)
    n = t.length
    if n.sum():
        src = np.repeat(t.offset - np.cumsum(np.concatenate(([0], n[:-1]))), n) + np.arange(n.sum())
        dst = np.repeat(new.offset - np.cumsum(np.concatenate(([0], n[:-1]))), n) + np.arange(n.sum())
        new.ts[dst] = t.ts[src]
        new.val[dst] = t.val[src]
        new.fl[dst] = t.fl[src]
    new.length[:] = n
    return new


def hours_needed(ts: np.ndarray) -> tuple[int, int]:
    """The hour range a batch of readings can write: from the hour a reading at the earliest
    time ends (its flags) to the hour the newest one ends."""
    return int((ts.min() - 1) // HOUR_MS), int((ts.max() - 1) // HOUR_MS)


def ceil_hour(ts_ms: int) -> int:
    return -((-ts_ms) // HOUR_MS)

