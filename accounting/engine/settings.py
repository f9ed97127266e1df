"""How an engine computes, apart from its topology, dataset and instruments: one object.

Every way of making an engine (new, recomputed, restored, with other instruments) takes the
same ``EngineSettings``, so a setting is added in one place and travels everywhere, including
into checkpoints (whose fingerprint names the ones that change results).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from accounting.errors import TopologyError
from accounting.topology import MATCHING_MODES, SiteTopology

#: The raw tail a service engine keeps per channel (seconds of readings at the meter's poll
#: period): late readings within it are placed from memory, older ones from the store.
DEFAULT_TAIL_S = 3600.0
DELIVERABILITY = ("mainland", "regional")


@dataclass(frozen=True)
class EngineSettings:
    """``matching_mode``: ``annual``/``monthly``/``hourly``, None for the topology's own.
    ``grace_period_s``: an hour closes once a reading this long after its end has been seen;
    until then its values are provisional. ``deliverability``: ``mainland``, or ``regional``
    (instruments must come from the site's regional grid). ``gap_polls``: a gap longer than this
    many poll periods makes a reading's energy ``gap_spread`` (estimated). ``tail_s``: the raw
    tail kept per channel, in seconds of readings (``None``: keep every reading, for an engine
    with no store behind it; ``0``: none, for an engine fed in time order once)."""

    matching_mode: str | None = None
    grace_period_s: float = 900.0
    deliverability: str = "mainland"
    gap_polls: float = 3.0
    tail_s: float | None = None

    def __post_init__(self) -> None:
        if self.matching_mode is not None and self.matching_mode not in MATCHING_MODES:
            raise TopologyError(f"matching_mode must be one of {MATCHING_MODES}")
        if self.deliverability not in DELIVERABILITY:
            raise TopologyError(f"deliverability must be one of {DELIVERABILITY}")
        if self.tail_s is not None and self.tail_s < 0:
            raise TopologyError("tail_s must be >= 0 (or None to keep every reading)")

    def mode_for(self, topology: SiteTopology) -> str:
        return self.matching_mode or topology.matching_mode

    def with_(self, **changes: Any) -> EngineSettings:
        """A copy with some fields changed (unknown names raise TypeError)."""
        return replace(self, **changes) if changes else self

    def results_key(self, topology: SiteTopology) -> dict[str, Any]:
        """The settings that change hourly values or footprints (not the tail, which only
        changes where forgotten readings are looked up)."""
        return {"matching_mode": self.mode_for(topology), "deliverability": self.deliverability,
                "gap_polls": self.gap_polls}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EngineSettings:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})
