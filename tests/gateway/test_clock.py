"""gateway/clock.py: readings keep true time over wall-clock steps (issue #14 item 5).

The wall and monotonic clocks are injected, so the steps are exact and no test waits.
"""

from __future__ import annotations

from gateway.clock import ReadingClock

S = 1_000_000_000  # ns per second
HOUR = 3600 * S
T0 = 1_767_225_600 * S  # 2026-01-01T00:00:00Z


class Clocks:
    def __init__(self) -> None:
        self.mono = 50 * S
        self.offset = 0  # wall minus true time

    def advance(self, seconds: float) -> None:
        self.mono += int(seconds * S)

    def wall(self) -> int:
        return T0 + self.mono + self.offset

    def true_ms(self) -> int:
        return (T0 + self.mono) // 1_000_000


def _clock(c: Clocks, **kw) -> ReadingClock:
    return ReadingClock(wall_ns=c.wall, mono_ns=lambda: c.mono, **kw)


def test_a_wall_clock_stepped_back_an_hour_for_60_s_does_not_move_the_readings():
    c = Clocks()
    clock = _clock(c)
    stamps = []
    for second in range(300):
        if second == 100:
            c.offset = -HOUR  # someone sets the clock an hour back ...
        if second == 160:
            c.offset = 0  # ... and NTP puts it right a minute later
        stamps.append((clock.now_ms(), c.true_ms()))
        c.advance(1)
    assert all(got == true for got, true in stamps)
    assert clock.steps == 1 and clock.resyncs == 0 and clock.offset_ms == 0
    assert [b - a for (a, _), (b, _) in zip(stamps, stamps[1:], strict=False)] == [1000] * 299  # strictly monotonic


def test_forward_leaps_are_bridged_too_and_reported_while_they_last():
    c = Clocks()
    clock = _clock(c)
    clock.now_ms()
    c.advance(1)
    c.offset = 10 * 60 * S  # ten minutes ahead: accounting would refuse the readings as `timestamp`
    assert clock.now_ms() == c.true_ms()
    assert clock.health() == {"clock_steps": 1, "clock_resyncs": 0, "clock_offset_ms": 600_000}


def test_drift_and_small_corrections_are_followed():
    c = Clocks()
    clock = _clock(c)
    for _ in range(100):
        c.advance(1)
        c.offset += 15_000_000  # NTP slewing 15 ms per second
        assert clock.now_ms() == c.wall() // 1_000_000
    assert clock.steps == 0


def test_a_step_that_persists_is_a_correction_and_is_followed_after_settle_s():
    c = Clocks()
    clock = _clock(c, settle_s=300)
    clock.now_ms()
    c.offset = 2 * HOUR  # a box that booted with a stale clock gets NTP two hours later
    for _ in range(300):  # seen first one second in, so bridged for 300 s from there
        c.advance(1)
        assert clock.now_ms() == c.true_ms()
    c.advance(1)
    assert clock.now_ms() == c.wall() // 1_000_000
    assert clock.resyncs == 1
    c.advance(1)
    assert clock.now_ms() == c.wall() // 1_000_000 and clock.offset_ms == 0
