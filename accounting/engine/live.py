"""Counter readings into the live state: the live feed, re-spreads from the store, resume.

``CounterFeed.feed`` hands a sorted batch to the ``feed_channels`` kernel, which steps each
channel on from its current state, or re-runs it from its raw tail when a reading is late.
A reading older than the tail is re-spread from the store (``ReadingSource``):

1. the anchor of the hour before it gives the last accepted reading before it, ``a``; the anchor
   of ``a``'s hour gives the state entering that hour, where the rebuild starts (hours before
   it cannot change: nothing before ``a`` moves);
2. the stored readings after that hour's start, merged with the late ones, are run through the
   same step as the live feed, the hours being zeroed just before their first contribution;
3. at each hour boundary after the newest late reading the state entering the hour is
   compared with the old anchor: when they agree, every later hour is unchanged, and the rebuild
   stops once the reading that completes the last rebuilt hour is processed.

So the hours equal, bit for bit, those of a recomputation from the store (ACCOUNTING.md §6.4),
whatever the engine has forgotten. ``resume`` rebuilds the hours after a restart from the
store: from a margin before each channel's newest reading to the store's newest.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from accounting.engine.kernels_energy import (
    C_CONFLICTING,
    C_DUPLICATE,
    C_LATE,
    C_NEW,
    COUNTS,
    F_OLD_CUR_V,
    F_PREV_V,
    HOUR_MS,
    NEEDS_SOURCE,
    NO_TS,
    R_CLIP,
    R_CONV_FROM,
    R_DONE,
    R_DRAIN,
    R_HI,
    R_LO,
    R_NEXT_ANCHOR,
    R_OLD_ANC_HI,
    R_OLD_CUR_T,
    R_PREV_T,
    R_SWEEP,
    R_ZEROED,
    RUN_FLOATS,
    RUN_INTS,
    TAIL_FULL,
    feed_channels,
    finish_run,
    is_sorted_unique,
    new_run,
    run_readings,
)
from accounting.engine.results import IngestSummary
from accounting.engine.source import ReadingSource
from accounting.engine.state import LiveState, ceil_hour, hours_needed
from accounting.errors import ReadingError, SourceUnavailableError

log = logging.getLogger(__name__)

#: Hours of stored readings fetched per request when re-spreading.
FETCH_HOURS = 6


@dataclass
class _Pending:
    channel: int
    ts: np.ndarray
    val: np.ndarray


@dataclass
class CounterFeed:
    """The counter channels of one engine: ``state`` plus where to find forgotten readings."""

    state: LiveState
    keys: tuple[tuple[str, str], ...]
    grace_period_s: float
    source: ReadingSource | None = None
    pending: list[_Pending] = field(default_factory=list)

    # ------------------------------------------------------------------ live feed
    def feed(self, ch: np.ndarray, ts: np.ndarray, val: np.ndarray, starts: np.ndarray,
             summary: IngestSummary) -> None:
        """Counter readings sorted by (channel, time), unique; ``starts``: each channel's first."""
        if self.pending:
            self.retry_pending(summary)
        st = self.state
        lo, hi = hours_needed(ts)
        st.ensure_hours(lo, hi)
        group_ch = ch[starts]
        bounds = np.append(starts, len(ch)).astype(np.int64)
        st.reserve_tail(group_ch, np.diff(bounds))
        last_closed = st.last_closed_hour(self.grace_period_s)
        n_g = len(starts)
        runs = np.empty((n_g, RUN_INTS), np.int64)
        runfs = np.empty((n_g, RUN_FLOATS))
        status = np.zeros(n_g, np.int64)
        counts = np.zeros((n_g, COUNTS), np.int64)
        reopen = np.zeros(st.capacity, np.uint8)
        feed_channels(bounds, ch, ts, val, np.zeros(len(ts), np.uint8), st.params, st.channels,
                      st.tail, st.hours(), st.bounded, last_closed, runs, runfs, status, counts,
                      reopen)
        if (status == TAIL_FULL).any():
            raise RuntimeError("engine bug: a raw tail had no room reserved")
        total = counts.sum(axis=0)
        summary.accepted += int(total[C_NEW])
        summary.duplicate += int(total[C_DUPLICATE])
        summary.conflicting += int(total[C_CONFLICTING])
        summary.late += int(total[C_LATE])
        st.mark_dirty(runs[:, R_LO], runs[:, R_HI])
        reopened = [np.flatnonzero(reopen) + st.origin]
        for g in np.flatnonzero(status == NEEDS_SOURCE).tolist():
            k0, k1 = int(bounds[g]), int(bounds[g + 1])
            reopened.append(self._beyond_tail(int(group_ch[g]), ts[k0:k1], val[k0:k1], last_closed,
                                              summary))
        s = st.channels
        has = s.first_t[group_ch] != NO_TS
        if has.any():
            st.note_span(int((s.first_t[group_ch][has] // HOUR_MS).min()),
                         int(((s.last_t[group_ch][has] - 1) // HOUR_MS).max()))
        st.watermark_ms = max(st.watermark_ms, int(ts.max()))
        self._revise(reopened, summary)

    def _revise(self, reopened: list[np.ndarray], summary: IngestSummary) -> None:
        """Closed hours (absolute indices) whose energy changed: one more revision each."""
        st = self.state
        hours = np.unique(np.concatenate(reopened)) if reopened else np.zeros(0, np.int64)
        if len(hours):
            st.revision[hours - st.origin] += 1
            st.mark_dirty(hours, hours)
        summary.reopened_hours += len(hours)

    def _beyond_tail(self, c: int, ts: np.ndarray, val: np.ndarray, last_closed: int,
                     summary: IngestSummary) -> np.ndarray:
        """A group with readings older than the channel's raw tail: re-spread those from the
        store, then append the newer ones (if any) like the live feed would."""
        s = self.state.channels
        late = ts <= s.last_t[c]
        n_late = int(late.sum())
        summary.beyond_tail += n_late
        if self.source is None:
            raise ReadingError(
                f"{'/'.join(self.keys[c])}: {n_late} reading(s) older than the engine's raw tail "
                "and no reading source to re-spread them from (give the engine a source, or "
                "keep every reading: tail_s=None)")
        reopened = np.zeros(0, np.int64)
        try:
            reopened = self.respread(c, ts[late], val[late], last_closed)
        except SourceUnavailableError as exc:
            log.warning("%s: %d late reading(s) wait for the store (%s)", "/".join(self.keys[c]),
                        n_late, exc)
            self.pending.append(_Pending(c, ts[late].copy(), val[late].copy()))
            summary.pending += n_late
        if n_late < len(ts):
            self._append_group(c, ts[~late], val[~late], last_closed, summary)
        return reopened

    def _append_group(self, c: int, ts: np.ndarray, val: np.ndarray, last_closed: int,
                      summary: IngestSummary) -> None:
        st = self.state
        st.reserve_tail(np.array([c]), np.array([len(ts)]))
        runs = np.empty((1, RUN_INTS), np.int64)
        counts = np.zeros((1, COUNTS), np.int64)
        status = np.zeros(1, np.int64)
        feed_channels(np.array([0, len(ts)], np.int64), np.full(len(ts), c, np.int64),
                      np.ascontiguousarray(ts), np.ascontiguousarray(val), np.zeros(len(ts), np.uint8),
                      st.params, st.channels, st.tail, st.hours(), st.bounded, last_closed, runs,
                      np.empty((1, RUN_FLOATS)), status, counts, np.zeros(st.capacity, np.uint8))
        summary.accepted += int(counts[0, C_NEW])
        st.mark_dirty(runs[:, R_LO], runs[:, R_HI])

    def retry_pending(self, summary: IngestSummary | None = None) -> int:
        """Re-spread late readings that waited for the store; returns how many still wait."""
        st = self.state
        waiting = self.pending
        self.pending = []
        reopened = []
        last_closed = st.last_closed_hour(self.grace_period_s)
        for i, p in enumerate(waiting):
            try:
                reopened.append(self.respread(p.channel, p.ts, p.val, last_closed))
            except SourceUnavailableError:
                self.pending = waiting[i:]
                break
        self._revise(reopened, summary or IngestSummary())
        return sum(len(p.ts) for p in self.pending)

    # ------------------------------------------------------------------ from the store
    def anchor(self, c: int, hour: int) -> tuple[int, float]:
        """The state entering ``hour``: the last accepted reading at or before its start."""
        st = self.state
        s = st.channels
        if hour > s.anc_hi[c]:
            return int(s.cur_t[c]), float(s.cur_v[c])
        i = hour - st.origin
        if i < 0:
            return NO_TS, 0.0
        if i >= st.capacity:
            return int(s.cur_t[c]), float(s.cur_v[c])
        return int(st.anc_ts[i, c]), float(st.anc_val[i, c])

    def respread(self, c: int, ts: np.ndarray, val: np.ndarray, last_closed: int) -> np.ndarray:
        """Re-spread the hours late readings ``ts``/``val`` (sorted, unique, none newer than
        the channel's newest) can change, from the stored readings around them; returns the
        closed hours whose energy changed."""
        st = self.state
        s = st.channels
        t_min, t_max = int(ts[0]), int(ts[-1])
        run, runf = new_run()
        a_t, _ = self.anchor(c, (t_min - 1) // HOUR_MS)
        clip = a_t // HOUR_MS if a_t != NO_TS else 0
        b_t, b_v = self.anchor(c, clip) if a_t != NO_TS else (NO_TS, 0.0)
        if b_t == NO_TS:  # nothing accepted before: the run starts from the channel's first reading
            first = int(s.first_t[c]) if s.first_t[c] != NO_TS else t_min
            fetch_lo = min(t_min, first)
            clip = (fetch_lo - 1) // HOUR_MS
        else:
            fetch_lo = clip * HOUR_MS + 1  # readings in (b, clip start] change nothing
            run[R_PREV_T] = b_t
            runf[F_PREV_V] = b_v
            run[R_NEXT_ANCHOR] = ceil_hour(b_t)
        run[R_CONV_FROM] = ceil_hour(t_max)
        run[R_OLD_ANC_HI] = s.anc_hi[c]
        run[R_OLD_CUR_T] = s.cur_t[c]
        runf[F_OLD_CUR_V] = s.cur_v[c]
        reopened = self._rebuild(c, run, runf, clip, fetch_lo, int(s.last_t[c]) + 1, ts, val,
                                 last_closed)
        if s.first_t[c] == NO_TS or t_min < s.first_t[c]:
            s.first_t[c] = t_min
        return reopened

    def resume(self, margin_ms: int, until_ms: dict[str, int] | None = None) -> int:
        """After a restart from a checkpoint: rebuild each channel's hours from ``margin_ms``
        before its newest reading, from the store, through the store's newest reading of its
        meter (``until_ms``, exclusive; default: the channel's newest), and refill the raw
        tails. Readings stored but not fed before the stop are picked up. Returns the number
        of closed hours that changed."""
        if self.source is None:
            raise ReadingError("resume needs a reading source")
        st = self.state
        s = st.channels
        reopened = []
        last_closed = st.last_closed_hour(self.grace_period_s)
        for c in range(st.n):
            if s.last_t[c] == NO_TS:
                first_ms = None
                stop = (until_ms or {}).get(self.keys[c][0])
                if stop is None:
                    continue
                clip, fetch_lo = None, None
            else:
                first_ms = int(s.last_t[c]) - margin_ms
                stop = max(int(s.last_t[c]) + 1, (until_ms or {}).get(self.keys[c][0], 0))
            run, runf = new_run()
            if first_ms is None:
                fetch_lo = stop - margin_ms
                clip = (fetch_lo - 1) // HOUR_MS
            else:
                clip = first_ms // HOUR_MS
                b_t, b_v = self.anchor(c, clip)
                if b_t == NO_TS:
                    fetch_lo = int(s.first_t[c])
                    clip = (fetch_lo - 1) // HOUR_MS
                else:
                    fetch_lo = clip * HOUR_MS + 1
                    run[R_PREV_T] = b_t
                    runf[F_PREV_V] = b_v
                    run[R_NEXT_ANCHOR] = ceil_hour(b_t)
            reopened.append(self._rebuild(c, run, runf, clip, fetch_lo, stop, None, None, last_closed))
        has = s.first_t != NO_TS
        if has.any():
            st.note_span(int((s.first_t[has] // HOUR_MS).min()), int(((s.last_t[has] - 1) // HOUR_MS).max()))
            st.watermark_ms = max(st.watermark_ms, int(s.last_t[has].max()))
        summary = IngestSummary()
        self._revise(reopened, summary)
        return summary.reopened_hours

    def _rebuild(self, c: int, run: np.ndarray, runf: np.ndarray, clip: int, fetch_lo: int,
                 fetch_hi: int, late_ts: np.ndarray | None, late_val: np.ndarray | None,
                 last_closed: int) -> np.ndarray:
        """Run channel ``c`` over stored readings ``[fetch_lo, fetch_hi)`` (plus the late ones)
        from the baseline in ``run``, rebuilding hours from ``clip``; returns the closed hours
        (absolute) whose energy changed."""
        st = self.state
        s = st.channels
        meter, channel = self.keys[c]
        run[R_CLIP] = clip
        run[R_ZEROED] = clip
        run[R_SWEEP] = 1
        scratch = np.empty(max(0, last_closed - clip + 1))
        old_last = int(s.last_t[c])
        seen_ts: list[np.ndarray] = []
        seen_val: list[np.ndarray] = []
        seen_fl: list[np.ndarray] = []
        kept = 0
        cap = int(st.tail.cap[c]) if st.bounded else None
        lo = fetch_lo
        newest = old_last
        while lo < fetch_hi:
            hi = min(fetch_hi, (lo // HOUR_MS + FETCH_HOURS) * HOUR_MS)
            got = self.source.channel_readings(meter, [channel], lo, hi)  # type: ignore[union-attr]
            ts, val = got.get(channel, (np.zeros(0, np.int64), np.zeros(0)))
            if late_ts is not None:
                ts, val = _merge_stored_first(ts, val, late_ts, late_val, lo, hi)
            lo = hi
            if not len(ts):
                continue
            st.ensure_hours(*hours_needed(ts))
            rfl = np.zeros(len(ts), np.uint8)
            k = run_readings(ts, val, rfl, 0, len(ts), c, st.params, st.hours(), run, runf, scratch)
            newest = max(newest, int(ts[k - 1]))
            seen_ts.append(ts[:k])
            seen_val.append(val[:k])
            seen_fl.append(rfl[:k])
            kept += k
            if cap is not None:
                while len(seen_ts) > 1 and kept - len(seen_ts[0]) >= cap:
                    kept -= len(seen_ts.pop(0))
                    seen_val.pop(0)
                    seen_fl.pop(0)
            if run[R_DONE] == 1:
                break
        reopen = np.zeros(st.capacity, np.uint8)
        end = max(old_last, newest)
        finish_run(c, (end - 1) // HOUR_MS if end != NO_TS else clip - 1, st.hours(), run, scratch,
                   last_closed, reopen)
        reopened = np.flatnonzero(reopen) + st.origin
        st.mark_dirty(run[[R_LO]], run[[R_HI]])
        if not seen_ts:
            seen = (np.zeros(0, np.int64), np.zeros(0), np.zeros(0, np.uint8))
        else:
            seen = (np.concatenate(seen_ts), np.concatenate(seen_val), np.concatenate(seen_fl))
        if run[R_DRAIN] == 1:  # converged: the newer hours and the tail's readings stand
            _refresh_tail_flags(st, c, *seen)
            return reopened
        if run[R_PREV_T] != NO_TS:
            s.cur_t[c] = run[R_PREV_T]
            s.cur_v[c] = runf[F_PREV_V]
            s.anc_hi[c] = run[R_NEXT_ANCHOR] - 1
        if newest != NO_TS:
            s.last_t[c] = max(old_last, newest)
        if s.first_t[c] == NO_TS and len(seen[0]):
            s.first_t[c] = int(seen[0][0])
        st.set_tail(c, *seen)
        return reopened


def sort_batch(ch: np.ndarray, ts: np.ndarray, val: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Sort a batch by (channel, time), drop in-batch repeats keeping the first received.

    Returns (ch, ts, val, group starts, number of in-batch duplicates).
    """
    if len(ch) == 0:
        return ch, ts, val, np.zeros(0, np.int64), 0
    dups = 0
    if not is_sorted_unique(ch, ts):
        order = np.lexsort((ts, ch))  # stable: equal keys keep arrival order
        ch, ts, val = ch[order], ts[order], val[order]
        first = np.ones(len(ch), dtype=bool)
        first[1:] = (ch[1:] != ch[:-1]) | (ts[1:] != ts[:-1])
        dups = int(len(ch) - first.sum())
        ch, ts, val = ch[first], ts[first], val[first]
    starts = np.flatnonzero(np.concatenate(([True], ch[1:] != ch[:-1])))
    return ch, ts, val, starts, dups


def _merge_stored_first(ts: np.ndarray, val: np.ndarray, late_ts: np.ndarray, late_val: np.ndarray,
                        lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    """Stored readings plus the late ones in ``[lo, hi)``, sorted and unique; on equal
    timestamps the stored value wins (the store is the system of record)."""
    sel = (late_ts >= lo) & (late_ts < hi)
    if not sel.any():
        return ts, val
    all_ts = np.concatenate((ts, late_ts[sel]))
    all_val = np.concatenate((val, late_val[sel]))
    order = np.argsort(all_ts, kind="stable")
    all_ts, all_val = all_ts[order], all_val[order]
    first = np.ones(len(all_ts), bool)
    first[1:] = all_ts[1:] != all_ts[:-1]
    return all_ts[first], all_val[first]


def _refresh_tail_flags(st: LiveState, c: int, ts: np.ndarray, val: np.ndarray, fl: np.ndarray) -> None:
    """After a converged re-spread: the tail's readings the re-run went through get its flags."""
    if not len(ts):
        return
    t = st.tail
    off, n = int(t.offset[c]), int(t.length[c])
    tail_ts = t.ts[off:off + n]
    pos = np.searchsorted(ts, tail_ts)
    hit = (pos < len(ts)) & (ts[np.minimum(pos, len(ts) - 1)] == tail_ts)
    t.fl[off:off + n][hit] = fl[pos[hit]]

