"""Bearer tokens of PACT clients: an hour each, at most a few per client, valid across restarts.

A partner's system logs in once and uses its token for an hour; a restart of the plant's
accounting service must not log every partner out, so tokens are kept in a small SQLite file
(only the SHA-256 of each token is stored: the file does not hold usable credentials).
Expiry uses wall-clock time, which is what survives a restart.

Each client holds at most `per_client` live tokens; a new login beyond that retires that
client's oldest token. One client logging in 10,000 times therefore retires only its own
tokens, never another client's (the adversarial pass saw one client evict everyone's).
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

LIFETIME_S = 3600
PER_CLIENT = 16

_SCHEMA = """CREATE TABLE IF NOT EXISTS tokens (
    digest BLOB PRIMARY KEY, client_id TEXT NOT NULL, issued_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL)"""

TokenState = Literal["ok", "expired"]


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class TokenStore:
    """Issue and check bearer tokens; `path=None` keeps them in memory only."""

    def __init__(self, path: str | Path | None = None, *, lifetime_s: int = LIFETIME_S,
                 per_client: int = PER_CLIENT, clock: Callable[[], float] = time.time) -> None:
        self.lifetime_s = lifetime_s
        self.per_client = per_client
        self.clock = clock
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path) if path else ":memory:", check_same_thread=False,
                                   isolation_level=None, timeout=30)
        if path:
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(_SCHEMA)
        self._db.execute("CREATE INDEX IF NOT EXISTS tokens_client ON tokens (client_id, issued_ms)")

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def issue(self, client_id: str) -> str:
        """A new token for `client_id`; its oldest tokens beyond the cap are retired."""
        token = secrets.token_urlsafe(32)
        now = self._now_ms()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("DELETE FROM tokens WHERE expires_ms <= ?", (now,))
                self._db.execute("INSERT INTO tokens VALUES (?, ?, ?, ?)",
                                 (_digest(token), client_id, now, now + self.lifetime_s * 1000))
                self._db.execute(
                    "DELETE FROM tokens WHERE client_id = ? AND digest NOT IN (SELECT digest FROM tokens "
                    "WHERE client_id = ? ORDER BY issued_ms DESC, rowid DESC LIMIT ?)",
                    (client_id, client_id, self.per_client))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return token

    def check(self, token: str) -> tuple[TokenState, str] | None:
        """("ok" | "expired", client id), or None for a token never issued (or retired)."""
        with self._lock:
            row = self._db.execute("SELECT client_id, expires_ms FROM tokens WHERE digest = ?",
                                   (_digest(token),)).fetchone()
        if row is None:
            return None
        return ("ok" if row[1] > self._now_ms() else "expired", row[0])

    def count(self, client_id: str | None = None) -> int:
        """Live tokens held (of one client, or all)."""
        query, args = "SELECT COUNT(*) FROM tokens WHERE expires_ms > ?", [self._now_ms()]
        if client_id is not None:
            query += " AND client_id = ?"
            args.append(client_id)
        with self._lock:
            return int(self._db.execute(query, args).fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
