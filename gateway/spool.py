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
3. with `delivery: broker`, `ack(seq)` deletes the batch once the broker has acknowledged it
   (PUBACK); with `delivery: confirmed` (the default) the PUBACK only marks it `published`
   (`mark_published`) and `confirm(seqs)` deletes it once accounting reports it stored durably.
A batch that was formed but never acknowledged is replayed, with its original seq, after a
restart (`pending_batches`), so consumers can see a replay is a replay.

Signed batches (tanji/signed_batch.py, docs/audit.md): with a signing key, `next_batch` signs
the batch as it forms it, in the same transaction that moves its readings and advances the
chain (its hash becomes the next batch's `prev`). The row keeps the signature beside the
readings exactly as signed, so every (re)publication, after any restart or outage, is the
signed batch byte for byte, and a batch is never signed twice: a kill before the commit
leaves the readings queued and the chain where it was. The chain state (chain id, previous
hash) is kept in the spool and, like the sequence number, in `<spool>.seq`.

Sequence numbers never go back: the next one is persisted in the spool and, as a high-water
mark, in a small state file beside it (`<spool>.seq`). A spool that cannot be opened (corrupt),
or that is empty while the state file shows batches were made (a 0-byte or replaced file), is
moved aside to `<spool>.bad-<time>` and reported (`set_aside`, an alarm on the status topic),
never silently replaced; the fresh spool continues from the high-water mark.

A full disk (SQLITE_FULL, or the spool's own page cap) never blocks publishing: the write is
retried after making room by the size policy below, and the real error is reported (a failed
COMMIT rolls back by itself, so no "cannot rollback" hides it).

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
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from gateway.signing_key import SigningKey
from tanji import signed_batch
from tanji.quantities import COUNTERS
from tanji.signed_batch import new_chain_id
from tanji.wire import Reading

log = logging.getLogger("tanji.gateway.spool")
ALARM_FRACTION = 0.8
_COUNTERS = frozenset(COUNTERS)
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
    body TEXT NOT NULL,
    published INTEGER NOT NULL DEFAULT 0,
    sig TEXT,
    hash TEXT
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS chain (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_BATCH_COLUMNS = "seq, n, oldest_ts_ms, body, published, sig"


@dataclass(frozen=True, slots=True)
class Batch:
    """Readings moved out of the queue under one sequence number; `body` is their JSON array,
    `sig` the JSON text of its `sig` member when it was signed (published with it, as is)."""

    seq: int
    n: int
    oldest_ts_ms: int
    body: str
    published: bool = False
    sig: str | None = None


def _batch(row: tuple) -> Batch:
    seq, n, oldest, body, published, sig = row
    return Batch(seq, n, oldest, body, bool(published), sig)


def reading_json(reading: Reading) -> str:
    return json.dumps(reading.to_json(), separators=(",", ":"), allow_nan=False)


class Spool:
    """One gateway's spool file. Not thread-safe: the gateway uses it from its event loop only."""

    def __init__(self, path: str | Path, max_bytes: int | None = None, alarm_fraction: float = ALARM_FRACTION,
                 max_pages: int | None = None, signer: SigningKey | None = None, site: str = "",
                 gateway: str = "") -> None:
        self.path = Path(path)
        self.signer = signer
        self.chain: str | None = None
        self.prev: str | None = None
        self.site, self.gateway = site, gateway
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.alarm_fraction = alarm_fraction
        self.seq_file = Path(f"{self.path}.seq")
        self.set_aside: str | None = None
        high_water, saved_chain = self._read_high_water()
        try:
            self._open(max_pages)
            if self._fresh and high_water > 0:
                raise sqlite3.DatabaseError(f"the spool is empty, but batches up to seq {high_water - 1} were made")
        except sqlite3.DatabaseError as exc:
            self._set_aside(exc)
            self._open(max_pages)
        self.queued = self.db.execute("SELECT COUNT(*) FROM reading").fetchone()[0]
        self.batched = self.db.execute("SELECT COALESCE(SUM(n), 0) FROM batch").fetchone()[0]
        spooled_seq = self._meta("next_seq")
        self.next_seq = max(spooled_seq, high_water)
        # The chain continues from the spool, unless the state file is ahead of it (a spool
        # set aside, or an older copy put back): then from the state file.
        if self._chain_state("chain") is not None and spooled_seq >= high_water:
            self.chain, self.prev = self._chain_state("chain"), self._chain_state("prev")
        else:
            self.chain, self.prev = saved_chain.get("chain"), saved_chain.get("prev")
        self.dropped = self._meta("dropped")
        self.alarm = False
        self.full_errors = 0
        self._since_size_check = 0
        self.check_size()

    def _open(self, max_pages: int | None) -> None:
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA journal_size_limit=4194304")
            if max_pages is not None:  # tests: a disk that fills up at a chosen size
                self.db.execute(f"PRAGMA max_page_count={int(max_pages)}")
            self.db.executescript(_SCHEMA)
            self._fresh = self.db.execute("SELECT COUNT(*) FROM meta").fetchone()[0] == 0
            self.page_size = self.db.execute("PRAGMA page_size").fetchone()[0]
            columns = {row[1] for row in self.db.execute("PRAGMA table_info(batch)")}
            if "published" not in columns:  # a spool written before end-to-end confirmation
                self.db.execute("ALTER TABLE batch ADD COLUMN published INTEGER NOT NULL DEFAULT 0")
            for column in ("sig", "hash"):  # a spool written before signed batches
                if column not in columns:
                    self.db.execute(f"ALTER TABLE batch ADD COLUMN {column} TEXT")
            self.db.execute("INSERT OR IGNORE INTO meta(key, value) VALUES('next_seq', 0)")
            if self.db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("integrity check failed")
        except sqlite3.DatabaseError:
            self.db.close()
            raise

    def _set_aside(self, why: Exception) -> None:
        """Keep an unusable spool for inspection (and recovery), and say so loudly."""
        aside = self.path.with_name(f"{self.path.name}.bad-{time.strftime('%Y%m%dT%H%M%S')}")
        for suffix in ("", "-wal", "-shm"):
            source = Path(f"{self.path}{suffix}")
            if source.exists():
                os.replace(source, f"{aside}{suffix}")
        self.set_aside = str(aside)
        log.error("ALARM: the spool %s is unusable (%s); kept as %s, starting a new spool that continues "
                  "the sequence numbers; readings in it were not published: recover them from the kept file",
                  self.path, why, aside)

    def _read_high_water(self) -> tuple[int, dict[str, str]]:
        """The next seq and the chain state (chain id, previous hash) kept beside the spool."""
        try:
            saved = json.loads(self.seq_file.read_text())
            chain = {k: saved[k] for k in ("chain", "prev") if isinstance(saved.get(k), str)}
            return int(saved["next_seq"]), chain
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return 0, {}

    def _write_high_water(self) -> None:
        tmp = self.seq_file.with_name(self.seq_file.name + ".tmp")
        state: dict[str, object] = {"next_seq": self.next_seq}
        if self.chain is not None:
            state.update(chain=self.chain, prev=self.prev)
        try:
            tmp.write_text(json.dumps(state))
            os.replace(tmp, self.seq_file)
        except OSError as exc:  # the spool's own meta row still holds it
            log.warning("cannot write %s: %s", self.seq_file, exc)

    def _meta(self, key: str) -> int:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else 0

    def _chain_state(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM chain WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def _set_chain_state(self, key: str, value: str) -> None:
        self.db.execute("INSERT INTO chain(key, value) VALUES(?, ?) "
                        "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))

    def _set_meta(self, key: str, value: int) -> None:
        self.db.execute("INSERT INTO meta(key, value) VALUES(?, ?) "
                        "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))

    def close(self) -> None:
        self.db.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """BEGIN … COMMIT, rolled back on any error so the connection stays usable (disk full).

        SQLite rolls a transaction back by itself when a write fails with SQLITE_FULL, so a
        ROLLBACK is only sent when one is still open: the error raised is the real one.
        """
        self.db.execute("BEGIN")
        try:
            yield
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self.db.execute("ROLLBACK")
            raise

    def _retry_when_full(self, write: Callable[[], None]) -> None:
        """Run `write`; if the disk (or page cap) is full, make room by the size policy and retry once."""
        try:
            with self._transaction():
                write()
            return
        except sqlite3.OperationalError as exc:
            if "full" not in str(exc).lower():
                raise
            self.full_errors += 1
            log.error("the spool %s is full (%s): making room by the size policy", self.path, exc)
        with self._transaction():
            dropped = self._make_room(max(self.depth // 10, 100))
        self.dropped += dropped
        self.queued -= dropped
        with self._transaction():
            write()

    # -- writing -----------------------------------------------------------------------------

    def add(self, readings: Sequence[Reading]) -> None:
        """Commit `readings` to disk (one transaction), making room first if the spool is full."""
        if not readings:
            return
        rows = [(r.meter, r.ts_ms, int(not _COUNTERS.isdisjoint(r.values)), reading_json(r)) for r in readings]
        self._retry_when_full(lambda: self.db.executemany(
            "INSERT INTO reading(meter, ts_ms, has_counter, body) VALUES (?, ?, ?, ?)", rows))
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
        body = "[" + ",".join(r[2] for r in rows) + "]"
        chain, signed_hash, sig_text = self.chain, None, None
        if self.signer is not None:
            chain = chain or new_chain_id()
            sig, signed_hash = signed_batch.sign(self.signer, self.site, self.gateway, seq, chain, self.prev,
                                                 body.encode())
            sig_text = sig.json_text()
        batch = Batch(seq, len(rows), min(r[1] for r in rows), body, False, sig_text)
        ids = [r[0] for r in rows]

        def move() -> None:
            # Delete first: on a full disk the freed pages make room for the batch row.
            self.db.executemany("DELETE FROM reading WHERE id = ?", [(i,) for i in ids])
            self.db.execute("INSERT INTO batch(seq, n, oldest_ts_ms, body, sig, hash) VALUES (?, ?, ?, ?, ?, ?)",
                            (batch.seq, batch.n, batch.oldest_ts_ms, batch.body, sig_text, signed_hash))
            self._set_meta("next_seq", seq + 1)
            if signed_hash is not None:  # the chain moves with the batch, in the same transaction
                self._set_chain_state("chain", chain)
                self._set_chain_state("prev", signed_hash)
        self._retry_when_full(move)
        if signed_hash is not None:
            self.chain, self.prev = chain, signed_hash
        self.next_seq = seq + 1
        self._write_high_water()
        self.queued -= batch.n
        self.batched += batch.n
        return batch

    def ack(self, seq: int) -> None:
        """The broker has the batch: forget it."""
        row = self.db.execute("SELECT n FROM batch WHERE seq = ?", (seq,)).fetchone()
        if row is not None:
            self.db.execute("DELETE FROM batch WHERE seq = ?", (seq,))
            self.batched -= row[0]

    def mark_published(self, seq: int) -> None:
        """The broker has the batch; it stays until accounting confirms it stored it."""
        self.db.execute("UPDATE batch SET published = 1 WHERE seq = ?", (seq,))

    def confirm(self, seqs: Sequence[int]) -> int:
        """Accounting stored these batches durably: forget them; returns how many readings left."""
        gone = 0
        with self._transaction():
            for seq in seqs:
                row = self.db.execute("DELETE FROM batch WHERE seq = ? RETURNING n", (seq,)).fetchone()
                gone += row[0] if row else 0
        self.batched -= gone
        return gone

    def batch(self, seq: int) -> Batch | None:
        row = self.db.execute(f"SELECT {_BATCH_COLUMNS} FROM batch WHERE seq = ?", (seq,)).fetchone()
        return _batch(row) if row else None

    def pending_batches(self) -> list[Batch]:
        """Batches formed but not confirmed (by a previous run), oldest first."""
        return [_batch(row) for row in self.db.execute(f"SELECT {_BATCH_COLUMNS} FROM batch ORDER BY seq")]

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
                "spool_alarm": self.alarm or self.set_aside is not None, "spool_dropped": self.dropped,
                "spool_set_aside": self.set_aside, "spool_full_errors": self.full_errors,
                "publish_lag_ms": (time.time_ns() // 1_000_000 - oldest) if oldest is not None else 0}
