"""A store as the engine's ``ReadingSource``: the system of record for forgotten readings.

An engine with a bounded raw tail asks here for the stored readings around a late one, and a
restarted engine refills its tails here. The answer must include every reading acknowledged
so far: while the InfluxDB adapter still holds acknowledged readings in its spill queue (the
database was down), the source says so (``SourceUnavailableError``) instead of answering
without them, and the engine keeps the late readings until it can be answered.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from accounting.errors import SourceUnavailableError
from accounting.store.base import ReadingStore


class StoreSource:
    """Stored readings of one site, for its engine."""

    def __init__(self, store: ReadingStore, site_id: str, *, wait_s: float = 0.0) -> None:
        self.store = store
        self.site_id = site_id
        self.wait_s = wait_s

    def channel_readings(self, meter_id: str, channels: Sequence[str], start_ms: int,
                         end_ms: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        if not self.store.flush(self.wait_s):
            raise SourceUnavailableError("acknowledged readings are still queued for the store")
        try:
            pos, ts, val = self.store.read_channel_arrays(
                self.site_id, [(meter_id, c) for c in channels], start_ms, end_ms)
        except (OSError, RuntimeError) as exc:  # connection refused, timeout, query error
            raise SourceUnavailableError(f"the store did not answer: {exc}") from exc
        out = {}
        for i, channel in enumerate(channels):
            lo, hi = np.searchsorted(pos, [i, i + 1])
            out[channel] = (ts[lo:hi], val[lo:hi])
        return out
