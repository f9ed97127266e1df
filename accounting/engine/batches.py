"""Batch-id channels: which production batch a line ran when, kept as runs, not readings.

A PLC's ``batch_id`` register is read like any other channel, but only its changes matter: a
reading showing batch ``b`` says the line ran ``b`` until the next reading. The channel is
kept as *runs* of consecutive readings with the same value ``(value, first_ts, last_ts)``, so
its size is the number of batch changes, plus a bounded raw tail like the counters'. A run's
span is from its first reading to the next run's first reading (the last run ends at its last
reading), exactly the spans the readings give one by one.

A late reading is merged into the runs by re-deriving them after it: from the tail when it
covers the reading, else from the store (``ReadingSource``), up to the next batch change after
it, so the runs always equal those of all stored readings.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from accounting.engine.kernels_energy import NO_TS
from accounting.engine.results import IngestSummary
from accounting.errors import ReadingError

Fetch = Callable[[int, int], tuple[np.ndarray, np.ndarray]]


def _runs_of(ts: np.ndarray, val: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run-length encoding of sorted readings: (value, first_ts, last_ts) per run."""
    if not len(ts):
        return np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.int64)
    starts = np.flatnonzero(np.concatenate(([True], val[1:] != val[:-1])))
    ends = np.append(starts[1:], len(ts)) - 1
    return val[starts].astype(np.float64), ts[starts].astype(np.int64), ts[ends].astype(np.int64)


