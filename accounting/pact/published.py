"""Published PACT footprints: kept durably, never changed except for their status.

PACT v3: "After creation of a ProductFootprint this footprint MUST NOT be changed, EXCEPT for
changing its status property to Deprecated". Each footprint is stored as the exact JSON text
published (with status Active); its current status lives in its own column and is the only
thing ever updated, so the document served after a restart is byte for byte the one served
before. A revision is a new row whose `precedingPfIds` name the older ones.

One SQLite file (`pact-published.sqlite` in the state directory), written with
`synchronous=FULL`: a footprint a partner may already hold must not vanish in a crash.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from accounting.store.state_db import open_state_db

_SCHEMA = """CREATE TABLE IF NOT EXISTS footprints (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    site_id TEXT NOT NULL, product_id TEXT NOT NULL,
    period_start_ms INTEGER NOT NULL, period_end_ms INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('Active', 'Deprecated')),
    document TEXT NOT NULL,
    figures TEXT NOT NULL,
    live_revision INTEGER NOT NULL,
    dataset TEXT,
    superseded_by TEXT)"""


@dataclass(frozen=True)
class Published:
    """One stored footprint: its row and its document as served (with the current status)."""

    seq: int
    id: str
    site_id: str
    product_id: str
    period_start_ms: int
    period_end_ms: int
    created_ms: int
    status: str
    document: dict[str, Any]
    figures: str
    live_revision: int
    dataset: str | None

    @property
    def preceding(self) -> list[str]:
        return list(self.document.get("precedingPfIds", []))


class PublishedStore:
    """Durable published footprints; `path=None` keeps them in memory (tests, no state dir)."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = str(path) if path else ":memory:"
        self._lock = threading.Lock()
        self._db = open_state_db(path)
        self._db.execute(_SCHEMA)
        # A shipment line's footprint (accounting.shipments) names its shipment; months do not.
        if "shipment_id" not in {r[1] for r in self._db.execute("PRAGMA table_info(footprints)")}:
            self._db.execute("ALTER TABLE footprints ADD COLUMN shipment_id TEXT")
        self._db.execute("CREATE INDEX IF NOT EXISTS footprints_period ON footprints "
                         "(site_id, product_id, period_start_ms, seq)")
        self._parsed: dict[str, dict[str, Any]] = {}  # id -> document as published (immutable)

    def _row(self, r: tuple) -> Published:
        seq, pf_id, site, product, start, end, created, status, text, figures, rev, dataset = r[:12]
        doc = self._parsed.get(pf_id)
        if doc is None:
            doc = self._parsed[pf_id] = json.loads(text)
        return Published(seq, pf_id, site, product, start, end, created, status, {**doc, "status": status},
                         figures, rev, dataset)

    def publish(self, document: dict[str, Any], *, site_id: str, product_id: str, period: tuple[int, int],
                created_ms: int, figures: str, live_revision: int, dataset: str | None,
                supersedes: str | None = None, shipment_id: str | None = None) -> Published:
        """Store a new footprint (Active); the one it supersedes becomes Deprecated, atomically."""
        text = json.dumps(document, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if supersedes is not None:
                    self._db.execute("UPDATE footprints SET status = 'Deprecated', superseded_by = ? "
                                     "WHERE id = ?", (document["id"], supersedes))
                self._db.execute(
                    "INSERT INTO footprints (id, site_id, product_id, period_start_ms, period_end_ms, "
                    "created_ms, status, document, figures, live_revision, dataset, shipment_id) "
                    "VALUES (?, ?, ?, ?, ?, ?, 'Active', ?, ?, ?, ?, ?)",
                    (document["id"], site_id, product_id, period[0], period[1], created_ms, text, figures,
                     live_revision, dataset, shipment_id))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        found = self.get(document["id"])
        assert found is not None
        return found

    def deprecate(self, pf_id: str) -> None:
        """Mark a footprint Deprecated with no successor (its period no longer has one)."""
        with self._lock:
            self._db.execute("UPDATE footprints SET status = 'Deprecated' WHERE id = ?", (pf_id,))

    def note_revision(self, pf_id: str, live_revision: int) -> None:
        """Remember that the period's live revision moved without changing the figures (the
        footprint itself is not touched)."""
        with self._lock:
            self._db.execute("UPDATE footprints SET live_revision = ? WHERE id = ?", (live_revision, pf_id))

    def get(self, pf_id: str) -> Published | None:
        with self._lock:
            r = self._db.execute("SELECT * FROM footprints WHERE id = ?", (pf_id,)).fetchone()
            return self._row(r) if r else None

    def latest(self, site_id: str, product_id: str, period_start_ms: int) -> Published | None:
        """The newest footprint of a product's period (Active unless withdrawn); shipments' aside."""
        with self._lock:
            r = self._db.execute("SELECT * FROM footprints WHERE site_id = ? AND product_id = ? AND "
                                 "period_start_ms = ? AND shipment_id IS NULL ORDER BY seq DESC LIMIT 1",
                                 (site_id, product_id, period_start_ms)).fetchone()
            return self._row(r) if r else None

    def all(self, upto_seq: int | None = None) -> list[Published]:
        """Every stored footprint in publication order (up to `upto_seq`: a pagination snapshot)."""
        query, args = "SELECT * FROM footprints", ()
        if upto_seq is not None:
            query, args = query + " WHERE seq <= ?", (upto_seq,)
        with self._lock:
            return [self._row(r) for r in self._db.execute(query + " ORDER BY seq", args).fetchall()]

    def last_seq(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM footprints").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
