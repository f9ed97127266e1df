"""Timestamps for readings: UTC wall-clock time, kept honest by the monotonic clock.

A reading's `ts_ms` is when the meter answered, in UTC (docs/wire-format.md). The wall clock of
an edge box is the weakest part of that: an operator sets it by hand, an NTP daemon steps it
after a boot without a real-time clock, a failing RTC battery sends it back to 1970. Stamped
straight from `time.time()`, a clock stepped back one hour for a minute put that minute's
readings an hour early, where their counter values made a glitch the engine could not
account for (issue #14: 30,415 units booked for 49).

The monotonic clock cannot step. So each timestamp is the wall-clock time the monotonic clock
predicts from the last agreement between the two: while the wall clock stays within
`tolerance_ms` of that prediction (NTP slewing, drift), it is followed, and the prediction is
re-anchored on it; when it jumps further, the prediction is used instead (the step is counted
in `steps`, logged, and shown in the gateway's health as `clock_offset_ms`). A step that
persists for `settle_s` was a correction, not an accident (NTP setting a clock that was wrong
since boot): the clock re-anchors on the wall clock (`resyncs`), once, and from then on follows
it again. Readings then jump by the correction; accounting flags a jump backwards
(`clock_backwards`) and refuses one far into the future (`timestamp`), so totals stay right.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger("tanji.gateway")

TOLERANCE_MS = 2_000
SETTLE_S = 300.0


class ReadingClock:
    """`now_ms()`: UTC epoch ms, monotonic while the wall clock misbehaves (thread-safe)."""

    def __init__(self, *, tolerance_ms: int = TOLERANCE_MS, settle_s: float = SETTLE_S,
                 wall_ns: Callable[[], int] = time.time_ns, mono_ns: Callable[[], int] = time.monotonic_ns) -> None:
        self.tolerance_ms = tolerance_ms
        self.settle_s = settle_s
        self._wall_ns = wall_ns
        self._mono_ns = mono_ns
        self._lock = threading.Lock()
        self._anchor_wall = wall_ns()
        self._anchor_mono = mono_ns()
        self._stepped_since_ns: int | None = None  # monotonic time the current disagreement began
        self.steps = 0
        self.resyncs = 0
        self.offset_ms = 0  # wall clock minus the time readings get (0 while they agree)

    def now_ms(self) -> int:
        with self._lock:
            wall, mono = self._wall_ns(), self._mono_ns()
            predicted = self._anchor_wall + (mono - self._anchor_mono)
            offset_ms = (wall - predicted) // 1_000_000
            if abs(offset_ms) <= self.tolerance_ms:
                self._anchor_wall, self._anchor_mono = wall, mono
                if self._stepped_since_ns is not None:
                    log.warning("the wall clock agrees with the monotonic clock again; readings follow it")
                self._stepped_since_ns = None
                self.offset_ms = 0
                return wall // 1_000_000
            if self._stepped_since_ns is None:
                self._stepped_since_ns = mono
                self.steps += 1
                log.warning("the wall clock jumped %+d ms against the monotonic clock; readings keep the monotonic "
                            "time until it agrees again or the jump persists for %.0f s", offset_ms, self.settle_s)
            elif mono - self._stepped_since_ns >= self.settle_s * 1e9:
                log.warning("the wall clock has stayed %+d ms off for %.0f s: taking it as a correction; readings "
                            "follow it from now on", offset_ms, self.settle_s)
                self._anchor_wall, self._anchor_mono = wall, mono
                self._stepped_since_ns = None
                self.resyncs += 1
                self.offset_ms = 0
                return wall // 1_000_000
            self.offset_ms = offset_ms
            return predicted // 1_000_000

    def health(self) -> dict[str, int]:
        return {"clock_steps": self.steps, "clock_resyncs": self.resyncs, "clock_offset_ms": self.offset_ms}


#: The process's clock for readings (gateway/scheduler.py `now_ms`).
READINGS = ReadingClock()