class BatchLog:
    """One batch-id channel: runs, raw tail (``cap`` readings, None: unbounded)."""

    def __init__(self, cap: int | None) -> None:
        self.cap = cap
        self.run_val = np.zeros(0)
        self.run_first = np.zeros(0, np.int64)
        self.run_last = np.zeros(0, np.int64)
        self.tail_ts = np.zeros(0, np.int64)
        self.tail_val = np.zeros(0)
        self.first_t = NO_TS
        self.last_t = NO_TS

    # ------------------------------------------------------------------ ingest
    def ingest(self, ts: np.ndarray, val: np.ndarray, summary: IngestSummary,
               fetch: Fetch | None, name: str) -> None:
        """Readings sorted by time, unique."""
        if self.last_t == NO_TS or ts[0] > self.last_t:
            self._append(ts, val)
            summary.accepted += len(ts)
            return
        trimmed = len(self.tail_ts) == 0 or self.first_t < self.tail_ts[0]
        if not trimmed or ts[0] >= self.tail_ts[0]:
            self._late_in_tail(ts, val, summary)
            return
        late = ts <= self.last_t
        summary.beyond_tail += int(late.sum())
        if fetch is None:
            raise ReadingError(f"{name}: readings older than the engine's raw tail and no reading "
                               "source to place them from")
        self._late_from_store(ts[late], val[late], fetch)
        if (~late).any():
            self._append(ts[~late], val[~late])
            summary.accepted += int((~late).sum())

    def _append(self, ts: np.ndarray, val: np.ndarray) -> None:
        v, f, last = _runs_of(ts, val)
        if len(self.run_val) and self.run_val[-1] == v[0]:
            self.run_last[-1] = last[0]
            v, f, last = v[1:], f[1:], last[1:]
        self.run_val = np.concatenate((self.run_val, v))
        self.run_first = np.concatenate((self.run_first, f))
        self.run_last = np.concatenate((self.run_last, last))
        if self.first_t == NO_TS:
            self.first_t = int(ts[0])
        self.last_t = int(ts[-1])
        self._set_tail(np.concatenate((self.tail_ts, ts)), np.concatenate((self.tail_val, val)))

    def _late_in_tail(self, ts: np.ndarray, val: np.ndarray, summary: IngestSummary) -> None:
        pos = np.searchsorted(self.tail_ts, ts)
        dup = (pos < len(self.tail_ts)) & (self.tail_ts[np.minimum(pos, len(self.tail_ts) - 1)] == ts)
        summary.duplicate += int(dup.sum())
        summary.conflicting += int((dup & (self.tail_val[np.minimum(pos, len(self.tail_ts) - 1)] != val)).sum())
        ts, val = ts[~dup], val[~dup]
        if not len(ts):
            return
        summary.accepted += len(ts)
        summary.late += int((ts < self.last_t).sum())
        all_ts = np.concatenate((self.tail_ts, ts))
        all_val = np.concatenate((self.tail_val, val))
        order = np.argsort(all_ts, kind="stable")
        all_ts, all_val = all_ts[order], all_val[order]
        after = int(ts[0]) - 1
        sel = all_ts > after
        self._splice(after, all_ts[sel], all_val[sel], None)
        self.first_t = min(self.first_t, int(all_ts[0])) if self.first_t != NO_TS else int(all_ts[0])
        self.last_t = max(self.last_t, int(all_ts[-1]))
        self._set_tail(all_ts, all_val)

    def _late_from_store(self, ts: np.ndarray, val: np.ndarray, fetch: Fetch) -> None:
        after = int(ts[0]) - 1
        nxt = int(np.searchsorted(self.run_first, ts[-1], side="right"))
        end = int(self.run_first[nxt]) if nxt < len(self.run_first) else self.last_t + 1
        got_ts, got_val = fetch(after + 1, end)
        all_ts = np.concatenate((got_ts, ts))
        all_val = np.concatenate((got_val, val))
        order = np.argsort(all_ts, kind="stable")  # stored first on equal times: the store's value
        all_ts, all_val = all_ts[order], all_val[order]
        first = np.ones(len(all_ts), bool)
        first[1:] = all_ts[1:] != all_ts[:-1]
        all_ts, all_val = all_ts[first], all_val[first]
        self._splice(after, all_ts, all_val, nxt if nxt < len(self.run_first) else None)
        if self.first_t == NO_TS or all_ts[0] < self.first_t:
            self.first_t = int(all_ts[0])
        if nxt >= len(self.run_first):
            self._set_tail(all_ts, all_val)

    def _splice(self, after: int, ts: np.ndarray, val: np.ndarray, resume: int | None) -> None:
        """Replace the runs after time ``after`` (up to run ``resume``, kept) by those of the
        readings given, which must be every reading in between."""
        r = int(np.searchsorted(self.run_first, after, side="right")) - 1
        pv, pf, pl = self.run_val[:r + 1].copy(), self.run_first[:r + 1].copy(), self.run_last[:r + 1].copy()
        if r >= 0:
            pl[-1] = min(int(pl[-1]), after)
        nv, nf, nl = _runs_of(ts, val)
        if resume is not None:
            sv, sf, sl = self.run_val[resume:], self.run_first[resume:], self.run_last[resume:]
        else:
            sv, sf, sl = np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.int64)
        v = np.concatenate((pv, nv, sv))
        f = np.concatenate((pf, nf, sf))
        last = np.concatenate((pl, nl, sl))
        if len(v) > 1:  # merge neighbours with the same value at the seams
            keep = np.concatenate(([True], v[1:] != v[:-1]))
            group = np.cumsum(keep) - 1
            ends = np.zeros(int(keep.sum()), np.int64)
            np.maximum.at(ends, group, last)
            v, f, last = v[keep], f[keep], ends
        self.run_val, self.run_first, self.run_last = v, f, last

    def _set_tail(self, ts: np.ndarray, val: np.ndarray) -> None:
        if self.cap is not None and len(ts) > self.cap:
            keep = self.cap - self.cap // 2
            ts, val = ts[-keep:], val[-keep:]
        self.tail_ts, self.tail_val = ts.copy(), val.copy()

    # ------------------------------------------------------------------ queries
    def spans(self, target: float) -> tuple[list[tuple[int, int]], int, int] | None:
        """The spans during which the channel showed ``target``, and the whole span's bounds."""
        hit = np.flatnonzero(self.run_val == target)
        if not len(hit):
            return None
        n = len(self.run_val)
        ends = [int(self.run_first[i + 1]) if i + 1 < n else int(self.run_last[i]) for i in hit.tolist()]
        spans = [(int(self.run_first[i]), e) for i, e in zip(hit.tolist(), ends, strict=True)]
        return spans, spans[0][0], ends[-1]

    def readings(self) -> tuple[np.ndarray, np.ndarray]:
        """The raw tail (every reading when unbounded)."""
        return self.tail_ts, self.tail_val

    def arrays(self, with_tail: bool) -> dict[str, np.ndarray]:
        """For checkpoints."""
        out = {"run_val": self.run_val, "run_first": self.run_first, "run_last": self.run_last,
               "bounds": np.array([self.first_t, self.last_t], np.int64)}
        if with_tail:
            out |= {"tail_ts": self.tail_ts, "tail_val": self.tail_val}
        return out

    def load(self, arrays: dict[str, np.ndarray]) -> None:
        self.run_val, self.run_first, self.run_last = arrays["run_val"], arrays["run_first"], arrays["run_last"]
        self.first_t, self.last_t = (int(x) for x in arrays["bounds"])
        if "tail_ts" in arrays:
            self.tail_ts, self.tail_val = arrays["tail_ts"], arrays["tail_val"]

    def resume(self, after: int, fetch: Fetch, until: int) -> None:
        """After a restart: re-derive the runs after ``after`` from the store through ``until``
        (exclusive), refilling the tail."""
        ts, val = fetch(after + 1, until)
        if not len(ts):
            return
        self._splice(after, ts, val, None)
        if self.first_t == NO_TS or ts[0] < self.first_t:
            self.first_t = int(ts[0])
        self.last_t = max(self.last_t, int(ts[-1]))
        self._set_tail(ts, val)
