"""Per-gateway batch sequence numbers: where a gap means readings we have not (yet) received.

A gateway numbers its batches +1 each and keeps the number across restarts; replays keep
theirs. A jump is a gap: either the batches are still coming (a backlog replay fills it) or
they were lost upstream of the broker, which an operator must hear about. The tracker keeps
the missing numbers as intervals, so a long outage costs a few integers, not a set of
every seq.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass
class _Gateway:
    highest: int
    missing: list[list[int]] = field(default_factory=list)  # sorted, disjoint [lo, hi] inclusive

    @property
    def missing_count(self) -> int:
        return sum(hi - lo + 1 for lo, hi in self.missing)


class SequenceTracker:
    """`observe(site, gateway, seq)` per batch; `gaps()` = missing batch count per gateway."""

    def __init__(self) -> None:
        self._gateways: dict[tuple[str, str], _Gateway] = {}
        self.gap_events = 0

    def observe(self, site: str, gateway: str, seq: int) -> int:
        """Record a batch; returns how many batches this one revealed as missing (0 normally)."""
        g = self._gateways.get((site, gateway))
        if g is None:
            self._gateways[(site, gateway)] = _Gateway(seq)
            return 0
        if seq > g.highest + 1:
            g.missing.append([g.highest + 1, seq - 1])
            self.gap_events += 1
            opened = seq - 1 - g.highest
            log.warning("gateway %s/%s: batches %d..%d missing", site, gateway, g.highest + 1, seq - 1)
            g.highest = seq
            return opened
        if seq > g.highest:
            g.highest = seq
        elif g.missing:
            self._fill(g, seq)
        return 0

    @staticmethod
    def _fill(g: _Gateway, seq: int) -> None:
        for i, (lo, hi) in enumerate(g.missing):
            if lo <= seq <= hi:
                pieces = [[lo, seq - 1]] if seq > lo else []
                if seq < hi:
                    pieces.append([seq + 1, hi])
                g.missing[i:i + 1] = pieces
                return

    def gaps(self) -> dict[str, int]:
        """Missing batches per gateway id (gateways with none are listed with 0)."""
        return {gw: g.missing_count for (_, gw), g in self._gateways.items()}

    def state(self) -> dict[str, dict]:
        """A JSON-able snapshot, saved with the engine checkpoint so gaps survive a restart."""
        return {f"{site}/{gw}": {"highest": g.highest, "missing": g.missing}
                for (site, gw), g in self._gateways.items()}

    def restore(self, state: dict[str, dict]) -> None:
        for key, value in state.items():
            site, gw = key.split("/", 1)
            self._gateways[(site, gw)] = _Gateway(int(value["highest"]), [list(m) for m in value["missing"]])
