"""The durable spool: every reading is on disk before it is published, and leaves only on PUBACK.

SQLite in WAL mode with `synchronous=NORMAL`: a commit survives the gateway process being
killed (SIGKILL, OOM, a crash) at any instant; after a power cut, SQLite guarantees the file
is intact and may lose at most the last commits not yet checkpointed. Readings are
committed in groups (the readings of one event-loop turn), which is what lets one process
spool thousands of polls per second on an SD card.

Life of a reading:
1. `add` inserts it into `reading` (committed before anything can publish it);
2. `next_batch` moves the oldest readings into one `batch` row, giving it the next per-gateway
   sequence number (persisted in `meta`, so numbers keep rising across restarts);
3. `ack(seq)` deletes the batch once the broker has acknowledged it (PUBACK).
A batch that was formed but never acknowledged is replayed, with its original seq, after a
restart (`pending_batches`), so consumers can see a replay is a replay.

Bounded disk use, the declared policy: `max_bytes` caps the pages in use (the file never
grows past it plus SQLite's WAL, since freed pages are reused). At `alarm_fraction` (80%)
the spool raises an alarm (status topic, log). At the cap it makes room, oldest first:
first readings that carry no counter (gauges-only and comm_error readings); then, if that is
not enough, it thins the oldest half of the counter readings to every second reading per
meter. Counters are cumulative, so thinning loses time resolution, never a kWh or a unit:
the energy between two kept readings is their difference. Every dropped reading is counted
(`dropped`, persisted) and reported; nothing is dropped silently.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tanji.quantities import QUANTITIES
from tanji.wire import Reading

ALARM_FRACTION = 0.8
_COUNTERS = frozenset(name for name, q in QUANTITIES.items() if q.kind == "counter")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS reading (
    id INTEGER PRIMARY KEY,
    meter TEXT NOT NULL,
    ts_ms INTEGER NOT NULL,
    has_counter INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS batch (
    seq INTEGER PRIMARY KEY,
    n INTEGER NOT NULL,
    oldest_ts_ms INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class Batch:
    """Readings moved out of the queue under one sequence number; `body` is their JSON array."""

    seq: int
    n: int
    oldest_ts_ms: int
    body: str


def reading_json(reading: Reading) -> str:
    return json.dumps(reading.to_json(), separators=(",", ":"), allow_nan=False)


class Spool:
    """One gateway's spool file. Not thread-safe: the gateway uses it from its event loop only."""

    def __init__(self, path: str | Path, max_bytes: int | None = None, alarm_fraction: float = ALARM_FRACTION) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.alarm_fraction = alarm_fraction
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA journal_size_limit=4194304")
        self.db.executescript(_SCHEMA)
        self.page_size = self.db.execute("PRAGMA page_size").fetchone()[0]
        self.queued = self.db.execute("SELECT COUNT(*) FROM reading").fetchone()[0]
        self.batched = self.db.execute("SELECT COALESCE(SUM(n), 0) FROM batch").fetchone()[0]
        self.next_seq = self._meta("next_seq")
        self.dropped = self._meta("dropped")
        self.alarm = False
        self._since_size_check = 0
        self.check_size()

    def _meta(self, key: str) -> int:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else 0

    def _set_meta(self, key: str, value: int) -> None:
        self.db.execute("INSERT INTO meta(key, value) VALUES(?, ?) "
                        "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))

    def close(self) -> None:
        self.db.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """BEGIN … COMMIT, rolled back on any error so the connection stays usable (disk full)."""
        self.db.execute("BEGIN")
        try:
            yield
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    # -- writing -----------------------------------------------------------------------------

    def add(self, readings: Sequence[Reading]) -> None:
        """Commit `readings` to disk (one transaction), making room first if the spool is full."""
        if not readings:
            return
        rows = [(r.meter, r.ts_ms, int(not _COUNTERS.isdisjoint(r.values)), reading_json(r)) for r in readings]
        with self._transaction():
            self.db.executemany("INSERT INTO reading(meter, ts_ms, has_counter, body) VALUES (?, ?, ?, ?)", rows)
        self.queued += len(rows)
        self._since_size_check += len(rows)
        if self.max_bytes is not None and self._since_size_check >= 256:
            self.check_size()

    def next_batch(self, max_readings: int) -> Batch | None:
        """Move the oldest queued readings (at most `max_readings`) into a new numbered batch."""
        rows = self.db.execute("SELECT id, ts_ms, body FROM reading ORDER BY id LIMIT ?", (max_readings,)).fetchall()
        if not rows:
            return None
        seq = self.next_seq
        batch = Batch(seq, len(rows), min(r[1] for r in rows), "[" + ",".join(r[2] for r in rows) + "]")
        with self._transaction():
            self.db.execute("INSERT INTO batch(seq, n, oldest_ts_ms, body) VALUES (?, ?, ?, ?)",
                            (batch.seq, batch.n, batch.oldest_ts_ms, batch.body))
            self.db.execute("DELETE FROM reading WHERE id <= ?", (rows[-1][0],))
            self._set_meta("next_seq", seq + 1)
        self.next_seq = seq + 1
        self.queued -= batch.n
        self.batched += batch.n
        return batch

    def ack(self, seq: int) -> None:
        """The broker has the batch: forget it."""
        row = self.db.execute("SELECT n FROM batch WHERE seq = ?", (seq,)).fetchone()
        if row is not None:
            self.db.execute("DELETE FROM batch WHERE seq = ?", (seq,))
            self.batched -= row[0]

    def pending_batches(self) -> list[Batch]:
        """Batches formed but not acknowledged (by a previous run), oldest first."""
        return [Batch(*row) for row in self.db.execute("SELECT seq, n, oldest_ts_ms, body FROM batch ORDER BY seq")]

    # -- health and the size policy ----------------------------------------------------------

    @property
    def depth(self) -> int:
        """Readings on disk not yet acknowledged by the broker."""
        return self.queued + self.batched

    def oldest_ts_ms(self) -> int | None:
        """Timestamp of the oldest unacknowledged reading (by rowid: no scan of a big backlog)."""
        batch = self.db.execute("SELECT oldest_ts_ms FROM batch ORDER BY seq LIMIT 1").fetchone()
        if batch is not None:
            return batch[0]
        row = self.db.execute("SELECT ts_ms FROM reading ORDER BY id LIMIT 1").fetchone()
        return row[0] if row else None

    def used_bytes(self) -> int:
        pages = self.db.execute("PRAGMA page_count").fetchone()[0]
        free = self.db.execute("PRAGMA freelist_count").fetchone()[0]
        return (pages - free) * self.page_size

    def check_size(self) -> None:
        """Raise or clear the alarm, and apply the drop policy when the cap is reached."""
        self._since_size_check = 0
        if self.max_bytes is None:
            return
        used = self.used_bytes()
        self.alarm = used >= self.alarm_fraction * self.max_bytes
        if used < self.max_bytes:
            return
        # Make room for a tenth of the cap at a time, so the policy does not run on every insert.
        target = used - int(self.max_bytes * 0.9)
        per_row = max(used // max(self.depth, 1), 1)
        want = max(target // per_row, 1)
        with self._transaction():
            dropped = self._make_room(want)
        self.dropped += dropped
        self.queued -= dropped

    def _make_room(self, want: int) -> int:
        """Delete `want` readings by the declared policy (gauges first, then thin counters)."""
        dropped = self.db.execute(
            "DELETE FROM reading WHERE id IN (SELECT id FROM reading WHERE has_counter = 0 ORDER BY id LIMIT ?)",
            (want,)).rowcount
        if dropped < want:
            oldest_half = self.queued // 2
            dropped += self.db.execute(
                "DELETE FROM reading WHERE id IN (SELECT id FROM (SELECT id, row_number() OVER "
                "(PARTITION BY meter ORDER BY id) AS k FROM (SELECT id, meter FROM reading ORDER BY id LIMIT ?)) "
                "WHERE k % 2 = 0)", (oldest_half,)).rowcount
        self._set_meta("dropped", self.dropped + dropped)
        return dropped

    def stats(self) -> dict[str, int | bool | None]:
        oldest = self.oldest_ts_ms()
        return {"spool_depth": self.depth, "spool_batches_unacked": self.db.execute(
                    "SELECT COUNT(*) FROM batch").fetchone()[0],
                "spool_bytes": self.used_bytes(), "spool_max_bytes": self.max_bytes,
                "spool_alarm": self.alarm, "spool_dropped": self.dropped,
                "publish_lag_ms": (time.time_ns() // 1_000_000 - oldest) if oldest is not None else 0}
