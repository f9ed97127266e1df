"""The per-meter memory needed to assign quality codes (the codes themselves: `tanji.quality`).

`counter_reset_suspected`: a counter went down without wrapping at its rollover value (a
meter swap, a PLC restart, a cleared register). `stale`: the grid quantities of a meter repeat
bit for bit for `stale_after_s`; a live grid makes voltage and frequency jitter in their last
bits, so a frozen answer means a hung meter or a protocol converter serving its cache.
"""

from __future__ import annotations

from tanji.profile import Register

# Quantities that never hold still on an energised grid (see the module docstring).
JITTERING = frozenset({"voltage_l1_v", "voltage_l2_v", "voltage_l3_v", "frequency_hz"})


class CounterWatch:
    """Remembers the last raw value of each counter to tell a rollover from a reset."""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last: dict[str, float] = {}

    def check(self, reg: Register, raw: float) -> str:
        """`good`, or `counter_reset_suspected` when the counter went down without wrapping."""
        last = self._last.get(reg.name)
        self._last[reg.name] = raw
        if last is None or raw >= last:
            return "good"
        if reg.rollover is not None and raw + reg.rollover - last < reg.rollover / 2:
            return "good"  # wrapped past its rollover value: the counter kept counting
        return "counter_reset_suspected"


class StaleWatch:
    """Flags the grid quantities of a meter that have not changed a bit for `stale_after_s`."""

    __slots__ = ("stale_after_ms", "_words", "_since_ms")

    def __init__(self, stale_after_s: float) -> None:
        self.stale_after_ms = int(stale_after_s * 1000)
        self._words: tuple[int, ...] | None = None
        self._since_ms = 0

    def check(self, words: tuple[int, ...], ts_ms: int) -> bool:
        """True when `words` (the raw grid registers of this poll) are frozen."""
        if not words:
            return False
        if words != self._words:
            self._words, self._since_ms = words, ts_ms
            return False
        return ts_ms - self._since_ms >= self.stale_after_ms

    def reset(self) -> None:
        self._words = None
