"""The live reading log: per-channel sorted readings and their hourly energy.

Readings arrive in any batch split, in any order, with duplicates. Each channel keeps its
readings sorted and unique by timestamp (the first received value of a timestamp wins; a later
different value for the same timestamp is counted as a conflict and ignored). After a batch,
each touched channel is re-run through the energy kernel from the last accepted reading at or
before the start of the earliest hour the new readings can affect, and those hours are rebuilt
from zero. Because recomputation runs the same kernel over the same sorted readings, live and
recomputed hourly values are bit-identical, and totals do not depend on arrival order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from accounting.engine.kernels_energy import (
    FLAG_IMPLAUSIBLE,
    HOUR_MS,
    counter_to_hours,
    is_sorted_unique,
)


@dataclass
class IngestSummary:
    """Counts of one ingest call. ``late`` readings were older than their channel's newest one
    (accepted, they may refine the hourly spread); ``reopened_hours`` are closed hours whose
    values changed."""

    accepted: int = 0
    duplicate: int = 0
    conflicting: int = 0
    late: int = 0
    rejected: int = 0
    reopened_hours: int = 0

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class ChannelLog:
    """Sorted unique readings of one channel, in growable arrays."""

    __slots__ = ("ts", "val", "flags", "n")

    def __init__(self) -> None:
        self.ts = np.zeros(16, dtype=np.int64)
        self.val = np.zeros(16, dtype=np.float64)
        self.flags = np.zeros(16, dtype=np.uint8)
        self.n = 0

    def merge(self, ts: np.ndarray, val: np.ndarray, summary: IngestSummary) -> int:
        """Merge sorted unique ``ts``/``val``; returns the index of the first new reading, or -1."""
        n = self.n
        if n and ts[0] <= self.ts[n - 1]:
            pos = np.searchsorted(self.ts[:n], ts)
            dup = (pos < n) & (self.ts[np.minimum(pos, n - 1)] == ts)
            summary.duplicate += int(dup.sum())
            summary.conflicting += int((dup & (self.val[np.minimum(pos, n - 1)] != val)).sum())
            keep = ~dup
            ts, val, pos = ts[keep], val[keep], pos[keep]
            if len(ts) == 0:
                return -1
            summary.late += int((ts < self.ts[n - 1]).sum())
            summary.accepted += len(ts)
            first = int(pos[0])
            self.ts = np.insert(self.ts[:n], pos, ts)
            self.val = np.insert(self.val[:n], pos, val)
            self.flags = np.insert(self.flags[:n], pos, np.zeros(len(ts), np.uint8))
            self.n = len(self.ts)
            return first
        summary.accepted += len(ts)
        need = n + len(ts)
        if need > len(self.ts):
            cap = max(need, 2 * len(self.ts))
            for name in ("ts", "val", "flags"):
                old = getattr(self, name)
                new = np.zeros(cap, dtype=old.dtype)
                new[:n] = old[:n]
                setattr(self, name, new)
        self.ts[n:need] = ts
        self.val[n:need] = val
        self.flags[n:need] = 0
        self.n = need
        return n

    def restart_point(self, first_new: int) -> tuple[int, int]:
        """(baseline index, first hour to rebuild) after readings were added from ``first_new``."""
        ts, flags = self.ts, self.flags
        if first_new == 0:
            return 0, int(ts[0] // HOUR_MS)
        j = first_new - 1
        while j > 0 and flags[j] & FLAG_IMPLAUSIBLE:
            j -= 1
        clip = int(ts[j] // HOUR_MS)
        # last reading at or before the start of hour `clip`, stepping back over rejected ones
        b = max(int(np.searchsorted(ts[: j + 1], clip * HOUR_MS, side="right")) - 1, 0)
        while b > 0 and flags[b] & FLAG_IMPLAUSIBLE:
            b -= 1
        return b, clip

    def last_hour(self) -> int:
        """The last hour a reading of this channel contributes to."""
        return int((self.ts[self.n - 1] - 1) // HOUR_MS)


def rebuild_channel(log: ChannelLog, baseline: int, clip: int, rollover: float, max_rate: float,
                    gap_ms: int, hour_origin: int, energy_row: np.ndarray,
                    est_row: np.ndarray) -> None:
    """Zero hours >= ``clip`` of one channel and rebuild them from reading ``baseline``."""
    energy_row[clip - hour_origin:] = 0.0
    est_row[clip - hour_origin:] = 0.0
    counter_to_hours(log.ts, log.val, log.flags, baseline, log.n, rollover, max_rate, gap_ms,
                     hour_origin, clip, energy_row, est_row)


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
