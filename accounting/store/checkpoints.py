"""Engine checkpoints, kept beside the readings so a restart resumes instead of replaying.

One small SQLite file whatever the reading store (InfluxDB is the wrong place for state that
must change atomically). Per site: a row of meta (the engine's and the service's) and the
engine's hour blocks (``accounting.engine.checkpoint``), one row each. A checkpoint writes
only the blocks that changed since the previous one, plus the meta, in one transaction
(``synchronous=FULL``, WAL): a crash mid-write leaves the previous checkpoint whole, since the
uncommitted frames are discarded when the file is opened again.

The file is a cache of what the store can rebuild. If it cannot be read (truncated, not a
database, a failed integrity check) it is set aside as ``<name>.corrupt-<UTC time>`` with an
error in the log, a fresh one is started, and the caller rebuilds the engine from the store.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, NamedTuple

from accounting.engine.checkpoint import Snapshot, decode, load_scalars
from accounting.errors import CheckpointError

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS engines (
    site TEXT PRIMARY KEY,
    taken_ms INTEGER NOT NULL,
    meta TEXT NOT NULL,
    scalars BLOB NOT NULL,
    service TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS engine_blocks (
    site TEXT NOT NULL,
    block INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (site, block)
) WITHOUT ROWID;
DROP TABLE IF EXISTS checkpoints;
"""


class SavedEngine(NamedTuple):
    """A site's last checkpoint: when, the service's meta, the engine's snapshot."""

    taken_ms: int
    service: dict[str, Any]
    snapshot: Snapshot


class CheckpointStore:
    """Per-site engine snapshots, saved incrementally and atomically."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._lock = threading.Lock()
        self.set_aside: list[Path] = []  # corrupt files moved away by this instance
        self._conn = self._open()

    def _open(self) -> sqlite3.Connection:
        try:
            return self._connect()
        except sqlite3.DatabaseError as exc:
            self._move_aside(exc)
            return self._connect()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            if self.path != ":memory:":
                status = conn.execute("PRAGMA quick_check").fetchone()[0]
                if status != "ok":
                    raise sqlite3.DatabaseError(f"integrity check: {status}")
            conn.executescript(SCHEMA)
        except BaseException:
            conn.close()
            raise
        return conn

    def _move_aside(self, exc: Exception) -> None:
        if self.path == ":memory:":
            raise exc
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        target = Path(f"{self.path}.corrupt-{stamp}")
        for suffix in ("", "-wal", "-shm"):
            src = Path(self.path + suffix)
            if src.exists():
                src.rename(Path(str(target) + suffix))
        self.set_aside.append(target)
        log.error("checkpoint file %s is unreadable (%s); moved to %s, engines are rebuilt from "
                  "the store", self.path, exc, target)

    def _recover(self, exc: sqlite3.DatabaseError) -> None:
        """Set the broken file aside and continue with a fresh one (lock held)."""
        with contextlib.suppress(sqlite3.Error):
            self._conn.close()
        self._move_aside(exc)
        self._conn = self._connect()

    def save_snapshot(self, site: str, taken_ms: int, service: dict[str, Any], snapshot: Snapshot) -> int:
        """Write a snapshot (its blocks replace those saved; a full one replaces all) and the
        meta, in one transaction. Returns the bytes written. Raises ``CheckpointError`` when it
        was not saved, so the caller's next snapshot must be full: the file was found broken
        (it has been replaced by an empty one), or the write failed (disk full, I/O error, a
        lock held too long; the file and its previous checkpoint are kept)."""
        blocks = snapshot.compress()
        scalars = snapshot.scalars_bytes()
        meta = json.dumps(snapshot.meta)
        with self._lock:
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    if snapshot.full:
                        conn.execute("DELETE FROM engine_blocks WHERE site = ?", (site,))
                    conn.executemany("INSERT OR REPLACE INTO engine_blocks VALUES (?, ?, ?)",
                                     [(site, b, data) for b, data in blocks.items()])
                    conn.execute("INSERT OR REPLACE INTO engines VALUES (?, ?, ?, ?, ?)",
                                 (site, taken_ms, meta, scalars, json.dumps(service)))
                except BaseException:
                    if conn.in_transaction:  # SQLite may have rolled back already (I/O error)
                        conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            except sqlite3.OperationalError as exc:  # disk full, I/O error, locked: not corruption
                with contextlib.suppress(sqlite3.Error):
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                raise CheckpointError(f"checkpoint not saved, the previous one is kept: {exc}") from exc
            except sqlite3.DatabaseError as exc:
                self._recover(exc)
                raise CheckpointError(f"checkpoint file was broken and replaced: {exc}") from exc
        return len(scalars) + len(meta) + sum(len(d) for d in blocks.values())

    def load_snapshot(self, site: str) -> SavedEngine | None:
        """The site's last checkpoint, or None (none saved, or the file was unreadable)."""
        with self._lock:
            try:
                row = self._conn.execute("SELECT taken_ms, meta, scalars, service FROM engines "
                                         "WHERE site = ?", (site,)).fetchone()
                if row is None:
                    return None
                blocks = dict(self._conn.execute(
                    "SELECT block, data FROM engine_blocks WHERE site = ?", (site,)).fetchall())
            except sqlite3.OperationalError as exc:  # I/O error, locked: not corruption
                log.error("checkpoint of site %s cannot be read now (%s); it is rebuilt from the store",
                          site, exc)
                return None
            except sqlite3.DatabaseError as exc:
                self._recover(exc)
                return None
        try:
            snapshot = Snapshot(json.loads(row[1]), load_scalars(bytes(row[2])),
                                {int(b): bytes(d) for b, d in blocks.items()}, full=True)
            return SavedEngine(int(row[0]), json.loads(row[3]), snapshot)
        except (ValueError, CheckpointError) as exc:
            log.error("checkpoint of site %s is unreadable (%s); it is rebuilt from the store", site, exc)
            return None

    # The whole-blob interface of format 1 (``Engine.checkpoint`` bytes), kept while the
    # service still saves whole snapshots; stored as a full snapshot.
    def save(self, site: str, taken_ms: int, service: dict[str, Any], blob: bytes) -> None:
        self.save_snapshot(site, taken_ms, service, decode(blob))

    def load(self, site: str) -> tuple[int, dict[str, Any], bytes] | None:
        saved = self.load_snapshot(site)
        return None if saved is None else (saved.taken_ms, saved.service, saved.snapshot.encode())

    def close(self) -> None:
        with self._lock:
            self._conn.close()
