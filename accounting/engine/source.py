"""Where an engine with a bounded raw tail finds the readings it no longer keeps.

The store is the system of record for raw readings. When a reading arrives older than its
channel's raw tail, the engine asks its ``ReadingSource`` for the channel's stored readings
around it and re-spreads the affected hours exactly (``accounting.engine.live``); a restart
refills the tails from it. ``accounting.store.source.StoreSource`` is the store's adapter.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np


class ReadingSource(Protocol):
    """Stored readings of one site, by meter and channel."""

    def channel_readings(self, meter_id: str, channels: Sequence[str], start_ms: int,
                         end_ms: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Readings of ``meter_id`` with ``start_ms <= ts < end_ms``: per channel name, sorted
        unique ``ts_ms`` (int64) and values (float64), good quality only (a value that must not
        move a counter is left out). Raises ``SourceUnavailableError`` when the store cannot
        answer with everything acknowledged so far."""
        ...
