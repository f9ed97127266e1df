"""The embedded store: one SQLite file in WAL mode, the default when no InfluxDB is configured.

Readings are one row per (site, meter, ts_ms) with a column per quantity of the catalogue:
the primary key makes a redelivered message a no-op (`INSERT OR IGNORE`), and the count of
rows actually inserted tells ingest exactly how many were duplicates. Each ingest cycle is
one transaction, committed with `synchronous=FULL` before the broker gets its acks.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from accounting.errors import StoreRejectedError
from accounting.store import sqlite_evidence
from accounting.store.base import (
    VALUE_NAMES,
    Channel,
    ChannelArrays,
    EncodedReadings,
    QuarantinedMessage,
    ReadingStore,
    StoredReading,
    good_columns,
    joined_arrays,
)
from accounting.store.evidence import ChainEvent, StoredBatch

_VALUE_COLUMNS = ", ".join(f"{name} REAL" for name in VALUE_NAMES)
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS readings (
    site TEXT NOT NULL,
    meter TEXT NOT NULL,
    ts_ms INTEGER NOT NULL,
    gateway TEXT NOT NULL,
    quality TEXT NOT NULL,
    value_quality TEXT,
    {_VALUE_COLUMNS},
    PRIMARY KEY (site, meter, ts_ms)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS footprints (
    site TEXT NOT NULL,
    product TEXT NOT NULL,
    start_ms INTEGER NOT NULL,
    end_ms INTEGER NOT NULL,
    dataset_version TEXT NOT NULL,
    computed_ms INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (site, product, start_ms, end_ms, dataset_version)
);
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY,
    received_ms INTEGER NOT NULL,
    site TEXT,
    topic TEXT NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    payload BLOB NOT NULL,
    payload_bytes INTEGER,
    sha256 TEXT
);
CREATE INDEX IF NOT EXISTS quarantine_reason ON quarantine (reason, received_ms);
"""

#: Quarantine keeps the newest this many records (each holds at most a bounded payload).
QUARANTINE_MAX_ROWS = 100_000
# What SQLite raises for the content of a row (a value it cannot bind or hold), as opposed to
# its own state (locked, disk full, I/O: sqlite3.OperationalError, retried).
_REFUSED = (sqlite3.IntegrityError, sqlite3.InterfaceError, sqlite3.DataError, sqlite3.ProgrammingError,
            OverflowError, TypeError, ValueError)

_COLUMNS = ("site", "meter", "ts_ms", "gateway", "quality", "value_quality", *VALUE_NAMES)
_INSERT = f"INSERT OR IGNORE INTO readings ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM readings"


def _row(r: StoredReading) -> tuple:
    values = r.values
    return (r.site, r.meter, r.ts_ms, r.gateway, r.quality,
            json.dumps(r.value_quality) if r.value_quality else None,
            *[values.get(name) for name in VALUE_NAMES])


def _reading(row: tuple) -> StoredReading:
    site, meter, ts_ms, gateway, quality, value_quality, *values = row
    return StoredReading(site, gateway, meter, ts_ms, quality,
                         {n: v for n, v in zip(VALUE_NAMES, values, strict=True) if v is not None},
                         json.loads(value_quality) if value_quality else None)


