"""Decode the responses of one poll into a wire-format reading: named values, units, quality.

Values leave the gateway in canonical units (tanji/quantities.py) with the site's CT/VT
ratios applied as each register's `apply_ratio` says, so every consumer reads the same
primary-side kWh and no consumer needs the profile. A profile's valid `range` is a device
fact and is checked on the scaled value before the ratio (what the meter itself measures).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from gateway.quality import JITTERING, CounterWatch, StaleWatch
from gateway.read_plan import ReadRequest
from tanji import dlt645
from tanji.codec import decode
from tanji.profile import Register
from tanji.quality import worst
from tanji.site import Meter
from tanji.wire import Reading

DEFAULT_STALE_AFTER_S = 120.0


class RegisterMap:
    """One meter's decoder; keeps the memory quality codes need (last counters, frozen values)."""

    def __init__(self, meter: Meter, plan: Sequence[ReadRequest], stale_after_s: float = DEFAULT_STALE_AFTER_S) -> None:
        self.meter = meter
        self.plan = tuple(plan)
        # Per request, per register: (register, offset in the response, ratio).
        self._layout = tuple(
            tuple((reg, reg.address - req.address, reg.ratio(meter.ct_ratio, meter.vt_ratio))
                  for reg in req.registers)
            for req in self.plan)
        self._counters = CounterWatch()
        self._stale = StaleWatch(stale_after_s)

    def decode(self, responses: Sequence[Sequence[int]], ts_ms: int) -> Reading:
        """Turn the words of each planned request (in plan order) into one reading."""
        values: dict[str, float | None] = {}
        flags: dict[str, str] = {}
        grid_words: list[int] = []
        for layout, words in zip(self._layout, responses, strict=True):
            for reg, offset, ratio in layout:
                raw_words = words[offset:offset + reg.words]
                raw = decode(raw_words, reg.data_type, reg.order)
                if reg.name in JITTERING:
                    grid_words.extend(raw_words)
                if not math.isfinite(raw):
                    values[reg.name] = None
                    flags[reg.name] = "out_of_range"
                    continue
                scaled = raw * reg.scale
                value = scaled * ratio if ratio != 1.0 else scaled
                # A float32 holds ~7.2 significant digits; 9 keep every bit of it and spare the
                # spool and the wire the 17-digit noise of its float64 expansion (231.52345275878906).
                values[reg.name] = float(f"{value:.9g}") if reg.data_type == "float32" else value
                if reg.valid_range is not None and not reg.valid_range[0] <= scaled <= reg.valid_range[1]:
                    flags[reg.name] = "out_of_range"
                elif reg.is_counter:
                    code = self._counters.check(reg, raw)
                    if code != "good":
                        flags[reg.name] = code
        if self._stale.check(tuple(grid_words), ts_ms):
            for name in JITTERING.intersection(values):
                flags.setdefault(name, "stale")
        return Reading(self.meter.id, ts_ms, worst(set(flags.values())), values, flags or None)

    def failed(self, ts_ms: int) -> Reading:
        """The reading of a failed poll: no values, so accounting still sees the meter's state."""
        self._stale.reset()
        return Reading(self.meter.id, ts_ms, "comm_error", {})


class Dlt645Map:
    """One DL/T 645 meter's decoder: BCD values per data identifier → one reading.

    The same rules as `RegisterMap`: canonical units via `scale`, CT/VT ratios by `apply_ratio`,
    the valid range checked before the ratio, counters watched for resets (a counter wraps at
    the format's rollover, 1,000,000 kWh for XXXXXX.XX), grid quantities watched for freezing.
    A value that is not BCD (a bus glitch, a meter in trouble) is null and `out_of_range`.
    """

    def __init__(self, meter: Meter, stale_after_s: float = DEFAULT_STALE_AFTER_S) -> None:
        self.meter = meter
        self.items: tuple[tuple[Register, float], ...] = tuple(
            (reg, reg.ratio(meter.ct_ratio, meter.vt_ratio)) for reg in meter.profile.registers)
        self._counters = CounterWatch()
        self._stale = StaleWatch(stale_after_s)

    def decode(self, answers: Sequence[bytes], ts_ms: int) -> Reading:
        """`answers`: the value bytes of each data identifier, in profile order."""
        values: dict[str, float | None] = {}
        flags: dict[str, str] = {}
        grid: list[int] = []
        for (reg, ratio), raw_bytes in zip(self.items, answers, strict=True):
            try:
                raw = dlt645.decode_value(raw_bytes, reg.data_type)
            except dlt645.FrameError:
                values[reg.name] = None
                flags[reg.name] = "out_of_range"
                continue
            if reg.name in JITTERING:
                grid.extend(raw_bytes)
            scaled = raw * reg.scale
            values[reg.name] = round(scaled * ratio, 9) if ratio != 1.0 else scaled
            if reg.valid_range is not None and not reg.valid_range[0] <= scaled <= reg.valid_range[1]:
                flags[reg.name] = "out_of_range"
            elif reg.is_counter:
                code = self._counters.check(reg, raw)
                if code != "good":
                    flags[reg.name] = code
        if self._stale.check(tuple(grid), ts_ms):
            for name in JITTERING.intersection(values):
                flags.setdefault(name, "stale")
        return Reading(self.meter.id, ts_ms, worst(set(flags.values())), values, flags or None)

    def failed(self, ts_ms: int) -> Reading:
        self._stale.reset()
        return Reading(self.meter.id, ts_ms, "comm_error", {})
