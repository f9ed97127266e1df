"""The plant watch's pass over readings in plain Python, one reading at a time: the reference
the numba pass (`accounting.live.kernels_watch`) is checked against.

This is the watch as it was before the pass became a kernel (one Python loop per reading and
channel); it reports through the same `PlantWatch` methods, so two watches fed the same
readings must leave the same operator's log and the same gap state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from accounting.engine.kernels_energy import HOUR_MS
from accounting.live.watch import PlantWatch
from accounting.store.base import StoredReading
from accounting.topology import Meter
from tanji.replacements import MeterReplacement


@dataclass
class Seen:
    meter: Meter
    channels: tuple[str, ...]
    steps: tuple[float, ...]
    gap_ms: float | None = None
    ts_ms: int | None = None
    counters: list[float | None] = field(default_factory=list)
    running: float | None = None
    gap_since_ms: int | None = None
    gap_count: int = 0
    gap_s: float = 0.0


class ReferenceWatch(PlantWatch):
    """`PlantWatch` whose `observe` is the per-reading Python loop."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.seen: dict[str, dict[str, Seen]] = {}
        for site_id, w in self._sites.items():
            for m, meter in enumerate(w.meters):
                lo, hi = int(w.ch_off[m]), int(w.ch_off[m + 1])
                self.seen.setdefault(site_id, {})[meter.meter_id] = Seen(
                    meter, tuple(w.ch_names[lo:hi]), tuple(w.step[lo:hi].tolist()), counters=[None] * (hi - lo))

    def seed(self, site_id: str, latest: Mapping[str, StoredReading]) -> None:
        for meter_id, r in latest.items():
            seen = self.seen.get(site_id, {}).get(meter_id)
            if seen is not None:
                seen.ts_ms = r.ts_ms
                seen.counters = [r.values.get(c) for c in seen.channels]
                seen.running = r.values.get("line_running")

    def observe(self, by_site: Mapping[str, Sequence[StoredReading]]) -> None:
        for site_id, rows in by_site.items():
            by_meter = self.seen.get(site_id)
            if by_meter is None:
                continue
            for r in rows:
                seen = by_meter.get(r.meter)
                if seen is None or r.quality != "good":
                    continue
                last = seen.ts_ms
                if last is not None and r.ts_ms <= last:
                    continue
                values = r.values
                running = values.get("line_running")
                if running is not None:
                    if seen.running is not None and (running > 0) != (seen.running > 0):
                        self._line_edge(site_id, seen.meter, running > 0, r.ts_ms)
                    seen.running = running
                replaced = replaced_between(seen.meter, last, r.ts_ms)
                if replaced is not None:
                    self._replaced(site_id, seen.meter, replaced, r.ts_ms)
                for i, channel in enumerate(seen.channels):
                    value = values.get(channel)
                    if value is None:
                        continue
                    before = seen.counters[i]
                    if before is not None and last is not None and (replaced is None or channel not in replaced.old_final):
                        if value < before:
                            self._step_back(site_id, seen.meter, channel, before, float(value), r.ts_ms)
                        elif seen.meter.max_power_kw > 0 and (value - before - seen.steps[i]) * HOUR_MS > \
                                seen.meter.max_power_kw * (r.ts_ms - last):
                            self._jump(site_id, seen.meter, channel, before, float(value), r.ts_ms - last, r.ts_ms)
                    seen.counters[i] = value
                if last is not None:
                    if seen.gap_ms is None:
                        try:
                            seen.gap_ms = self.engine(site_id).gap_polls * seen.meter.poll_period_s * 1000
                        except KeyError:
                            seen.ts_ms = r.ts_ms
                            continue
                    if r.ts_ms - last > seen.gap_ms:
                        if seen.gap_since_ms is None:
                            seen.gap_since_ms = last
                        seen.gap_count += 1
                        seen.gap_s += (r.ts_ms - last) / 1000
                seen.ts_ms = r.ts_ms


def replaced_between(meter: Meter, last: int | None, ts_ms: int) -> MeterReplacement | None:
    """The meter's last recorded replacement in (last, ts_ms], if any."""
    if not meter.replacements or last is None:
        return None
    found = None
    for r in meter.replacements:
        if last < r.at_ms <= ts_ms:
            found = r
    return found
