"""What the simulated plant really produced, to compare the pipeline's output against.

Devices report every increment of a cumulative quantity (kWh imported, exported, generated;
units made, rejected) with the plant time it happened, while they integrate. The truth is
physical: a counter reset, a rollover or a garbage reading changes what a meter *shows*,
never what the plant consumed, so the pipeline is right exactly when it matches this.
Hours are UTC hour buckets of plant time (epoch seconds // 3600 * 3600), the buckets
ACCOUNTING.md spreads energy into; with time_scale 1 plant time is wall-clock time.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class TruthEvent:
    """A fault or event that changed what a device shows (for test diagnostics and audits)."""

    t: float
    meter: str
    kind: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TruthSnapshot:
    """The truth up to `at_s` (plant time): totals and hour buckets per meter and quantity."""

    at_s: float
    totals: dict[str, dict[str, float]]
    hourly: dict[str, dict[str, dict[int, float]]]
    events: tuple[TruthEvent, ...]

    def total(self, meter: str, quantity: str) -> float:
        """Everything `meter` counted of `quantity` since the plant started (0 if nothing)."""
        return self.totals.get(meter, {}).get(quantity, 0.0)

    def hour(self, meter: str, quantity: str, hour_start_s: int) -> float:
        return self.hourly.get(meter, {}).get(quantity, {}).get(hour_start_s, 0.0)

    def to_json(self) -> dict[str, Any]:
        return {
            "at_s": self.at_s,
            "totals": self.totals,
            "hourly": {m: {q: {str(h): v for h, v in sorted(b.items())} for q, b in qs.items()}
                       for m, qs in self.hourly.items()},
            "events": [{"t": e.t, "meter": e.meter, "kind": e.kind, "params": e.params} for e in self.events],
        }

    def write(self, path: str | Path) -> None:
        """Write the snapshot as JSON, atomically (a reader never sees half a file)."""
        path = Path(path)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=1, sort_keys=True))
        tmp.replace(path)


class GroundTruth:
    """The running record devices add to; `snapshot()` copies it for the caller."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._totals: dict[str, dict[str, float]] = {}
        self._hourly: dict[str, dict[str, dict[int, float]]] = {}
        self._events: list[TruthEvent] = []

    def add(self, meter: str, quantity: str, t: float, amount: float) -> None:
        """Record that `meter` counted `amount` of `quantity` at plant time `t`."""
        hour = int(t // 3600) * 3600
        with self._lock:
            totals = self._totals.setdefault(meter, {})
            totals[quantity] = totals.get(quantity, 0.0) + amount
            buckets = self._hourly.setdefault(meter, {}).setdefault(quantity, {})
            buckets[hour] = buckets.get(hour, 0.0) + amount

    def event(self, t: float, meter: str, kind: str, **params: Any) -> None:
        with self._lock:
            self._events.append(TruthEvent(t, meter, kind, params))

    def snapshot(self, at_s: float) -> TruthSnapshot:
        with self._lock:
            return TruthSnapshot(
                at_s=at_s,
                totals={m: dict(q) for m, q in self._totals.items()},
                hourly={m: {q: dict(b) for q, b in qs.items()} for m, qs in self._hourly.items()},
                events=tuple(self._events),
            )
