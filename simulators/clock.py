"""Plant time: UTC epoch seconds that may run faster than the wall clock.

With `time_scale` 1 and no explicit start, plant time is wall-clock time, so the gateway's
timestamps and the ground truth's hour buckets line up. A larger scale compresses a day
of plant into minutes for tests; totals still match, hour buckets then follow plant time.
Monotonic underneath: an NTP step on the host must not make a simulated meter run backwards.
"""

from __future__ import annotations

import time


class PlantClock:
    def __init__(self, start_s: float | None = None, time_scale: float = 1.0) -> None:
        if time_scale <= 0:
            raise ValueError(f"time_scale must be > 0, got {time_scale}")
        self.start_s = time.time() if start_s is None else start_s
        self.time_scale = time_scale
        self._t0 = time.monotonic()

    def now(self) -> float:
        """The current plant time (epoch seconds)."""
        return self.start_s + (time.monotonic() - self._t0) * self.time_scale

    def real_seconds_until(self, plant_t: float) -> float:
        """Wall-clock seconds from now until plant time reaches `plant_t` (≤ 0 if passed)."""
        return (plant_t - self.now()) / self.time_scale


class ManualClock(PlantClock):
    """Plant time that moves only when told to: tests compare reads and truth at one instant."""

    def __init__(self, start_s: float) -> None:
        super().__init__(start_s, 1.0)
        self._now = start_s

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds

    def real_seconds_until(self, plant_t: float) -> float:
        return 0.0 if plant_t <= self._now else 0.05  # poll: only advance() moves time