class SqliteStore(sqlite_evidence.SqliteEvidence, ReadingStore):
    """A `ReadingStore` in one SQLite file; safe to read from other threads while ingest writes."""

    def __init__(self, path: str | Path, *, synchronous: str = "FULL",
                 quarantine_max_rows: int = QUARANTINE_MAX_ROWS) -> None:
        self.path = str(path)
        self._synchronous = synchronous
        self.quarantine_max_rows = quarantine_max_rows
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._conn().executescript(SCHEMA)
        self._conn().executescript(sqlite_evidence.SCHEMA)  # signed batches and chain events
        self._add_new_columns()

    def _add_new_columns(self) -> None:
        """A store written before a quantity joined tanji/quantities.py gets its column (NULL so
        far); one written before quarantine recorded sizes and digests gets those columns."""
        conn = self._conn()
        have = {row[1] for row in conn.execute("PRAGMA table_info(readings)")}
        for name in VALUE_NAMES:
            if name not in have:
                conn.execute(f"ALTER TABLE readings ADD COLUMN {name} REAL")
        have = {row[1] for row in conn.execute("PRAGMA table_info(quarantine)")}
        for column, kind in (("payload_bytes", "INTEGER"), ("sha256", "TEXT")):
            if column not in have:
                conn.execute(f"ALTER TABLE quarantine ADD COLUMN {column} {kind}")

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
            self._local.conn = conn
            with self._connections_lock:
                self._connections.append(conn)
        return conn

    def encode_readings(self, rows: Sequence[StoredReading]) -> EncodedReadings:
        return EncodedReadings(rows, [_row(r) for r in rows])

    def write_encoded(self, encoded: EncodedReadings, batches: Sequence[StoredBatch] = (),
                      events: Sequence[ChainEvent] = ()) -> int:
        """The readings, and the evidence of their batches in the same transaction (`write_with_evidence`)."""
        if not encoded.rows and not batches and not events:
            return 0
        conn = self._conn()
        with self._write_lock:
            conn.execute("BEGIN IMMEDIATE")
            before = conn.total_changes
            try:
                conn.executemany(_INSERT, encoded.payload)
            except BaseException as exc:
                conn.execute("ROLLBACK")
                if isinstance(exc, _REFUSED):
                    raise StoreRejectedError(f"SQLite refuses a row: {type(exc).__name__}: {exc}") from exc
                raise
            inserted = conn.total_changes - before
            try:
                sqlite_evidence.insert_evidence(conn, batches, events)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return inserted

    def read_readings(self, site: str, meter: str | None, start_ms: int, end_ms: int) -> list[StoredReading]:
        if meter is None:
            cur = self._conn().execute(
                f"{_SELECT} WHERE site = ? AND ts_ms >= ? AND ts_ms < ? ORDER BY ts_ms, meter",
                (site, start_ms, end_ms))
        else:
            cur = self._conn().execute(
                f"{_SELECT} WHERE site = ? AND meter = ? AND ts_ms >= ? AND ts_ms < ? ORDER BY ts_ms",
                (site, meter, start_ms, end_ms))
        return [_reading(row) for row in cur]

    def read_channel_arrays(self, site: str, channels: Sequence[Channel], start_ms: int,
                            end_ms: int) -> ChannelArrays:
        """One query per meter for only the columns asked, converted column by column."""
        parts: list[ChannelArrays] = []
        by_meter: dict[str, list[tuple[int, str]]] = {}
        for i, (meter, quantity) in enumerate(channels):
            if quantity not in VALUE_NAMES:
                continue
            by_meter.setdefault(meter, []).append((i, quantity))
        conn = self._conn()
        for meter, wanted in by_meter.items():
            cols = ", ".join(q for _, q in wanted)
            rows = conn.execute(
                f"SELECT ts_ms, quality, value_quality, {cols} FROM readings "
                "WHERE site = ? AND meter = ? AND ts_ms >= ? AND ts_ms < ? ORDER BY ts_ms",
                (site, meter, start_ms, end_ms)).fetchall()
            if not rows:
                continue
            columns = list(zip(*rows, strict=True))
            parts += good_columns(wanted, columns[0], columns[1], columns[2], columns[3:])
        return joined_arrays(parts)

    def reading_span(self, site: str) -> tuple[int, int] | None:
        row = self._conn().execute("SELECT MIN(ts_ms), MAX(ts_ms) FROM readings WHERE site = ?",
                                   (site,)).fetchone()
        return None if row is None or row[0] is None else (int(row[0]), int(row[1]))

    def latest(self, site: str) -> dict[str, StoredReading]:
        conn = self._conn()
        meters = [m for (m,) in conn.execute("SELECT DISTINCT meter FROM readings WHERE site = ?", (site,))]
        out = {}
        for meter in meters:
            row = conn.execute(f"{_SELECT} WHERE site = ? AND meter = ? ORDER BY ts_ms DESC LIMIT 1",
                               (site, meter)).fetchone()
            out[meter] = _reading(row)
        return out

    def recent_timestamps(self, site: str, meter: str, limit: int) -> list[int]:
        cur = self._conn().execute(
            "SELECT ts_ms FROM readings WHERE site = ? AND meter = ? ORDER BY ts_ms DESC LIMIT ?",
            (site, meter, limit))
        return sorted(ts for (ts,) in cur)

    def write_footprints(self, site: str, start_ms: int, end_ms: int, computed_ms: int,
                         footprints: Sequence[dict[str, Any]]) -> None:
        conn = self._conn()
        with self._write_lock:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                "INSERT OR REPLACE INTO footprints VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(site, str(f.get("product_id")), start_ms, end_ms, str(f.get("dataset_version", "")),
                  computed_ms, json.dumps(f, default=str)) for f in footprints])
            conn.execute("COMMIT")

    def read_footprints(self, site: str, start_ms: int, end_ms: int) -> list[dict[str, Any]]:
        cur = self._conn().execute(
            "SELECT body FROM footprints WHERE site = ? AND start_ms >= ? AND end_ms <= ? "
            "ORDER BY start_ms, product", (site, start_ms, end_ms))
        return [json.loads(body) for (body,) in cur]

    def quarantine(self, messages: Sequence[QuarantinedMessage]) -> None:
        """Keep the records (bounded by ingest) and only the newest `quarantine_max_rows` of them."""
        if not messages:
            return
        conn = self._conn()
        with self._write_lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(
                    "INSERT INTO quarantine (received_ms, site, topic, reason, detail, payload, payload_bytes, sha256) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [(m.received_ms, m.site, m.topic, m.reason, m.detail, m.payload,
                      len(m.payload) if m.payload_bytes is None else m.payload_bytes, m.sha256) for m in messages])
                newest = conn.execute("SELECT MAX(id) FROM quarantine").fetchone()[0]
                conn.execute("DELETE FROM quarantine WHERE id <= ?", (newest - self.quarantine_max_rows,))
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def quarantined(self, limit: int = 100) -> list[QuarantinedMessage]:
        cur = self._conn().execute(
            "SELECT received_ms, topic, reason, detail, payload, site, payload_bytes, sha256 FROM quarantine "
            "ORDER BY id DESC LIMIT ?", (limit,))
        return [QuarantinedMessage(*row) for row in cur]

    def quarantine_counts(self) -> dict[str, int]:
        """Quarantined messages per reason among the records kept (the newest `quarantine_max_rows`)."""
        cur = self._conn().execute("SELECT reason, COUNT(*) FROM quarantine GROUP BY reason")
        return dict(cur.fetchall())

    def count_readings(self, site: str | None = None) -> int:
        if site is None:
            return self._conn().execute("SELECT COUNT(*) FROM readings").fetchone()[0]
        return self._conn().execute("SELECT COUNT(*) FROM readings WHERE site = ?", (site,)).fetchone()[0]

    def close(self) -> None:
        with self._connections_lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._local = threading.local()
