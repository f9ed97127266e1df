"""Explicit recomputation of a period from stored readings into a new, versioned result.

A new factor version, a late correction or a newly held instrument changes the live numbers
only from the moment it is applied; history changes only by this explicit act (ACCOUNTING.md
§3). `Recomputations.run` reads the site's stored readings of the period, runs
`Engine.recompute` with the chosen dataset version and the site's *current* instruments
(reused, never claimed again), and stores the result under the site's next result version. The
live engine and its footprints are untouched.

The readings stream from the store window by window (``ReadingStore.iter_channel_arrays``)
into a fresh engine that keeps no raw readings, so a year costs the memory of one window plus
the year's hourly matrices. Nothing of it holds the live engines' lock: the recomputation reads
only the live engine's topology, settings and instruments, which never change under it, so
ingest and the dashboard go on meanwhile.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from accounting.engine.engine import Engine
from accounting.errors import AccountingError
from accounting.factors.catalogue import FactorCatalogue
from accounting.factors.dataset import FactorDataset
from accounting.store.base import ReadingStore, StoredReading
from accounting.store.ledger import LedgerStore
from tanji.methods import dataset_ref

#: Readings this long before the period are read too, so its first hour has a counter baseline.
LOOKBACK_MS = 86_400_000
#: And this long after it, so its last reading (at or just after the end) is included.
LOOKAHEAD_MS = 3_600_000


class UnknownResultError(AccountingError):
    """No stored result with this site and version."""


def resolve_dataset(catalogue: FactorCatalogue, live: FactorDataset, spec: str | None) -> FactorDataset:
    """`None` → the live dataset; ``version`` → that version of the live dataset's id;
    ``id@version`` → that dataset. Unknown ones raise FactorDatasetError (422)."""
    if not spec:
        return live
    if "@" not in spec:
        spec = dataset_ref(live.dataset_id, spec)
    # the site's view (province first, its uncovered-energy rule) carries over to the new version
    return catalogue.resolve(spec).for_site(province=live.site_province,
                                            uncovered_rule=live.uncovered_rule)


def readings_arrays(engine: Engine, rows: Sequence[StoredReading]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stored readings as the engine's ``(channel_index, ts_ms, value)``; values not of good
    quality are left out (they must not move a counter)."""
    channels: dict[str, list[tuple[str, int]]] = {}
    for index, (meter, channel) in enumerate(engine.channel_keys):
        channels.setdefault(meter, []).append((channel, index))
    idx: list[int] = []
    ts: list[int] = []
    val: list[float] = []
    for r in rows:
        for channel, index in channels.get(r.meter, ()):
            v = r.values.get(channel)
            quality = r.value_quality.get(channel, "good") if r.value_quality else r.quality
            if v is None or quality != "good":
                continue
            idx.append(index)
            ts.append(r.ts_ms)
            val.append(float(v))
    return np.array(idx, dtype=np.int64), np.array(ts, dtype=np.int64), np.array(val, dtype=np.float64)


class Recomputations:
    """Runs recomputations and keeps their results in the `LedgerStore`."""

    def __init__(self, ledger: LedgerStore, catalogue: FactorCatalogue) -> None:
        self.ledger = ledger
        self.catalogue = catalogue

    def run(self, site_id: str, engine: Engine, store: ReadingStore, *, start_ms: int,
            end_ms: int, dataset_spec: str | None = None) -> dict[str, Any]:
        """Recompute ``[start_ms, end_ms)`` of ``engine``'s site (the live engine: only its
        topology, settings and instruments are read) into the next stored result."""
        if end_ms <= start_ms:
            raise AccountingError(f"end ({end_ms}) must be after start ({start_ms})")
        dataset = resolve_dataset(self.catalogue, engine.dataset, dataset_spec)
        counted = [0]

        def chunks() -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
            for chunk in store.iter_channel_arrays(site_id, engine.channel_keys,
                                                   max(0, start_ms - LOOKBACK_MS), end_ms + LOOKAHEAD_MS):
                counted[0] += len(chunk[0])
                yield chunk

        result = engine.recompute(chunks(), dataset, start_ms=start_ms, end_ms=end_ms,
                                  retain_readings=False)
        document = {
            "site_id": site_id, "result_id": result.result_id,
            "dataset_id": result.dataset_id, "dataset_version": result.dataset_version,
            "live_dataset": engine.dataset.ref,
            "matching_mode": result.matching_mode, "start_ms": start_ms, "end_ms": end_ms,
            "computed_ms": int(time.time() * 1000), "readings": counted[0],
            "footprints": [{"site_id": site_id, **fp.to_dict()} for fp in result.footprints],
            "instrument_usage": result.instrument_usage,
        }
        version = self.ledger.add_result(document, min_version=result.result_version)
        return {**document, "result_version": version, "revision": version}

    def results(self, site_id: str | None = None) -> list[dict[str, Any]]:
        return self.ledger.results(site_id)

    def result(self, site_id: str, result_version: int) -> dict[str, Any]:
        found = self.ledger.result(site_id, result_version)
        if found is None:
            raise UnknownResultError(f"no recomputed result {result_version} for site {site_id!r}")
        return found
