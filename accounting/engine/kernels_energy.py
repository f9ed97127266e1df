"""Counters -> hourly energy (ACCOUNTING.md section 1), as numba kernels over sorted arrays.

Input of a channel: its readings sorted by time with no duplicate timestamps (the wrappers in
``history.py`` guarantee it). The first reading processed is the baseline. Each later reading
gives a delta: the plain difference, or across a rollover the difference through the wrap
value, or after a reset the reading itself. A delta implying a rate above the plausible
maximum is rejected and leaves the baseline where it was. The accepted delta is spread
uniformly over (t_prev, t] and split pro rata across hour buckets; when the interval is longer
than the gap threshold, or the delta comes from a reset, the energy is also added to the
``estimated`` matrix (its total is measured, its time distribution or origin is not).

The same kernel serves the live path (re-running a channel from a baseline after new or late
readings, touching only hours >= ``hour_clip``) and recomputation, so both give bit-identical
hourly values.
"""

from __future__ import annotations

import numba
import numpy as np

HOUR_MS = 3_600_000
#: A previous value at or above this fraction of the rollover value makes a drop a rollover.
ROLLOVER_NEAR = 0.9

FLAG_ROLLOVER = 1
FLAG_COUNTER_RESET = 2
FLAG_IMPLAUSIBLE = 4
FLAG_GAP_SPREAD = 8


@numba.njit(cache=True, inline="always")
def _spread(a: int, b: int, e: float, estimated: bool, hour_origin: int, hour_clip: int,
            energy_row: np.ndarray, est_row: np.ndarray) -> None:
    """Add ``e`` spread uniformly over (a, b] to the hour buckets at or after ``hour_clip``."""
    h = a // HOUR_MS
    end = (h + 1) * HOUR_MS
    if b <= end:  # the common case: the whole interval lies in one hour
        if h >= hour_clip:
            energy_row[h - hour_origin] += e
            if estimated:
                est_row[h - hour_origin] += e
        return
    span = float(b - a)
    rest = e
    lo = a
    while True:
        if b <= end:  # last segment takes the rest, so the parts sum exactly to e
            part = rest
        else:
            part = e * ((end - lo) / span)
            rest -= part
        if h >= hour_clip:
            energy_row[h - hour_origin] += part
            if estimated:
                est_row[h - hour_origin] += part
        if b <= end:
            return
        lo = end
        h += 1
        end += HOUR_MS


@numba.njit(cache=True)
def counter_to_hours(ts: np.ndarray, val: np.ndarray, flags: np.ndarray, start: int, stop: int,
                     rollover: float, max_rate_per_h: float, gap_ms: int, hour_origin: int,
                     hour_clip: int, energy_row: np.ndarray, est_row: np.ndarray) -> int:
    """Process readings ``[start, stop)`` of one channel; returns the number of accepted deltas.

    ``ts[start]`` must be an accepted reading (the baseline). ``flags[k]`` is rewritten for
    ``k > start``. Energy is added to ``energy_row[h - hour_origin]`` for hours ``h >= hour_clip``.
    ``max_rate_per_h <= 0`` disables the plausibility check; ``rollover <= 0`` means no wrap.
    """
    if stop - start < 1:
        return 0
    prev_t = ts[start]
    prev_v = val[start]
    hour = prev_t // HOUR_MS  # hour of prev_t, updated incrementally (no division per reading)
    hour_end = (hour + 1) * HOUR_MS
    accepted = 0
    for k in range(start + 1, stop):
        t = ts[k]
        v = val[k]
        dt = t - prev_t
        flag = 0
        if v >= prev_v:
            d = v - prev_v
        elif rollover > 0.0 and prev_v >= ROLLOVER_NEAR * rollover:
            d = v + rollover - prev_v
            flag = FLAG_ROLLOVER
        else:
            d = v
            flag = FLAG_COUNTER_RESET
        if max_rate_per_h > 0.0 and d * HOUR_MS > max_rate_per_h * dt:
            flags[k] = FLAG_IMPLAUSIBLE
            continue
        if dt > gap_ms:
            flag |= FLAG_GAP_SPREAD
        flags[k] = flag
        if d > 0.0:
            if prev_t >= hour_end:
                hour = prev_t // HOUR_MS
                hour_end = (hour + 1) * HOUR_MS
            if t <= hour_end and flag == 0:  # the common case: one hour, measured
                if hour >= hour_clip:
                    energy_row[hour - hour_origin] += d
            else:
                _spread(prev_t, t, d, (flag & (FLAG_GAP_SPREAD | FLAG_COUNTER_RESET)) != 0,
                        hour_origin, hour_clip, energy_row, est_row)
        prev_t = t
        prev_v = v
        accepted += 1
    return accepted


@numba.njit(cache=True, parallel=True)
def counters_to_hours_many(ts: np.ndarray, val: np.ndarray, flags: np.ndarray,
                           offsets: np.ndarray, rollover: np.ndarray, max_rate_per_h: np.ndarray,
                           gap_ms: np.ndarray, hour_origin: int, energy: np.ndarray,
                           est: np.ndarray) -> int:
    """Process many channels at once (channel ``c`` owns rows ``offsets[c]:offsets[c+1]``).

    ``energy`` and ``est`` are ``(n_channels, n_hours)`` matrices starting at ``hour_origin``;
    channels run in parallel. Returns the number of accepted deltas.
    """
    n = offsets.shape[0] - 1
    counts = np.zeros(n, dtype=np.int64)
    for c in numba.prange(n):
        counts[c] = counter_to_hours(ts, val, flags, offsets[c], offsets[c + 1], rollover[c],
                                     max_rate_per_h[c], gap_ms[c], hour_origin, hour_origin,
                                     energy[c], est[c])
    return counts.sum()


@numba.njit(cache=True)
def is_sorted_unique(ch: np.ndarray, ts: np.ndarray) -> bool:
    """Whether readings are strictly increasing by (channel, time) — a store export usually is,
    and then sorting and de-duplicating can be skipped."""
    for k in range(1, ch.shape[0]):
        if ch[k] < ch[k - 1] or (ch[k] == ch[k - 1] and ts[k] <= ts[k - 1]):
            return False
    return True


@numba.njit(cache=True)
def all_valid(val: np.ndarray) -> bool:
    """Whether every value is a finite, non-negative register reading (one pass, no temporaries)."""
    for v in val:  # noqa: SIM110 -- an explicit loop compiles to a tight numba loop
        if not (v >= 0.0 and v < np.inf):
            return False
    return True
