"""The live engines of the service's sites, behind one lock, and the queries answered from them.

Ingest feeds them on the engine thread while the API asks from its worker threads; one
re-entrant lock serialises the two. Each site's engine has its `EngineFeed` (stored readings →
the engine's columns). `changes(site)` counts what moved a site's footprints (readings fed,
instruments attached), so announcing footprints costs nothing while nothing happened.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from accounting.engine.checkpoint import Snapshot
from accounting.engine.engine import Engine
from accounting.ingest.engine_feed import EngineFeed
from accounting.ingest.reading_columns import ReadingColumns
from accounting.live.series import hourly_series
from accounting.store.base import StoredReading
from tanji.site import Site


class LiveEngines:
    """site id → Engine (and its feed); every access holds `lock`."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._engines: dict[str, Engine] = {}
        self._feeds: dict[str, EngineFeed] = {}
        self._changes: dict[str, int] = {}

    def install(self, site_id: str, engine: Engine, replay: Iterable[StoredReading] = ()) -> None:
        """Make `engine` the site's live engine, fed `replay` first (a restart's stored readings)."""
        feed = EngineFeed(engine)
        with self.lock:
            self._engines[site_id] = engine
            self._feeds[site_id] = feed
            feed.feed(replay)
            self._changes[site_id] = self._changes.get(site_id, 0) + 1

    def feed(self, by_site: dict[str, list[StoredReading]]) -> None:
        """Feed each site's new stored readings to its engine."""
        self.feed_columns({site_id: self.columns(site_id, rows) for site_id, rows in by_site.items()})

    def columns(self, site_id: str, rows: list[StoredReading]) -> ReadingColumns:
        """A site's readings as the columns its feed (and the plant watch) take."""
        return self._feeds[site_id].layout.columns(rows)

    def feed_columns(self, by_site: dict[str, ReadingColumns]) -> None:
        """Feed each site's new readings, already columns, to its engine."""
        with self.lock:
            for site_id, cols in by_site.items():
                self._feeds[site_id].feed_columns(cols)
                self._changes[site_id] += 1

    def changes(self, site_id: str) -> int:
        """A number that grows whenever the site's footprints may have moved."""
        return self._changes.get(site_id, 0)

    def __contains__(self, site_id: object) -> bool:
        return site_id in self._engines

    def engine(self, site_id: str) -> Engine:
        return self._engines[site_id]

    def site_ids(self) -> list[str]:
        return sorted(self._engines)

    def snapshot(self, site_id: str) -> tuple[Snapshot, Engine]:
        """What the site's engine changed since its last snapshot (a copy, taken between feeds:
        the lock is held for a memory copy of a few hour blocks), and the engine."""
        with self.lock:
            engine = self._engines[site_id]
            return engine.snapshot(), engine

    def footprints(self, site_ids: Iterable[str], *, start_ms: int, end_ms: int,
                   product_id: str | None = None, batch_id: str | None = None) -> list[dict[str, Any]]:
        """Engine `ProductFootprint.to_dict()`s over [start_ms, end_ms), optionally one product or batch."""
        if batch_id is not None:
            try:
                float(batch_id)  # a PLC's batch register holds a number; no other batch can be found
            except ValueError:
                return []
        out = []
        with self.lock:
            for sid in site_ids:
                engine = self._engines[sid]
                fps = engine.footprints(start_ms, end_ms) if batch_id is None else \
                    engine.footprints(start_ms, end_ms, batch_id=batch_id)
                for fp in fps:
                    d = fp.to_dict()
                    if product_id is not None and d.get("product_id") != product_id:
                        continue
                    out.append(d)
        return out

    def batch_runs(self, site_id: str) -> list[dict[str, Any]]:
        """The site's production batches as its PLCs showed them (`Engine.batch_runs`)."""
        with self.lock:
            return self._engines[site_id].batch_runs() if site_id in self._engines else []

    def hourly_series(self, site: Site, start_ms: int, end_ms: int) -> list[dict[str, Any]]:
        with self.lock:
            return hourly_series(site, self._engines[site.id], start_ms, end_ms)

    def datasets_in_use(self) -> dict[tuple[str, str], list[str]]:
        """(dataset id, version) → the sites whose live engine uses it."""
        used: dict[tuple[str, str], list[str]] = {}
        with self.lock:
            for sid in sorted(self._engines):
                ds = self._engines[sid].dataset
                used.setdefault((ds.dataset_id, ds.version), []).append(sid)
        return used
