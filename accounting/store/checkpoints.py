"""Engine checkpoints and ingest state, kept beside the readings so a restart resumes, not replays.

A checkpoint is written only after the readings it includes are durable in the store, so
"checkpoint + the store's readings since" always covers everything ingested; the engine
ignores the overlap (duplicates do not change its totals). One small SQLite file whatever
the reading store is: InfluxDB is the wrong place for a blob that must be replaced atomically.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any


class CheckpointStore:
    """Named (meta, blob) pairs, each replaced atomically."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("CREATE TABLE IF NOT EXISTS checkpoints (name TEXT PRIMARY KEY, "
                           "taken_ms INTEGER NOT NULL, meta TEXT NOT NULL, blob BLOB NOT NULL)")

    def save(self, name: str, taken_ms: int, meta: dict[str, Any], blob: bytes) -> None:
        with self._lock:
            self._conn.execute("INSERT OR REPLACE INTO checkpoints VALUES (?, ?, ?, ?)",
                               (name, taken_ms, json.dumps(meta), blob))

    def load(self, name: str) -> tuple[int, dict[str, Any], bytes] | None:
        with self._lock:
            row = self._conn.execute("SELECT taken_ms, meta, blob FROM checkpoints WHERE name = ?",
                                     (name,)).fetchone()
        return (row[0], json.loads(row[1]), bytes(row[2])) if row else None

    def close(self) -> None:
        with self._lock:
            self._conn.close()
