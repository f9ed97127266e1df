"""Readings stamped earlier than they were taken: a gateway clock that went backwards.

A gateway forms its batches from its spool in the order it polled, and numbers them +1 each
(`seq`, kept across restarts; a replay keeps its number). So for one meter of one gateway, a
reading in a later batch was taken after every reading of that meter in earlier batches. When
such a reading carries an *older* timestamp than one of those, the gateway's clock went
backwards between the two polls (an operator setting it by hand, NTP stepping it, a failing
RTC). Stored as it is, it lands in the past: a clock stepped back one hour for 60 s put 420
readings an hour early, where their counter values made backwards steps the engine booked as
resets (issue #14 item 5: 30,415 units for 49, 30 % of the incomer's energy missing).

Such a reading is quarantined as `clock_backwards` (counted, kept with its reason) instead of
stored. Totals stay right because the readings are cumulative registers: the next reading
stamped in order carries everything the meter counted meanwhile, so dropping the misstamped
ones loses only how that energy is spread over the minutes, never the energy. Gateways stamp
readings with a clock bridged by the monotonic one (gateway/clock.py), so this is the second
line: for gateways without it, and for the one step a gateway takes when its wall clock stays
off long enough to count as a correction.

A backlog replayed after an outage has earlier timestamps *and* earlier `seq`: it is not
flagged. A gateway whose numbering starts again (a replaced spool) is not either (its `seq`
is lower).

The order per (site, gateway, meter) survives restarts: with a `path` (the service's state
directory, `meter_order.sqlite`) what admission learnt is written by `flush` at the end of a
cycle's admission, before its readings are stored and acknowledged, at most once every
`FLUSH_INTERVAL_S` (writing every meter's row each cycle cost ~6 ms per 1,000 meters, a
tenth or more of the ingest path at tens of thousands of readings per second), by the
service's jobs once a second when ingest goes quiet, and on close. After a crash the order is
about that interval behind. Being ahead of the store is harmless (a redelivered batch has the same `seq`, not a later one, so it is never
taken for a clock gone backwards); being behind would let the first misstamped batch after a
restart slip through, which is what an order kept only in memory did (a backwards reading
right after a restart was stored as good). The file is a cache of what admission has seen: a
corrupt one is set aside (`.bad-<time>`) with a warning and the order is learnt again.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Sequence
from itertools import repeat
from pathlib import Path
from typing import Protocol

from accounting.store.state_db import open_state_db

log = logging.getLogger(__name__)

#: At most one write of the order per this many seconds (and one at close).
FLUSH_INTERVAL_S = 1.0

_SCHEMA = """CREATE TABLE IF NOT EXISTS meter_order (
    site TEXT NOT NULL, gateway TEXT NOT NULL, meter TEXT NOT NULL, ts_ms INTEGER NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY (site, gateway, meter)) WITHOUT ROWID"""


class _Reading(Protocol):
    meter: str
    ts_ms: int


class MeterOrder:
    """Per (site, gateway, meter): the newest timestamp admitted and the batch it came in;
    durable in `path` when given (else in memory only)."""

    def __init__(self, path: str | Path | None = None) -> None:
        # Per (site, gateway): meter → newest timestamp admitted, and meter → the batch it came
        # in (two dicts keyed by the meter's id, so a batch is learnt by two `dict.update`s of
        # C loops, no tuple made per reading).
        self._ts: dict[tuple[str, str], dict[str, int]] = {}
        self._seq: dict[tuple[str, str], dict[str, int]] = {}
        # Per (site, gateway): the newest timestamp of any of its meters. A batch stamped at or
        # after it has no reading before one of its meters' (the fast path of `backwards`/`learn`).
        self._span: dict[tuple[str, str], int] = {}
        self._dirty: dict[tuple[str, str], set[str]] = {}
        self._db: sqlite3.Connection | None = None
        self._flushed_at = 0.0
        self._lock = threading.Lock()  # learn (admission) and a periodic flush (the service's jobs)
        if path is not None and str(path) != ":memory:":
            self._db = self._open(Path(path))

    def _open(self, path: Path) -> sqlite3.Connection:
        try:
            db = _connect(path)
            rows = db.execute("SELECT site, gateway, meter, ts_ms, seq FROM meter_order").fetchall()
        except sqlite3.DatabaseError as exc:
            aside = path.with_name(f"{path.name}.bad-{time.strftime('%Y%m%dT%H%M%S')}")
            path.rename(aside)
            log.warning("meter order file %s is unreadable (%s): kept as %s; the order of each meter's "
                        "readings is learnt again from the next batches", path, exc, aside)
            db = _connect(path)
            rows = []
        for site, gw, meter, ts, seq in rows:
            key = (site, gw)
            self._ts.setdefault(key, {})[meter] = int(ts)
            self._seq.setdefault(key, {})[meter] = int(seq)
            if int(ts) > self._span.get(key, int(ts) - 1):
                self._span[key] = int(ts)
        if rows:
            log.info("meter order restored: the newest reading of %d meters and its batch", len(rows))
        return db

    def known(self) -> dict[tuple[str, str, str], tuple[int, int]]:
        """Per (site, gateway, meter): (ts_ms, seq) of its newest reading admitted (what `flush` keeps)."""
        return {(site, gw, meter): (ts, self._seq[(site, gw)][meter])
                for (site, gw), stamps in self._ts.items() for meter, ts in stamps.items()}

    def flush(self, force: bool = False) -> None:
        """Write what was learnt since the last write (one transaction; nothing without a path),
        unless the last write is less than `FLUSH_INTERVAL_S` old and not `force`."""
        if self._db is None or not self._dirty:
            return
        now = time.monotonic()
        if not force and now - self._flushed_at < FLUSH_INTERVAL_S:
            return
        self._flushed_at = now
        with self._lock:
            rows = [(site, gw, meter, self._ts[(site, gw)][meter], self._seq[(site, gw)][meter])
                    for (site, gw), meters in self._dirty.items() for meter in meters]
            self._dirty.clear()
            with self._db:
                self._db.executemany("INSERT OR REPLACE INTO meter_order VALUES (?, ?, ?, ?, ?)", rows)

    def close(self) -> None:
        """Flush and close the file."""
        if self._db is not None:
            self.flush(force=True)
            self._db.close()
            self._db = None

    def backwards(self, site: str, gateway: str, seq: int, readings: Sequence[_Reading],
                  earliest: int | None = None) -> list[int]:
        """Indexes of the readings of batch `seq` stamped before a reading of the same meter
        from an earlier batch (does not learn; see `learn`). `earliest`: the readings' earliest
        timestamp when the caller has it (admission's compiled pass)."""
        span = self._span.get((site, gateway))
        if span is None or not readings:
            return []
        if (earliest if earliest is not None else min([r.ts_ms for r in readings])) >= span:
            return []  # none older than the newest reading of any of the gateway's meters: no lookups
        newest_ts, newest_seq = self._ts.get((site, gateway), {}), self._seq.get((site, gateway), {})
        out = []
        for i, r in enumerate(readings):
            known = newest_ts.get(r.meter)
            if known is not None and seq > newest_seq[r.meter] and r.ts_ms < known:
                out.append(i)
        return out

    def learn(self, site: str, gateway: str, seq: int, readings: Sequence[_Reading],
              columns: tuple[list[str], list[int]] | None = None) -> None:
        """Remember the admitted readings of batch `seq`; `columns`: their meters and timestamps
        when the caller has them (admission's compiled pass), else read from the readings.

        As a rule every reading of a batch is newer than everything its gateway sent before and
        names another meter: then each simply becomes its meter's newest, in two dict updates
        (per reading, the general rule cost a lookup, a comparison and a store in Python)."""
        if not readings:
            return
        key = (site, gateway)
        if columns is not None:
            meters, stamps = columns
        else:
            stamps = [r.ts_ms for r in readings]
            meters = [r.meter for r in readings]
        span = self._span.get(key)
        with self._lock:
            newest_ts = self._ts.get(key)
            if newest_ts is None:
                newest_ts = self._ts[key] = {}
                self._seq[key] = {}
            newest_seq = self._seq[key]
            dirty = self._dirty.get(key)
            if dirty is None:
                dirty = self._dirty[key] = set()
            if span is None or min(stamps) > span:
                distinct = set(meters)
                if len(distinct) == len(meters):  # one reading per meter
                    dirty |= distinct
                    newest_ts.update(zip(meters, stamps, strict=True))
                    newest_seq.update(zip(meters, repeat(seq, len(meters)), strict=True))
                    self._span[key] = max(stamps)
                    return
            for meter, ts in zip(meters, stamps, strict=True):
                known = newest_ts.get(meter)
                if known is None or ts > known or (ts == known and seq > newest_seq[meter]):
                    newest_ts[meter] = ts
                    newest_seq[meter] = seq
                    dirty.add(meter)
            top = max(stamps)
            if span is None or top > span:
                self._span[key] = top


def _connect(path: Path) -> sqlite3.Connection:
    """The state file, synchronous=NORMAL: a commit survives the process being killed (what a
    restart needs); after a power cut the order is at worst a little behind, as before."""
    db = open_state_db(path)
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute(_SCHEMA)
    db.isolation_level = "DEFERRED"
    return db
