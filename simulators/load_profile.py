"""What a plant draws and generates over time: shifts, machine stops, base load, noise, daylight.

Every profile is a pure function of plant time (UTC epoch seconds), piecewise constant on a
grid of `step_s` cells and seeded through simulators.randomness. Meters integrate these
functions cell by cell, so a counter is exactly the integral of the power the meter shows,
and the ground truth can be recomputed for any instant.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Protocol

from simulators.randomness import signed, uniform

CHINA_UTC_OFFSET_S = 8 * 3600  # China Standard Time, no daylight saving
STOP_WINDOW_S = 600.0  # at most one unplanned stop per 10-minute window
CLOUD_WINDOW_S = 300.0  # cloud cover changes every 5 minutes


class PowerSource(Protocol):
    """Anything with a power (kW) at every instant: loads, PV, the net flow at the incomer."""

    def power_kw(self, t: float) -> float: ...


def cell_start(t: float, step_s: float) -> float:
    """Start of the profile cell containing t: profiles hold their value over a whole cell."""
    return math.floor(t / step_s) * step_s


@dataclass(frozen=True, slots=True)
class Shifts:
    """Working hours in local time; a window whose end is before its start runs past midnight."""

    windows: tuple[tuple[float, float], ...] = ((0.0, 24.0),)
    utc_offset_s: int = CHINA_UTC_OFFSET_S

    def on(self, t: float) -> bool:
        hour = ((t + self.utc_offset_s) % 86400.0) / 3600.0
        for start, end in self.windows:
            if (start <= hour < end) if start <= end else (hour >= start or hour < end):
                return True
        return False


class LineHold:
    """Stops an operator commands (the PLC's stop button): plant-time spans the line stands still.

    Kept as spans, not a flag, so a profile stays a pure function of time: a meter that
    integrates a span after the command still counts it the way the line really ran.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spans: list[list[float]] = []  # [from_s, until_s]; until_s is inf while held

    def hold(self, t: float) -> None:
        """The line stops at plant time `t` until released (a no-op while already held)."""
        with self._lock:
            if not self._spans or self._spans[-1][1] != math.inf:
                self._spans.append([t, math.inf])

    def release(self, t: float) -> None:
        """The line goes back to its schedule at plant time `t`."""
        with self._lock:
            if self._spans and self._spans[-1][1] == math.inf:
                self._spans[-1][1] = max(t, self._spans[-1][0])

    @property
    def held(self) -> bool:
        return bool(self._spans) and self._spans[-1][1] == math.inf

    def stopped(self, t: float) -> bool:
        return any(a <= t < b for a, b in self._spans)


@dataclass(frozen=True, slots=True)
class Schedule:
    """When a line runs: inside its shifts, minus unplanned machine stops (jams, changeovers),
    minus the stops an operator commands (`hold`)."""

    shifts: Shifts = Shifts()
    stops_per_h: float = 0.0
    stop_mean_s: float = 60.0
    seed: int = 0
    hold: LineHold = field(default_factory=LineHold, compare=False)

    def running(self, t: float) -> bool:
        if not self.shifts.on(t) or self.hold.stopped(t):
            return False
        if self.stops_per_h <= 0:
            return True
        window = int(t // STOP_WINDOW_S)
        if uniform(self.seed, window, 0) >= min(1.0, self.stops_per_h * STOP_WINDOW_S / 3600.0):
            return True
        length = min(STOP_WINDOW_S, self.stop_mean_s * (0.5 + uniform(self.seed, window, 1)))
        start = window * STOP_WINDOW_S + uniform(self.seed, window, 2) * (STOP_WINDOW_S - length)
        return not start <= t < start + length


@dataclass(frozen=True, slots=True)
class Load:
    """A consumer: idle base load always, `run_kw` more while its schedule runs, plus noise.

    `daily_swing_pct` adds a sinusoid peaking at 15:00 local time (HVAC follows the sun).
    """

    base_kw: float
    run_kw: float = 0.0
    schedule: Schedule | None = None
    noise_pct: float = 2.0
    daily_swing_pct: float = 0.0
    seed: int = 0
    step_s: float = 1.0
    utc_offset_s: int = CHINA_UTC_OFFSET_S

    def power_kw(self, t: float) -> float:
        k = math.floor(t / self.step_s)
        tc = k * self.step_s
        p = self.base_kw
        if self.run_kw and (self.schedule is None or self.schedule.running(tc)):
            p += self.run_kw
        if self.daily_swing_pct:
            hour = ((tc + self.utc_offset_s) % 86400.0) / 3600.0
            p *= 1.0 + self.daily_swing_pct / 100.0 * math.cos((hour - 15.0) / 24.0 * 2.0 * math.pi)
        return p * (1.0 + self.noise_pct / 100.0 * signed(self.seed, k))


@dataclass(frozen=True, slots=True)
class Daylight:
    """PV generation (kW, ≥ 0): a clear-sky arch between sunrise and sunset, dimmed by clouds."""

    peak_kw: float
    sunrise_h: float = 6.0
    sunset_h: float = 18.5
    cloud_pct: float = 30.0
    seed: int = 0
    step_s: float = 1.0
    utc_offset_s: int = CHINA_UTC_OFFSET_S

    def power_kw(self, t: float) -> float:
        k = math.floor(t / self.step_s)
        tc = k * self.step_s
        hour = ((tc + self.utc_offset_s) % 86400.0) / 3600.0
        if not self.sunrise_h < hour < self.sunset_h:
            return 0.0
        x = (hour - self.sunrise_h) / (self.sunset_h - self.sunrise_h)
        clear = self.peak_kw * math.sin(math.pi * x) ** 1.5
        cloud = self.cloud_pct / 100.0 * uniform(self.seed, int(tc // CLOUD_WINDOW_S))
        return clear * (1.0 - cloud) * (1.0 + 0.01 * signed(self.seed, k))


@dataclass(frozen=True, slots=True)
class NetFlow:
    """The power through a grid incomer: every load behind it minus on-site generation.

    Negative when PV generates more than the plant draws: the incomer then exports.
    """

    loads: tuple[PowerSource, ...]
    generators: tuple[PowerSource, ...] = ()

    def power_kw(self, t: float) -> float:
        return sum(s.power_kw(t) for s in self.loads) - sum(g.power_kw(t) for g in self.generators)
