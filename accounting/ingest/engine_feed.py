"""Stored readings → the engine's columnar `ingest(channels, ts_ms, value, quality)`.

The engine wants cumulative counter channels as dense arrays; a reading carries a dict of
quantities. This adapter keeps, per meter, the (channel name, engine index) pairs the engine
knows, so each reading costs a few dict lookups and nothing else is converted. A value is
passed with quality 0 (usable) only when its own quality is good: a `stale` or
`comm_error` value must not move a counter.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from accounting.engine.engine import Engine
from accounting.store.base import StoredReading


class EngineFeed:
    """Feeds one site's engine; `feed` returns how many channel values went in."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        channels: dict[str, list[tuple[str, int]]] = {}
        for index, (meter, channel) in enumerate(engine.channel_keys):
            channels.setdefault(meter, []).append((channel, index))
        self._channels = channels

    def feed(self, rows: Iterable[StoredReading]) -> int:
        idx: list[int] = []
        ts: list[int] = []
        val: list[float] = []
        bad: list[int] = []
        channels = self._channels
        for _, _, meter, ts_ms, quality, values, vq in rows:
            pairs = channels.get(meter)
            if not pairs:
                continue
            for channel, index in pairs:
                v = values.get(channel)
                if v is None:
                    continue
                idx.append(index)
                ts.append(ts_ms)
                val.append(v)
                bad.append(0 if (vq.get(channel, "good") if vq else quality) == "good" else 1)
        if idx:
            self.engine.ingest(np.array(idx, dtype=np.int64), np.array(ts, dtype=np.int64),
                               np.array(val, dtype=np.float64), np.array(bad, dtype=np.int8))
        return len(idx)
