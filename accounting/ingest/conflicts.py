"""One rule for a reading that arrives again: the first copy wins, a different one is a conflict.

A reading is identified by (site, meter, ts_ms) (docs/wire-format.md). A second copy is
normal (QoS 1 redelivery, a gateway's replay) and must agree with the first; one that
disagrees (a gateway restored from an old backup, a forged or buggy publisher) is a
*conflict*. Every store keeps the first value: SQLite would do so by itself (INSERT OR
IGNORE) but InfluxDB overwrites a point with the same series and time, so the rule cannot be
left to the stores. It is decided here, before the store write, the same way for both: the
conflicting copy is not written, it is counted (`IngestStats.conflicts`, per meter), logged
as an alarm, and kept in quarantine (reason `conflict`) with both values in its detail.

The dedup index holds no values, so the first copy is looked for, in order: among the rows
admitted in the last few cycles (not yet durable, so not yet in the store), then in the
store (`ReadingStore.find_readings`). A copy whose first cannot be found anywhere any more
(evicted while in flight) is counted as a plain duplicate. A store that cannot answer
(InfluxDB down) leaves the reading's fate to the store: it is passed on as new, and counted
under `conflict_checks_failed`.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from accounting.store.base import StoredReading

log = logging.getLogger(__name__)

#: Admitted cycles whose rows may not be durable yet (pipeline depth + the one being written + this one).
RECENT_CYCLES = 4

Lookup = Callable[[str, str, Sequence[int]], dict[int, StoredReading]]


def _values(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def same_reading(a_quality: str, a_values: dict[str, Any], a_vq: dict[str, str] | None,
                 b: StoredReading) -> bool:
    """Whether a copy carries what the stored/admitted reading `b` carries (stores drop nulls
    and keep integers as floats, so compare what both keep)."""
    return (a_quality == b.quality and _values(a_values) == _values(b.values)
            and (a_vq or None) == (b.value_quality or None))


class FirstCopies:
    """Finds the first copy of a reading: recent admitted rows, then the store."""

    def __init__(self, lookup: Lookup | None) -> None:
        self.lookup = lookup
        self._recent: deque[list[StoredReading]] = deque(maxlen=RECENT_CYCLES)
        self.checks_failed = 0

    def remember(self, rows: list[StoredReading]) -> None:
        """The rows of a cycle just admitted (called once per cycle)."""
        self._recent.append(rows)

    def find(self, site: str, wanted: dict[str, list[int]],
             current: list[StoredReading]) -> dict[tuple[str, int], StoredReading] | None:
        """(meter, ts_ms) → first copy, for `wanted` meter → timestamps; None if the store failed."""
        keys = {(meter, ts) for meter, tss in wanted.items() for ts in tss}
        found: dict[tuple[str, int], StoredReading] = {}
        for rows in (*self._recent, current):
            for r in rows:
                if r.site == site and (r.meter, r.ts_ms) in keys:
                    found.setdefault((r.meter, r.ts_ms), r)
        if self.lookup is None:
            return found
        for meter, tss in wanted.items():
            missing = [ts for ts in tss if (meter, ts) not in found]
            if not missing:
                continue
            try:
                stored = self.lookup(site, meter, missing)
            except Exception as exc:  # noqa: BLE001 - a store that cannot answer must not stop ingest
                self.checks_failed += len(missing)
                log.warning("cannot check %d late or repeated readings of %s/%s against the store (%s); "
                            "passing them to it as new", len(missing), site, meter, exc)
                return None
            for ts, r in stored.items():
                found.setdefault((meter, ts), r)
        return found
