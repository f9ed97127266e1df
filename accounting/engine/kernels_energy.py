"""Counters -> hourly energy (ACCOUNTING.md section 1), as numba kernels over sorted arrays.

Input of a channel: its readings sorted by time with no duplicate timestamps. The first
reading is the baseline. Each later reading gives a delta: the plain difference, or across a
rollover the difference through the wrap value, or after a reset the reading itself. A delta
implying a rate above the plausible maximum, or a drop that cannot be a reset, is rejected as
a glitch while it is within the gap threshold of the baseline (the baseline stays where it
was), and rebased (nothing booked, baseline moved) once it has lasted longer.
The accepted delta is spread uniformly over (t_prev, t] and split pro rata across hour
buckets; when the interval is longer than the gap threshold, or the delta comes from a reset,
the energy is also added to the ``estimated`` matrix (its total is measured, its time
distribution or origin is not).

One step function (``_step``) does this for every path, so the live feed, a re-run after late
readings, a re-spread from the store and a recomputation give bit-identical hourly values: a
bucket is always the sum of its contributions in time order, starting from zero.

State kept per channel and hour (hour-major matrices of ``Hours``): energy, estimated energy,
per-hour flags (the OR of the flags of the readings that end in the hour, plus ``FLAG_READ``)
and the *anchor*: the last accepted reading at or before the hour's start, i.e. the counter's
state entering the hour. An anchor is what lets any hour be rebuilt exactly from the readings
after it, without keeping those before (``accounting.engine.live``).

A run (``run``/``runf`` vectors, indices ``R_*``/``F_*``) processes readings in time order from
a baseline. ``R_CLIP`` and ``R_STOP`` bound the hours it may write; with ``R_SWEEP`` set it zeroes
each hour just before its first contribution (a rebuild); with ``R_CONV_FROM`` set it compares
the anchor it would write at each hour boundary from there on with the old one and stops
writing hours when they agree (the rest of the channel's history is unchanged), after the
reading that completes the last rebuilt hour (``R_DRAIN``, ``R_DONE``).

The serial kernels Python calls run without the interpreter lock (``nogil=True``, here and in
the plant watch's kernel): in the service the engine thread's feed then overlaps the admitting
thread's Python instead of taking turns with it (issue #20, docs/storage.md "The engine's
kernels off the interpreter lock"). Nothing else reads what a kernel writes while it runs: the
live engines' arrays only under ``LiveEngines.lock``, the plant watch's only on the engine
thread. The ``parallel=True`` kernels (here ``counters_to_hours_many``, allocation, market
matching) keep the lock: numba's fallback threading layer (workqueue, where neither TBB nor
OpenMP is installed) terminates the process when two threads launch parallel kernels at once (a
recompute beside a dashboard's footprints), and the lock keeps their launches one at a time.
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

HOUR_MS = 3_600_000
#: A previous value at or above this fraction of the rollover value makes a drop a rollover.
ROLLOVER_NEAR = 0.9
#: "No reading": a timestamp no real reading has.
NO_TS = np.iinfo(np.int64).min
_FAR = np.iinfo(np.int64).max

FLAG_ROLLOVER = 1
FLAG_COUNTER_RESET = 2
FLAG_IMPLAUSIBLE = 4
FLAG_GAP_SPREAD = 8
#: Per-hour flags only: at least one reading ended in the hour.
FLAG_READ = 16
#: The register went back to a value it cannot have counted up to since a reset, or rose by more
#: than the meter can count, and stayed there past the gap threshold: nothing is booked for the
#: step, the baseline re-anchors on the reading (ACCOUNTING.md section 1, "rebased"; an alarm).
FLAG_REBASED = 32
#: The interval spans a recorded meter replacement: booked exactly as (old final - baseline) +
#: (reading - new initial) (ACCOUNTING.md section 1). With ``FLAG_REBASED`` as well, the record
#: does not fit the readings (that sum is negative): nothing booked, baseline re-anchored.
FLAG_REPLACED = 64
#: The names ACCOUNTING.md section 1 gives the flags (API and documents show these).
FLAG_NAMES = {FLAG_ROLLOVER: "rollover", FLAG_COUNTER_RESET: "counter_reset", FLAG_IMPLAUSIBLE: "implausible",
              FLAG_GAP_SPREAD: "gap_spread", FLAG_REBASED: "rebased", FLAG_REPLACED: "replaced"}


def flag_names(bits: int) -> list[str]:
    """The names of the ``FLAG_*`` bits set in ``bits`` (``FLAG_READ`` is not a finding)."""
    return [name for bit, name in FLAG_NAMES.items() if bits & bit]

# run vector (int64)
R_PREV_T = 0  # last accepted reading (the baseline of the next delta)
R_NEXT_ANCHOR = 1  # next hour boundary whose anchor is due
R_ZEROED = 2  # hours below this were zeroed by the sweep
R_CLIP = 3  # hours below are never written
R_STOP = 4  # hours at or above are never written
R_CONV_FROM = 5  # boundaries from here on are compared with the old anchors (NO_TS: never)
R_OLD_ANC_HI = 6  # old anchors are valid through this hour; later ones were the old current state
R_OLD_CUR_T = 7
R_DRAIN = 8  # converged: finish the last rebuilt hour, then stop
R_DONE = 9
R_ACCEPTED = 10
R_LO = 11  # lowest hour written (dirty tracking)
R_HI = 12  # highest hour written
R_SWEEP = 13
RUN_INTS = 14
# run vector (float64)
F_PREV_V = 0
F_OLD_CUR_V = 1
RUN_FLOATS = 2

# feed_channels status per channel group
FED = 0
NEEDS_SOURCE = 1  # late readings older than the raw tail: the caller re-spreads from the store
TAIL_FULL = 2  # an unbounded tail without room: a caller bug (capacity is reserved first)

# feed_channels counts per group
C_NEW = 0
C_DUPLICATE = 1
C_CONFLICTING = 2
C_LATE = 3
COUNTS = 4


class ChannelParams(NamedTuple):
    """Per counter channel, from the topology: rollover value, plausible maximum rate per hour
    (0 disables), gap threshold (ms), and the recorded meter replacements: channel ``c`` owns
    ``rep_at/rep_old/rep_new[rep_ptr[c]:rep_ptr[c + 1]]`` (time, old meter's final reading, new
    meter's initial reading; sorted by time)."""

    rollover: np.ndarray
    max_rate: np.ndarray
    gap_ms: np.ndarray
    rep_ptr: np.ndarray
    rep_at: np.ndarray
    rep_old: np.ndarray
    rep_new: np.ndarray


def no_replacements(n_channels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``ChannelParams``' replacement fields of ``n_channels`` channels without any."""
    return (np.zeros(n_channels + 1, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64),
            np.zeros(0, np.float64))


class ChannelState(NamedTuple):
    """Per counter channel, live: last accepted reading (``cur_t``/``cur_v``, the baseline of
    the next delta), newest reading time, first reading time, and ``anc_hi``: anchors are
    stored through that hour; later boundaries' anchor is the current state."""

    cur_t: np.ndarray
    cur_v: np.ndarray
    last_t: np.ndarray
    first_t: np.ndarray
    anc_hi: np.ndarray


class Tail(NamedTuple):
    """The newest raw readings of each channel: channel ``c`` owns ``ts/val/fl[offset[c]:
    offset[c] + cap[c]]``, of which the first ``length[c]`` are used (sorted, unique)."""

    offset: np.ndarray
    length: np.ndarray
    cap: np.ndarray
    ts: np.ndarray
    val: np.ndarray
    fl: np.ndarray


class Hours(NamedTuple):
    """Hour-major matrices ``[hour - origin, channel]``."""

    energy: np.ndarray
    est: np.ndarray
    flags: np.ndarray
    anc_ts: np.ndarray
    anc_val: np.ndarray
    origin: int


def new_run() -> tuple[np.ndarray, np.ndarray]:
    """A run vector pair, reset (see ``reset_run``)."""
    run = np.empty(RUN_INTS, np.int64)
    runf = np.empty(RUN_FLOATS, np.float64)
    reset_run(run, runf)
    return run, runf


@numba.njit(cache=True, inline="always")
def reset_run(run: np.ndarray, runf: np.ndarray) -> None:
    """No baseline, every hour writable, no sweep, no convergence check."""
    run[R_PREV_T] = NO_TS
    run[R_NEXT_ANCHOR] = _FAR
    run[R_ZEROED] = NO_TS
    run[R_CLIP] = NO_TS
    run[R_STOP] = _FAR
    run[R_CONV_FROM] = NO_TS
    run[R_OLD_ANC_HI] = NO_TS
    run[R_OLD_CUR_T] = NO_TS
    run[R_DRAIN] = 0
    run[R_DONE] = 0
    run[R_ACCEPTED] = 0
    run[R_LO] = _FAR
    run[R_HI] = NO_TS
    run[R_SWEEP] = 0
    runf[F_PREV_V] = 0.0
    runf[F_OLD_CUR_V] = 0.0


@numba.njit(cache=True, inline="always")
def _touch(run: np.ndarray, h: int) -> None:
    if h < run[R_LO]:
        run[R_LO] = h
    if h > run[R_HI]:
        run[R_HI] = h


# The step's helpers take the matrices as plain arrays (``M``: energy, est, flags, origin;
# ``A``: anchors), not the ``Hours`` bundle: each field read from a bundle costs numba a
# reference count round trip, and the step runs once per reading.
@numba.njit(cache=True, inline="always")
def _sweep(run: np.ndarray, h: int, c: int, energy: np.ndarray, est: np.ndarray,
           flags: np.ndarray, origin: int, scratch: np.ndarray) -> None:
    """Zero hours ``R_ZEROED..h`` of channel ``c`` (a rebuild), keeping old energy in ``scratch``
    (indexed from ``R_CLIP``) so the caller can tell which closed hours changed."""
    z = run[R_ZEROED]
    if run[R_SWEEP] == 0 or h < z:
        return
    clip = run[R_CLIP]
    while z <= h:
        i = z - origin
        j = z - clip
        if 0 <= j < scratch.shape[0]:
            scratch[j] = energy[i, c]
        energy[i, c] = 0.0
        est[i, c] = 0.0
        flags[i, c] = 0
        z += 1
    run[R_ZEROED] = z
    _touch(run, h)


@numba.njit(cache=True, inline="always")
def _add(run: np.ndarray, h: int, e: float, estimated: bool, c: int, energy: np.ndarray,
         est: np.ndarray, flags: np.ndarray, origin: int, scratch: np.ndarray) -> None:
    if h < run[R_CLIP] or h >= run[R_STOP]:
        return
    _sweep(run, h, c, energy, est, flags, origin, scratch)
    energy[h - origin, c] += e
    if estimated:
        est[h - origin, c] += e
    _touch(run, h)


@numba.njit(cache=True, inline="always")
def _flag(run: np.ndarray, t: int, flag: int, c: int, energy: np.ndarray, est: np.ndarray,
          flags: np.ndarray, origin: int, scratch: np.ndarray) -> None:
    """OR a reading's flag into the hour it ends: the hour of ``t - 1`` (a reading at 10:00:00
    closes the 09:00 hour, whose energy it completes)."""
    h = (t - 1) // HOUR_MS
    if h < run[R_CLIP] or h >= run[R_STOP]:
        return
    _sweep(run, h, c, energy, est, flags, origin, scratch)
    flags[h - origin, c] |= flag | FLAG_READ
    _touch(run, h)


@numba.njit(cache=True, inline="always")
def _spread(run: np.ndarray, a: int, b: int, e: float, estimated: bool, c: int,
            energy: np.ndarray, est: np.ndarray, flags: np.ndarray, origin: int,
            scratch: np.ndarray) -> None:
    """Add ``e`` spread uniformly over (a, b] to the hour buckets it overlaps."""
    h = a // HOUR_MS
    end = (h + 1) * HOUR_MS
    if b <= end:  # the common case: the whole interval lies in one hour
        _add(run, h, e, estimated, c, energy, est, flags, origin, scratch)
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
        _add(run, h, part, estimated, c, energy, est, flags, origin, scratch)
        if b <= end:
            return
        lo = end
        h += 1
        end += HOUR_MS


@numba.njit(cache=True, inline="always")
def _anchors(run: np.ndarray, runf: np.ndarray, t: int, c: int, anc_ts: np.ndarray,
             anc_val: np.ndarray, origin: int) -> None:
    """Write the anchors of the boundaries before reading ``t`` (the state entering them is the
    current baseline); with a convergence check, stop at the first that is unchanged."""
    x = run[R_NEXT_ANCHOR]
    xh = (t - 1) // HOUR_MS
    if x > xh:
        return
    pt = run[R_PREV_T]
    pv = runf[F_PREV_V]
    conv = run[R_CONV_FROM]
    while x <= xh:
        if conv != NO_TS and x >= conv:
            if x <= run[R_OLD_ANC_HI]:
                old_t = anc_ts[x - origin, c]
                old_v = anc_val[x - origin, c]
            else:
                old_t = run[R_OLD_CUR_T]
                old_v = runf[F_OLD_CUR_V]
            if old_t == pt and old_v == pv:  # same state entering hour x: nothing after changes
                run[R_STOP] = x
                run[R_DRAIN] = 1
                run[R_NEXT_ANCHOR] = x
                return
        if x >= run[R_CLIP] and x < run[R_STOP]:
            anc_ts[x - origin, c] = pt
            anc_val[x - origin, c] = pv
            _touch(run, x)
        x += 1
    run[R_NEXT_ANCHOR] = x


@numba.njit(cache=True, inline="always")
def _delta(v: float, pv: float, pt: int, dt: int, rollover: float, max_rate: float,
           gap_ms: int, rep_at: np.ndarray, rep_old: np.ndarray, rep_new: np.ndarray,
           r0: int, r1: int) -> tuple[float, int]:
    """The delta of a reading ``v`` after the baseline ``pv`` (at ``pt``), ``dt`` ms later, and
    its flag: ``FLAG_IMPLAUSIBLE`` alone means rejected (the baseline stays); ``FLAG_REBASED``
    books nothing and moves the baseline (the rebase rule needs a plausible maximum rate).
    Replacements ``r0..r1`` of ``rep_*`` are the channel's recorded meter replacements."""
    if r1 > r0 and rep_at[r0] <= pt + dt and rep_at[r1 - 1] > pt:
        # A recorded replacement in (pt, t]: the register of the old meter counted from the
        # baseline to its final reading, the new one from its initial reading to v; exact
        # whatever the registers' order (a new register above the old baseline is no step).
        d = 0.0
        base = pv
        hit = False
        for j in range(r0, r1):
            if pt < rep_at[j] <= pt + dt:
                d += rep_old[j] - base
                base = rep_new[j]
                hit = True
        if hit:
            d += v - base
            if d < 0.0:  # the record does not fit the readings: book nothing, as a rebase would
                return 0.0, FLAG_REBASED | FLAG_REPLACED
            if dt > gap_ms:
                return d, FLAG_REPLACED | FLAG_GAP_SPREAD
            return d, FLAG_REPLACED
    flag = 0
    if v >= pv:
        d = v - pv
    elif rollover > 0.0 and pv >= ROLLOVER_NEAR * rollover:
        d = v + rollover - pv
        flag = FLAG_ROLLOVER
    elif max_rate > 0.0 and v * HOUR_MS > max_rate * dt:
        # Lower than the baseline, and more than a counter restarted from zero since the
        # baseline can show. Within the gap threshold of the last accepted reading it is a
        # glitch (rejected: a single out-of-line value must not move the baseline, and the
        # next reading back in line is booked from it). Once no reading has come back in line
        # for longer than that, the register really went back (a PLC restored from a backup,
        # a meter replaced): book nothing for the step and re-anchor on this reading.
        if dt <= gap_ms:
            return v, FLAG_IMPLAUSIBLE
        return 0.0, FLAG_REBASED
    else:
        d = v
        flag = FLAG_COUNTER_RESET
    if max_rate > 0.0 and d * HOUR_MS > max_rate * dt:
        # More than the meter can count since the baseline. Within the gap threshold of the
        # last accepted reading it is a glitch (rejected, as above). Once every reading for
        # longer than that has stayed out of line, the register really moved (a meter swapped
        # for one with a higher register, a changed multiplier, with no replacement record):
        # book nothing for the step and re-anchor, as for a step down. Left rejected, the
        # step would be booked whole once the elapsed time made it look plausible.
        if dt <= gap_ms:
            return d, FLAG_IMPLAUSIBLE
        return 0.0, FLAG_REBASED
    if dt > gap_ms:
        flag |= FLAG_GAP_SPREAD
    return d, flag


@numba.njit(cache=True, inline="always")
def _step(t: int, v: float, k: int, rfl: np.ndarray, c: int, rollover: float, max_rate: float,
          gap_ms: int, rep_at: np.ndarray, rep_old: np.ndarray, rep_new: np.ndarray, r0: int,
          r1: int, energy: np.ndarray, est: np.ndarray, flags: np.ndarray,
          anc_ts: np.ndarray, anc_val: np.ndarray, origin: int, run: np.ndarray,
          runf: np.ndarray, scratch: np.ndarray) -> None:
    """Process one reading (the single definition of ACCOUNTING.md section 1's step)."""
    if run[R_DRAIN] == 0:
        _anchors(run, runf, t, c, anc_ts, anc_val, origin)
    pt = run[R_PREV_T]
    if pt == NO_TS:  # the channel's first reading: the baseline
        run[R_PREV_T] = t
        runf[F_PREV_V] = v
        run[R_NEXT_ANCHOR] = -((-t) // HOUR_MS)  # first boundary at or after t
        rfl[k] = 0
        _flag(run, t, 0, c, energy, est, flags, origin, scratch)
        return
    d, flag = _delta(v, runf[F_PREV_V], pt, t - pt, rollover, max_rate, gap_ms, rep_at, rep_old,
                     rep_new, r0, r1)
    rfl[k] = flag
    if flag == FLAG_IMPLAUSIBLE:
        _flag(run, t, FLAG_IMPLAUSIBLE, c, energy, est, flags, origin, scratch)
        return
    if d > 0.0:
        _spread(run, pt, t, d, (flag & (FLAG_GAP_SPREAD | FLAG_COUNTER_RESET)) != 0, c, energy,
                est, flags, origin, scratch)
    _flag(run, t, flag, c, energy, est, flags, origin, scratch)
    run[R_PREV_T] = t
    runf[F_PREV_V] = v
    run[R_ACCEPTED] += 1
    if run[R_DRAIN] == 1:
        run[R_DONE] = 1


@numba.njit(cache=True, inline="always")
def _simple(t: int, v: float, pt: int, pv: float, rollover: float, max_rate: float,
            gap_ms: int, rep_at: np.ndarray, rep_old: np.ndarray, rep_new: np.ndarray, r0: int,
            r1: int, energy: np.ndarray, est: np.ndarray, flags: np.ndarray, i: int,
            c: int) -> int:
    """``_step`` for the common reading, without its general machinery: the caller has checked
    that the baseline ``pt`` and ``t`` lie in one hour (row ``i``) and that no anchor, sweep or
    convergence check is due there. Then ``_step``'s spread and flag both land in that row,
    and this does exactly what they would. Returns the reading's flag."""
    d, flag = _delta(v, pv, pt, t - pt, rollover, max_rate, gap_ms, rep_at, rep_old, rep_new, r0, r1)
    if flag == FLAG_IMPLAUSIBLE:
        flags[i, c] |= FLAG_IMPLAUSIBLE | FLAG_READ
        return flag
    if d > 0.0:
        energy[i, c] += d
        if flag & (FLAG_GAP_SPREAD | FLAG_COUNTER_RESET):
            est[i, c] += d
    flags[i, c] |= flag | FLAG_READ
    return flag


@numba.njit(cache=True, nogil=True)
def run_readings(ts: np.ndarray, val: np.ndarray, rfl: np.ndarray, k0: int, k1: int, c: int,
                 p: ChannelParams, hours: Hours, run: np.ndarray, runf: np.ndarray,
                 scratch: np.ndarray) -> int:
    """Process readings ``k0..k1-1`` of channel ``c``; returns the index after the last one
    processed (``k1``, or earlier once a converged run is done)."""
    energy, est, flags = hours.energy, hours.est, hours.flags
    anc_ts, anc_val, origin = hours.anc_ts, hours.anc_val, hours.origin
    rollover, max_rate, gap_ms = p.rollover[c], p.max_rate[c], p.gap_ms[c]
    rep_at, rep_old, rep_new, r0, r1 = p.rep_at, p.rep_old, p.rep_new, p.rep_ptr[c], p.rep_ptr[c + 1]
    clip, stop, sweep = run[R_CLIP], run[R_STOP], run[R_SWEEP]
    # the run's state in locals between general steps (written back before each and at the end)
    pt, pv, nxt, zeroed = run[R_PREV_T], runf[F_PREV_V], run[R_NEXT_ANCHOR], run[R_ZEROED]
    fast = run[R_DRAIN] == 0
    lo, hi, accepted = _FAR, NO_TS, 0
    h = NO_TS
    h_end = NO_TS  # the hour of the baseline and its end, cached while the baseline stays in it
    h_start = _FAR
    stopped = k1
    for k in range(k0, k1):
        t = ts[k]
        v = val[k]
        if pt != NO_TS and pt >= h_end:
            h = pt // HOUR_MS
            h_start = h * HOUR_MS
            h_end = h_start + HOUR_MS
        if (fast and pt != NO_TS and pt >= h_start and t <= h_end and nxt > h
                and clip <= h < stop and (sweep == 0 or h < zeroed)):
            flag = _simple(t, v, pt, pv, rollover, max_rate, gap_ms, rep_at, rep_old, rep_new, r0,
                           r1, energy, est, flags, h - origin, c)
            rfl[k] = flag
            if h < lo:
                lo = h
            if h > hi:
                hi = h
            if flag != FLAG_IMPLAUSIBLE:
                pt = t
                pv = v
                accepted += 1
            continue
        run[R_PREV_T] = pt
        runf[F_PREV_V] = pv
        _step(t, v, k, rfl, c, rollover, max_rate, gap_ms, rep_at, rep_old, rep_new, r0, r1,
              energy, est, flags, anc_ts, anc_val, origin, run, runf, scratch)
        pt, pv, nxt, zeroed = run[R_PREV_T], runf[F_PREV_V], run[R_NEXT_ANCHOR], run[R_ZEROED]
        stop = run[R_STOP]
        fast = run[R_DRAIN] == 0
        h_end = NO_TS
        if run[R_DONE] == 1:
            stopped = k + 1
            break
    run[R_PREV_T] = pt
    runf[F_PREV_V] = pv
    run[R_ACCEPTED] += accepted
    if lo <= hi:
        _touch(run, lo)
        _touch(run, hi)
    return stopped


@numba.njit(cache=True, nogil=True)
def finish_run(c: int, end_hour: int, hours: Hours, run: np.ndarray, scratch: np.ndarray,
               last_closed: int, reopen: np.ndarray) -> None:
    """End a rebuild: zero the hours it did not reach (through ``end_hour``, or up to where it
    converged) and mark in ``reopen`` the closed hours whose energy changed."""
    if run[R_SWEEP] == 1:
        _sweep(run, min(end_hour, run[R_STOP] - 1), c, hours.energy, hours.est, hours.flags,
               hours.origin, scratch)
    clip = run[R_CLIP]
    o = hours.origin
    hi = min(run[R_ZEROED] - 1, last_closed)
    # A while loop, not range(lo, hi + 1): with no closed hour yet (last_closed == NO_TS) numba's
    # range length hi + 1 - lo overflows int64 and the loop ran for ever (a restart from a
    # checkpoint taken before the first reading hung in Engine.resume).
    h = max(clip, o)
    while h <= hi:
        j = h - clip
        if j < scratch.shape[0] and hours.energy[h - o, c] != scratch[j]:
            reopen[h - o] = 1
        h += 1


# ------------------------------------------------------------------ the live feed
@numba.njit(cache=True)
def _late(k0: int, k1: int, c: int, ts: np.ndarray, val: np.ndarray, p: ChannelParams,
          s: ChannelState, tail: Tail, hours: Hours, bounded: bool, last_closed: int,
          run: np.ndarray, runf: np.ndarray, counts: np.ndarray, reopen: np.ndarray) -> int:
    """Readings at or before the channel's newest, all within its raw tail: merge them into the
    tail and re-run the channel from the last accepted reading at or before the start of the
    earliest hour they can change; those hours are rebuilt from zero."""
    off = tail.offset[c]
    n_old = tail.length[c]
    if n_old == 0:
        return NEEDS_SOURCE
    trimmed = s.first_t[c] < tail.ts[off]
    if trimmed and ts[k0] < tail.ts[off]:
        return NEEDS_SOURCE
    m = k1 - k0
    mts = np.empty(n_old + m, np.int64)
    mval = np.empty(n_old + m, np.float64)
    mfl = np.zeros(n_old + m, np.uint8)
    i = 0
    k = k0
    n = 0
    first_new = -1
    last_t = s.last_t[c]
    while i < n_old or k < k1:
        if k >= k1 or (i < n_old and tail.ts[off + i] < ts[k]):
            mts[n] = tail.ts[off + i]
            mval[n] = tail.val[off + i]
            mfl[n] = tail.fl[off + i]
            i += 1
        elif i < n_old and tail.ts[off + i] == ts[k]:  # the first received value wins
            counts[C_DUPLICATE] += 1
            if tail.val[off + i] != val[k]:
                counts[C_CONFLICTING] += 1
            mts[n] = tail.ts[off + i]
            mval[n] = tail.val[off + i]
            mfl[n] = tail.fl[off + i]
            i += 1
            k += 1
        else:
            mts[n] = ts[k]
            mval[n] = val[k]
            if first_new < 0:
                first_new = n
            counts[C_NEW] += 1
            if ts[k] < last_t:
                counts[C_LATE] += 1
            k += 1
        n += 1
    if first_new < 0:
        return FED
    if first_new == 0:
        if trimmed:
            return NEEDS_SOURCE
        b = -1  # a new first reading of the channel: the run starts from it
        clip = (mts[0] - 1) // HOUR_MS
    else:
        j = first_new - 1
        while j > 0 and mfl[j] & FLAG_IMPLAUSIBLE:
            j -= 1
        if mfl[j] & FLAG_IMPLAUSIBLE:
            return NEEDS_SOURCE
        clip = mts[j] // HOUR_MS
        # the last accepted reading at or before the start of hour `clip`
        b = j
        while b > 0 and mts[b] > clip * HOUR_MS:
            b -= 1
        while b > 0 and mfl[b] & FLAG_IMPLAUSIBLE:
            b -= 1
        if mts[b] > clip * HOUR_MS or mfl[b] & FLAG_IMPLAUSIBLE:
            if trimmed:
                return NEEDS_SOURCE
            b = -1  # nothing before: the channel's first reading starts the run
            clip = min(clip, (mts[0] - 1) // HOUR_MS)
    run[R_CLIP] = clip
    run[R_ZEROED] = clip
    run[R_SWEEP] = 1
    start = 0
    if b >= 0:
        run[R_PREV_T] = mts[b]
        runf[F_PREV_V] = mval[b]
        run[R_NEXT_ANCHOR] = -((-mts[b]) // HOUR_MS)
        start = b + 1
    scratch = np.empty(max(0, last_closed - clip + 1))
    run_readings(mts, mval, mfl, start, n, c, p, hours, run, runf, scratch)
    end_hour = (max(last_t, mts[n - 1]) - 1) // HOUR_MS
    finish_run(c, end_hour, hours, run, scratch, last_closed, reopen)
    s.cur_t[c] = run[R_PREV_T]
    s.cur_v[c] = runf[F_PREV_V]
    s.anc_hi[c] = run[R_NEXT_ANCHOR] - 1
    s.last_t[c] = max(last_t, mts[n - 1])
    if s.first_t[c] == NO_TS or mts[0] < s.first_t[c]:
        s.first_t[c] = mts[0]
    cap = tail.cap[c]
    lo = 0
    if n > cap:
        if not bounded:
            return TAIL_FULL
        lo = n - (cap - cap // 2)
    for q in range(lo, n):
        tail.ts[off + q - lo] = mts[q]
        tail.val[off + q - lo] = mval[q]
        tail.fl[off + q - lo] = mfl[q]
    tail.length[c] = n - lo
    return FED


@numba.njit(cache=True)
def _late_group(g: int, k0: int, k1: int, c: int, ts: np.ndarray, val: np.ndarray,
                p: ChannelParams, s: ChannelState, tail: Tail, hours: Hours, bounded: bool,
                last_closed: int, runs: np.ndarray, runfs: np.ndarray, counts: np.ndarray,
                reopen: np.ndarray) -> int:
    run = runs[g]
    runf = runfs[g]
    reset_run(run, runf)
    return _late(k0, k1, c, ts, val, p, s, tail, hours, bounded, last_closed, run, runf, counts[g],
                 reopen)


@numba.njit(cache=True)
def _slow_step(t: int, v: float, k: int, bfl: np.ndarray, c: int, p: ChannelParams,
               hours: Hours, run: np.ndarray, runf: np.ndarray) -> None:
    _step(t, v, k, bfl, c, p.rollover[c], p.max_rate[c], p.gap_ms[c], p.rep_at, p.rep_old,
          p.rep_new, p.rep_ptr[c], p.rep_ptr[c + 1], hours.energy, hours.est, hours.flags,
          hours.anc_ts, hours.anc_val, hours.origin, run, runf, np.empty(0))


@numba.njit(cache=True, nogil=True)
def feed_channels(starts: np.ndarray, ch: np.ndarray, ts: np.ndarray, val: np.ndarray,
                  bfl: np.ndarray, p: ChannelParams, s: ChannelState, tail: Tail, hours: Hours,
                  bounded: bool, last_closed: int, runs: np.ndarray, runfs: np.ndarray,
                  status: np.ndarray, counts: np.ndarray, reopen: np.ndarray) -> None:
    """The live feed: readings sorted by (channel, time), unique, in groups ``starts[g]:
    starts[g+1]`` of one channel each.

    A group newer than its channel's newest reading steps on from the current state. One with
    older readings inside the raw tail is merged and re-run from the tail (``_late``). One
    older than the tail is left alone with status ``NEEDS_SOURCE``: its hours are re-spread
    from the store by the caller. ``runs[g]`` holds each group's written hours afterwards
    (``R_LO``/``R_HI``, for dirty tracking), ``counts[g]`` its ``C_*`` counts, and
    ``reopen[h - origin]`` is set for closed hours whose energy changed.

    The common reading (same hour as the previous one, no flag, no anchor due) is stepped
    here on local arrays: ``energy += v - v_prev`` and ``FLAG_READ``, exactly what ``_step``
    does for it, without the reference counting of passing bundles to it (measured ~30x
    cheaper); every other reading goes through ``_step``. Serial on purpose: a live batch of
    a few thousand channels costs less than waking a thread pool.
    """
    energy, est, flags, origin = hours.energy, hours.est, hours.flags, hours.origin
    cur_t, cur_v, last_t, first_t, anc_hi = s.cur_t, s.cur_v, s.last_t, s.first_t, s.anc_hi
    gap_ms, max_rate = p.gap_ms, p.max_rate
    t_off, t_len, t_cap, t_ts, t_val, t_fl = tail.offset, tail.length, tail.cap, tail.ts, tail.val, tail.fl
    for g in range(starts.shape[0] - 1):
        k0 = starts[g]
        k1 = starts[g + 1]
        c = ch[k0]
        if last_t[c] != NO_TS and ts[k0] <= last_t[c]:
            status[g] = _late_group(g, k0, k1, c, ts, val, p, s, tail, hours, bounded,
                                    last_closed, runs, runfs, counts, reopen)
            continue
        pt = cur_t[c]
        pv = cur_v[c]
        nxt = anc_hi[c] + 1 if pt != NO_TS else _FAR
        lo = _FAR
        hi = NO_TS
        h = NO_TS  # hour of pt and its bounds, updated as pt moves
        h_start = _FAR
        h_end = NO_TS
        status[g] = FED
        for k in range(k0, k1):
            t = ts[k]
            v = val[k]
            if pt != NO_TS and pt >= h_end:
                h = pt // HOUR_MS
                h_start = h * HOUR_MS
                h_end = h_start + HOUR_MS
            if pt != NO_TS and pt >= h_start and t <= h_end and nxt > h:
                flag = _simple(t, v, pt, pv, p.rollover[c], max_rate[c], gap_ms[c], p.rep_at,
                               p.rep_old, p.rep_new, p.rep_ptr[c], p.rep_ptr[c + 1], energy,
                               est, flags, h - origin, c)
                bfl[k] = flag
                if h < lo:
                    lo = h
                if h > hi:
                    hi = h
                if flag != FLAG_IMPLAUSIBLE:
                    pt = t
                    pv = v
            else:
                run = runs[g]
                runf = runfs[g]
                reset_run(run, runf)
                run[R_PREV_T] = pt
                runf[F_PREV_V] = pv
                run[R_NEXT_ANCHOR] = nxt
                _slow_step(t, v, k, bfl, c, p, hours, run, runf)
                pt = run[R_PREV_T]
                pv = runf[F_PREV_V]
                nxt = run[R_NEXT_ANCHOR]
                lo = min(lo, run[R_LO])
                hi = max(hi, run[R_HI])
                h_end = NO_TS  # recompute the hour of pt
            if t_cap[c] > 0:  # the raw tail: append, dropping the oldest half when full
                off = t_off[c]
                n = t_len[c]
                if n == t_cap[c]:
                    if not bounded:
                        status[g] = TAIL_FULL
                        break
                    keep = n - n // 2
                    drop = n - keep
                    for q in range(keep):
                        t_ts[off + q] = t_ts[off + drop + q]
                        t_val[off + q] = t_val[off + drop + q]
                        t_fl[off + q] = t_fl[off + drop + q]
                    n = keep
                t_ts[off + n] = t
                t_val[off + n] = v
                t_fl[off + n] = bfl[k]
                t_len[c] = n + 1
        if first_t[c] == NO_TS:
            first_t[c] = ts[k0]
        cur_t[c] = pt
        cur_v[c] = pv
        anc_hi[c] = nxt - 1
        last_t[c] = ts[k1 - 1]
        counts[g, C_NEW] = k1 - k0
        runs[g, R_LO] = lo
        runs[g, R_HI] = hi


# ------------------------------------------------------------------ plain kernels
def single_row_hours(energy_row: np.ndarray, est_row: np.ndarray, hour_origin: int) -> Hours:
    """One channel's energy rows as an ``Hours`` bundle (flags and anchors not kept)."""
    n = energy_row.shape[0]
    return Hours(energy_row.reshape(n, 1), est_row.reshape(n, 1), np.zeros((n, 1), np.uint8),
                 np.zeros((n, 1), np.int64), np.zeros((n, 1), np.float64), hour_origin)


@numba.njit(cache=True, nogil=True)
def counter_to_hours(ts: np.ndarray, val: np.ndarray, flags: np.ndarray, start: int, stop: int,
                     rollover: float, max_rate_per_h: float, gap_ms: int, hour_origin: int,
                     hour_clip: int, energy_row: np.ndarray, est_row: np.ndarray) -> int:
    """Process readings ``[start, stop)`` of one channel; returns the number of accepted deltas.

    ``ts[start]`` is the baseline. ``flags[k]`` is rewritten for ``k > start``. Energy is added
    to ``energy_row[h - hour_origin]`` for hours ``h >= hour_clip``. ``max_rate_per_h <= 0``
    disables the plausibility check; ``rollover <= 0`` means no wrap. The same step as the
    engine's (``_step``), over one channel's rows, for a channel without recorded replacements
    (``counter_to_hours_replaced`` takes them).
    """
    return counter_to_hours_replaced(ts, val, flags, start, stop, rollover, max_rate_per_h, gap_ms,
                                     hour_origin, hour_clip, energy_row, est_row,
                                     np.zeros(0, np.int64), np.zeros(0), np.zeros(0))


@numba.njit(cache=True, nogil=True)
def counter_to_hours_replaced(ts: np.ndarray, val: np.ndarray, flags: np.ndarray, start: int,
                              stop: int, rollover: float, max_rate_per_h: float, gap_ms: int,
                              hour_origin: int, hour_clip: int, energy_row: np.ndarray,
                              est_row: np.ndarray, rep_at: np.ndarray, rep_old: np.ndarray,
                              rep_new: np.ndarray) -> int:
    """``counter_to_hours`` for a channel with recorded meter replacements (``rep_at`` sorted:
    time, old meter's final reading, new meter's initial reading)."""
    if stop - start < 1:
        return 0
    n = energy_row.shape[0]
    hours = Hours(energy_row.reshape(n, 1), est_row.reshape(n, 1), np.zeros((n, 1), np.uint8),
                  np.zeros((n, 1), np.int64), np.zeros((n, 1), np.float64), hour_origin)
    p = ChannelParams(np.array([rollover]), np.array([max_rate_per_h]),
                      np.array([gap_ms], np.int64), np.array([0, rep_at.shape[0]], np.int64),
                      rep_at, rep_old, rep_new)
    run = np.empty(RUN_INTS, np.int64)
    runf = np.empty(RUN_FLOATS, np.float64)
    reset_run(run, runf)
    run[R_CLIP] = hour_clip
    run[R_NEXT_ANCHOR] = _FAR  # no anchors kept
    run[R_PREV_T] = ts[start]
    runf[F_PREV_V] = val[start]
    run_readings(ts, val, flags, start + 1, stop, 0, p, hours, run, runf, np.empty(0))
    return run[R_ACCEPTED]


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


@numba.njit(cache=True, nogil=True)
def is_sorted_unique(ch: np.ndarray, ts: np.ndarray) -> bool:
    """Whether readings are strictly increasing by (channel, time) — a store export and a poll
    cycle of one reading per channel usually are, and then sorting can be skipped."""
    for k in range(1, ch.shape[0]):
        if ch[k] < ch[k - 1] or (ch[k] == ch[k - 1] and ts[k] <= ts[k - 1]):
            return False
    return True


@numba.njit(cache=True, nogil=True)
def all_valid(val: np.ndarray) -> bool:
    """Whether every value is a finite, non-negative register reading (one pass, no temporaries)."""
    for v in val:  # noqa: SIM110 -- an explicit loop compiles to a tight numba loop
        if not (v >= 0.0 and v < np.inf):
            return False
    return True
