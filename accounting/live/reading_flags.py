"""Per-reading data-quality flags of one meter over a period (GET /api/v1/meters/{meter}/flags).

The engine keeps flags per hour (the OR of its readings' flags); which reading was a reset, a
glitch, a rebase or a gap is asked of the store's readings and the engine's state entering the
period (`Engine.reading_flags`). Only the flagged readings are listed, with the count of
readings looked at, so a month of a meter polled every second answers in a few lines.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from accounting.engine.engine import Engine
from accounting.engine.kernels_energy import FLAG_READ, HOUR_MS, flag_names
from accounting.store.base import ReadingStore
from accounting.topology import COUNTER_CHANNELS


def meter_flags(site_id: str, meter: str, engine: Engine, store: ReadingStore, lock: threading.RLock,
                start_ms: int, end_ms: int) -> dict[str, Any]:
    """Per counter channel of `meter`: the flagged readings in [start_ms, end_ms) with their
    flags' names, how many usable readings there were, and the flagged hours."""
    channels = [ch for m, ch in engine.channel_keys if m == meter and ch in COUNTER_CHANNELS]
    # The run starts from the state entering the hour of start_ms - 1, so a reading exactly at
    # start_ms (an hour boundary) is stepped too.
    base = start_ms - 1
    hour0 = base - base % HOUR_MS
    rows = list(store.read_readings(site_id, meter, hour0 + 1, end_ms)) if channels else []
    out = []
    for channel in channels:
        ts: list[int] = []
        val: list[float] = []
        for r in rows:  # what the engine was fed (accounting/ingest/engine_feed.py): good values
            v = r.values.get(channel)
            if v is not None and (r.value_quality.get(channel, "good") if r.value_quality else r.quality) == "good":
                ts.append(r.ts_ms)
                val.append(v)
        with lock:
            flags = engine.reading_flags(meter, channel, np.array(ts, np.int64), np.array(val), base)
            hours, hour_flags = engine.hourly_flags(meter, channel, start_ms - start_ms % HOUR_MS, end_ms)
        keep = [k for k in range(len(ts)) if ts[k] >= start_ms and flags[k]]
        out.append({
            "channel": channel,
            "readings": sum(1 for t in ts if t >= start_ms),
            "flagged": [{"ts_ms": ts[k], "value": val[k], "flags": flag_names(int(flags[k]))} for k in keep],
            "hours": [{"start_ms": int(h), "flags": flag_names(int(f))} for h, f in zip(hours, hour_flags, strict=True)
                      if int(f) & ~FLAG_READ],
        })
    return {"site_id": site_id, "meter": meter, "start_ms": start_ms, "end_ms": end_ms, "channels": out}
