"""Per-gateway batch sequence numbers: where a gap means readings we have not (yet) received.

A gateway numbers its batches +1 each and keeps the number across restarts; replays keep
theirs. A jump is a gap: either the batches are still coming (a backlog replay fills it) or
they were lost upstream of the broker, which an operator must hear about. The tracker keeps
the missing numbers as intervals, so a long outage costs a few integers, not a set of
every seq.

Sanity: a jump of more than `max_jump` batches (a million: 11 days of one batch a second)
is not a gap anyone could replay. One such batch (`seq` = 2**62 from a broken or forged
gateway) would otherwise count 4.6e18 missing batches for good and hide every real gap
after it; a jump as far back (a gateway whose spool was replaced starts again at 0) would
make every later batch look like a replay. Either is counted as an anomaly and logged, and
leaves the tracker as it was; only when the next batch continues from it (`seq` + 1) has
the gateway really renumbered, and the tracker re-anchors there without a gap.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


MAX_JUMP = 1_000_000


@dataclass
class _Gateway:
    highest: int
    missing: list[list[int]] = field(default_factory=list)  # sorted, disjoint [lo, hi] inclusive
    candidate: int | None = None  # the seq of an implausible jump, until the next batch says more

    @property
    def missing_count(self) -> int:
        return sum(hi - lo + 1 for lo, hi in self.missing)


class SequenceTracker:
    """`observe(site, gateway, seq)` per batch; `gaps()` = missing batch count per gateway."""

    def __init__(self, max_jump: int = MAX_JUMP) -> None:
        self._gateways: dict[tuple[str, str], _Gateway] = {}
        self.gap_events = 0
        self.max_jump = max_jump
        self.anomalies: dict[str, int] = {}  # gateway → implausible jumps seen

    def observe(self, site: str, gateway: str, seq: int) -> int:
        """Record a batch; returns how many batches this one revealed as missing (0 normally)."""
        g = self._gateways.get((site, gateway))
        if g is None:
            self._gateways[(site, gateway)] = _Gateway(seq)
            return 0
        if abs(seq - g.highest) > self.max_jump:
            if g.candidate is not None and seq == g.candidate + 1:
                log.warning("gateway %s/%s renumbered its batches: %d follows %d; counting from there",
                            site, gateway, seq, g.highest)
                if seq < g.highest:
                    g.missing = []  # gaps of the old numbering can never be told apart from the new one
                g.highest, g.candidate = seq, None
                return 0
            g.candidate = seq
            self.anomalies[gateway] = self.anomalies.get(gateway, 0) + 1
            log.warning("gateway %s/%s: batch %d after %d is an implausible jump (more than %d); not counted "
                        "as a gap", site, gateway, seq, g.highest, self.max_jump)
            return 0
        g.candidate = None
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
