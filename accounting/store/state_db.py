"""Opening the service's small durable SQLite files one way: ledger, alarms, PACT publications and
outbox, shipments.

Each holds what an auditor or a partner relies on (a claim, an issued document, an announced
footprint), so a write must survive a power cut: WAL with `synchronous=FULL`. Threads of the
API and the service share one connection behind the owner's lock; `isolation_level=None` leaves
the transactions to the owner. No path (or ":memory:") keeps the file in memory for tests.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path


def open_state_db(path: str | Path | None) -> sqlite3.Connection:
    """A connection to `path` (in memory when None or ":memory:"), durable on every commit."""
    name = str(path) if path else ":memory:"
    conn = sqlite3.connect(name, timeout=30, check_same_thread=False, isolation_level=None)
    if name != ":memory:":
        conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    return conn
