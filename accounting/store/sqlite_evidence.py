"""Signed batches and chain events in the SQLite store (`accounting.store.evidence`).

A batch row holds the readings' exact bytes beside its signature and chain position; a small
`chains` table lists the chains seen, so a window's chains are found without scanning the
batches. Indexes: (site, chain, seq) for the chain's links and counts, (site, chain, min_ts,
seq) for "the last batch starting before T", which is how a window's segment is bounded.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from accounting.store.base import EncodedReadings
from accounting.store.evidence import ChainEvent, EvidenceStore, StoredBatch

SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    site TEXT NOT NULL,
    gateway TEXT NOT NULL,
    hash TEXT NOT NULL,
    chain TEXT,
    seq INTEGER NOT NULL,
    key TEXT,
    prev TEXT,
    sig TEXT,
    min_ts INTEGER NOT NULL,
    max_ts INTEGER NOT NULL,
    n INTEGER NOT NULL,
    received_ms INTEGER NOT NULL,
    readings BLOB NOT NULL,
    UNIQUE (site, gateway, hash)
);
CREATE INDEX IF NOT EXISTS batches_seq ON batches (site, chain, seq);
CREATE INDEX IF NOT EXISTS batches_time ON batches (site, chain, min_ts, seq);
CREATE TABLE IF NOT EXISTS chains (
    site TEXT NOT NULL,
    gateway TEXT NOT NULL,
    chain TEXT NOT NULL,
    first_seen_ms INTEGER NOT NULL,
    PRIMARY KEY (site, gateway, chain)
);
CREATE TABLE IF NOT EXISTS chain_events (
    site TEXT NOT NULL,
    gateway TEXT NOT NULL,
    chain TEXT NOT NULL,
    kind TEXT NOT NULL,
    seq_lo INTEGER NOT NULL,
    seq_hi INTEGER NOT NULL,
    detected_ms INTEGER NOT NULL,
    detail TEXT NOT NULL,
    resolved_ms INTEGER,
    PRIMARY KEY (site, gateway, chain, kind, seq_lo, detected_ms)
);
CREATE INDEX IF NOT EXISTS chain_events_open ON chain_events (resolved_ms, site);
"""

_COLUMNS = "site, gateway, seq, hash, chain, key, prev, sig, min_ts, max_ts, n, received_ms"


