"""Readings stamped earlier than they were taken: a gateway clock that went backwards.

A gateway forms its batches from its spool in the order it polled, and numbers them +1 each
(`seq`, kept across restarts; a replay keeps its number). So for one meter of one gateway, a
reading in a later batch was taken after every reading of that meter in earlier batches. When
such a reading carries an *older* timestamp than one of those, the gateway's clock went
backwards between the two polls (an operator setting it by hand, NTP stepping it, a failing
RTC). Stored as it is, it lands in the past: a clock stepped back one hour for 60 s put 420
readings an hour early, where their counter values made backwards steps the engine booked as
resets (issue #14 item 5: 30,415 units for 49, 30 % of the incomer's energy missing).

Such a reading is quarantined as `clock_backwards` (counted, kept with its reason) instead of
stored. Totals stay right because the readings are cumulative registers: the next reading
stamped in order carries everything the meter counted meanwhile, so dropping the misstamped
ones loses only how that energy is spread over the minutes, never the energy. Gateways stamp
readings with a clock bridged by the monotonic one (gateway/clock.py), so this is the second
line: for gateways without it, and for the one step a gateway takes when its wall clock stays
off long enough to count as a correction.

A backlog replayed after an outage has earlier timestamps *and* earlier `seq`: it is not
flagged. A gateway whose numbering starts again (a replaced spool) is not either (its `seq`
is lower). The order is kept in memory per (site, gateway, meter): after an accounting
restart it is learnt again from the first batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol


class _Reading(Protocol):
    meter: str
    ts_ms: int


class MeterOrder:
    """Per (site, gateway, meter): the newest timestamp admitted and the batch it came in."""

    def __init__(self) -> None:
        self._newest: dict[tuple[str, str, str], tuple[int, int]] = {}  # → (ts_ms, seq)

    def backwards(self, site: str, gateway: str, seq: int, readings: Sequence[_Reading]) -> list[int]:
        """Indexes of the readings of batch `seq` stamped before a reading of the same meter
        from an earlier batch (does not learn; see `learn`)."""
        newest = self._newest
        out = []
        for i, r in enumerate(readings):
            known = newest.get((site, gateway, r.meter))
            if known is not None and seq > known[1] and r.ts_ms < known[0]:
                out.append(i)
        return out

    def learn(self, site: str, gateway: str, seq: int, readings: Iterable[_Reading]) -> None:
        """Remember the admitted readings of batch `seq`."""
        newest = self._newest
        for r in readings:
            key = (site, gateway, r.meter)
            known = newest.get(key)
            if known is None or r.ts_ms > known[0] or (r.ts_ms == known[0] and seq > known[1]):
                newest[key] = (r.ts_ms, seq)