def insert_evidence(conn: sqlite3.Connection, batches: Sequence[StoredBatch], events: Sequence[ChainEvent]) -> None:
    """Batches, their chains and chain events, inside the caller's transaction (idempotent)."""
    if batches:
        conn.executemany(f"INSERT OR IGNORE INTO batches ({_COLUMNS}, readings) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                         batches)
        conn.executemany("INSERT OR IGNORE INTO chains VALUES (?, ?, ?, ?)",
                         {(b.site, b.gateway, b.chain, b.received_ms) for b in batches if b.chain})
    if events:
        conn.executemany("INSERT OR REPLACE INTO chain_events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", events)


def _batch(row: tuple, readings: bytes = b"") -> StoredBatch:
    return StoredBatch(*row[:12], readings)


class SqliteEvidence(EvidenceStore):
    """Mixed into `SqliteStore`, which provides `_conn()` and `_write_lock`."""

    def write_batches(self, batches: Sequence[StoredBatch]) -> None:
        self.write_evidence(batches, ())

    def write_chain_events(self, events: Sequence[ChainEvent]) -> None:
        self.write_evidence((), events)

    def write_evidence(self, batches: Sequence[StoredBatch], events: Sequence[ChainEvent]) -> None:
        if not batches and not events:
            return
        conn = self._conn()  # type: ignore[attr-defined]
        with self._write_lock:  # type: ignore[attr-defined]
            conn.execute("BEGIN IMMEDIATE")
            try:
                insert_evidence(conn, batches, events)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def write_with_evidence(self, encoded: EncodedReadings, batches: Sequence[StoredBatch],
                            events: Sequence[ChainEvent]) -> int:
        """Readings and their batches' evidence in one transaction: durable together, one commit."""
        return self.write_encoded(encoded, batches, events)  # type: ignore[attr-defined]

    def _chains(self, site: str) -> list[tuple[str, str]]:
        return self._conn().execute(  # type: ignore[attr-defined]
            "SELECT gateway, chain FROM chains WHERE site = ? ORDER BY gateway, chain", (site,)).fetchall()

    def recent_batches(self, site: str, gateway: str, limit: int) -> list[StoredBatch]:
        out: list[StoredBatch] = []
        for g, chain in self._chains(site):
            if g == gateway:
                out += [_batch(r) for r in self._conn().execute(  # type: ignore[attr-defined]
                    f"SELECT {_COLUMNS} FROM batches WHERE site = ? AND chain = ? ORDER BY seq DESC LIMIT ?",
                    (site, chain, limit))]
        return out

    def batch_hashes(self, site: str, gateway: str, chain: str, first: int, last: int) -> dict[int, str]:
        return dict(self._conn().execute(  # type: ignore[attr-defined]
            "SELECT seq, hash FROM batches WHERE site = ? AND chain = ? AND seq BETWEEN ? AND ? AND gateway = ?",
            (site, chain, first, last, gateway)).fetchall())

    def _last_before(self, site: str, chain: str, since_ms: int, before_ms: int) -> tuple[int, str] | None:
        return self._conn().execute(  # type: ignore[attr-defined]
            "SELECT seq, hash FROM batches WHERE site = ? AND chain = ? AND min_ts >= ? AND min_ts < ? "
            "ORDER BY min_ts DESC, seq DESC LIMIT 1", (site, chain, since_ms, before_ms)).fetchone()

    def chain_heads(self, site: str, before_ms: int, since_ms: int) -> dict[tuple[str, str], tuple[int, str]]:
        out = {}
        for gateway, chain in self._chains(site):
            row = self._last_before(site, chain, since_ms, before_ms)
            if row is not None:
                out[(gateway, chain)] = (row[0], row[1])
        return out

    def chain_tails(self, site: str, before_ms: int, since_ms: int) -> dict[tuple[str, str], int]:
        return {key: seq for key, (seq, _) in self.chain_heads(site, before_ms, since_ms).items()}

    def first_batches(self, site: str, since_ms: int, before_ms: int) -> dict[tuple[str, str], int]:
        out = {}
        for gateway, chain in self._chains(site):
            row = self._conn().execute(  # type: ignore[attr-defined]
                "SELECT seq FROM batches WHERE site = ? AND chain = ? AND min_ts >= ? AND min_ts < ? "
                "ORDER BY min_ts, seq LIMIT 1", (site, chain, since_ms, before_ms)).fetchone()
            if row is not None:
                out[(gateway, chain)] = row[0]
        return out

    def count_batches(self, site: str, gateway: str, chain: str, first: int, last: int) -> int:
        return self._conn().execute(  # type: ignore[attr-defined]
            "SELECT COUNT(DISTINCT seq) FROM batches WHERE site = ? AND chain = ? AND seq BETWEEN ? AND ? "
            "AND gateway = ?", (site, chain, first, last, gateway)).fetchone()[0]

    def unsigned_batches(self, site: str, start_ms: int, end_ms: int) -> int:
        from accounting.store.evidence import MAX_BATCH_SPAN_MS
        return self._conn().execute(  # type: ignore[attr-defined]
            "SELECT COUNT(*) FROM batches WHERE site = ? AND chain IS NULL AND min_ts >= ? AND min_ts < ? "
            "AND max_ts >= ?", (site, start_ms - MAX_BATCH_SPAN_MS, end_ms, start_ms)).fetchone()[0]

    def read_batches(self, site: str, start_ms: int, end_ms: int) -> list[StoredBatch]:
        out = []
        conn = self._conn()  # type: ignore[attr-defined]
        for _, chain in [*self._chains(site), (None, None)]:
            where = "chain = ?" if chain is not None else "chain IS NULL"
            args = (site, chain) if chain is not None else (site,)
            out += [_batch(r[:12], bytes(r[12])) for r in conn.execute(
                f"SELECT {_COLUMNS}, readings FROM batches WHERE site = ? AND {where} AND min_ts >= ? AND min_ts < ? "
                f"ORDER BY seq", (*args, start_ms, end_ms))]
        return sorted(out, key=lambda b: (b.gateway, b.chain or "", b.seq))

    def read_chain_batches(self, site: str, gateway: str, chain: str, first: int, last: int) -> list[StoredBatch]:
        return [_batch(r[:12], bytes(r[12])) for r in self._conn().execute(  # type: ignore[attr-defined]
            f"SELECT {_COLUMNS}, readings FROM batches WHERE site = ? AND chain = ? AND seq BETWEEN ? AND ? "
            f"AND gateway = ? ORDER BY seq", (site, chain, first, last, gateway))]

    def chain_events(self, site: str | None = None, *, open_only: bool = False,
                     since_ms: int = 0) -> list[ChainEvent]:
        where, args = ["detected_ms >= ?"], [since_ms]
        if site is not None:
            where.append("site = ?")
            args.append(site)
        if open_only:
            where.append("resolved_ms IS NULL AND kind = 'gap'")
        rows = self._conn().execute(  # type: ignore[attr-defined]
            f"SELECT * FROM chain_events WHERE {' AND '.join(where)} ORDER BY detected_ms, gateway, seq_lo", args)
        return [ChainEvent(*r) for r in rows]
