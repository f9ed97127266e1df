"""Shipments, the units they draw from each lot, and their issued documents, in SQLite.

`shipments.sqlite` in the state directory (`synchronous=FULL`: a declaration an exporter has
filed must not vanish in a crash). An issued document is stored as the exact JSON text issued
and never changed; only its status moves from `issued` to `superseded` (with the version that
replaced it). A draft's draws hold their units like an issued shipment's, so two drafts cannot
promise the same units; deleting a draft frees them.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from accounting.errors import ShipmentExistsError, ShipmentIssuedError, UnknownShipmentError
from accounting.store.state_db import open_state_db

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS shipments (
        shipment_id TEXT PRIMARY KEY, site_id TEXT NOT NULL, date TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('draft', 'issued')),
        declaration TEXT NOT NULL, created_ms INTEGER NOT NULL, current_version INTEGER NOT NULL DEFAULT 0)""",
    """CREATE TABLE IF NOT EXISTS draws (
        shipment_id TEXT NOT NULL REFERENCES shipments(shipment_id) ON DELETE CASCADE,
        line INTEGER NOT NULL, seq INTEGER NOT NULL, site_id TEXT NOT NULL, product_id TEXT NOT NULL,
        lot_kind TEXT NOT NULL, lot_id TEXT NOT NULL, start_ms INTEGER NOT NULL, end_ms INTEGER NOT NULL,
        units INTEGER NOT NULL, lot_units INTEGER NOT NULL, rule TEXT NOT NULL,
        PRIMARY KEY (shipment_id, line, seq))""",
    "CREATE INDEX IF NOT EXISTS draws_lot ON draws (site_id, product_id, lot_id)",
    """CREATE TABLE IF NOT EXISTS documents (
        shipment_id TEXT NOT NULL REFERENCES shipments(shipment_id), version INTEGER NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('issued', 'superseded')),
        issued_ms INTEGER NOT NULL, document TEXT NOT NULL, figures TEXT NOT NULL, dataset TEXT,
        superseded_by INTEGER, superseded_ms INTEGER, PRIMARY KEY (shipment_id, version))""",
)
_DRAW_COLUMNS = ("line", "seq", "site_id", "product_id", "lot_kind", "lot_id", "start_ms", "end_ms", "units",
                 "lot_units", "rule")


class ShipmentStore:
    """Durable shipments; `path=None` keeps them in memory (tests, a service without state)."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = str(path) if path else ":memory:"
        self._lock = threading.Lock()
        self._db = open_state_db(path)
        self._db.execute("PRAGMA foreign_keys=ON")
        for statement in _SCHEMA:
            self._db.execute(statement)

    def _tx(self):  # noqa: ANN202 -- a context manager over one IMMEDIATE transaction
        store = self

        class _Tx:
            def __enter__(self) -> sqlite3.Connection:
                store._lock.acquire()
                store._db.execute("BEGIN IMMEDIATE")
                return store._db

            def __exit__(self, kind, *_: object) -> None:
                try:
                    store._db.execute("ROLLBACK" if kind else "COMMIT")
                finally:
                    store._lock.release()

        return _Tx()

    # -- writes ---------------------------------------------------------------------------

    def add(self, shipments: Iterable[tuple[dict[str, Any], list[dict[str, Any]]]], created_ms: int) -> None:
        """Record shipments (declaration, draws) as drafts, all or none."""
        with self._tx() as db:
            for declaration, draws in shipments:
                sid = declaration["shipment_id"]
                if db.execute("SELECT 1 FROM shipments WHERE shipment_id = ?", (sid,)).fetchone():
                    raise ShipmentExistsError(f"shipment {sid!r} is already recorded (a declaration or invoice "
                                              "number is used once); delete the draft first to replace it")
                db.execute("INSERT INTO shipments (shipment_id, site_id, date, status, declaration, created_ms) "
                           "VALUES (?, ?, ?, 'draft', ?, ?)",
                           (sid, declaration["site_id"], declaration["date"], json.dumps(declaration), created_ms))
                db.executemany(f"INSERT INTO draws (shipment_id, {', '.join(_DRAW_COLUMNS)}) VALUES "
                               f"(?, {', '.join('?' * len(_DRAW_COLUMNS))})",
                               [(sid, *(d[c] for c in _DRAW_COLUMNS)) for d in draws])

    def delete_draft(self, shipment_id: str) -> None:
        with self._tx() as db:
            status = self._status(db, shipment_id)
            if status != "draft":
                raise ShipmentIssuedError(f"shipment {shipment_id!r} is issued: an issued shipment is immutable")
            db.execute("DELETE FROM draws WHERE shipment_id = ?", (shipment_id,))
            db.execute("DELETE FROM shipments WHERE shipment_id = ?", (shipment_id,))

    def issue(self, shipment_id: str, document: dict[str, Any], figures: str, issued_ms: int,
              dataset: str | None = None, supersedes: int | None = None) -> int:
        """Store a document as the shipment's next version; the one it supersedes is marked so."""
        text = json.dumps(document, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        with self._tx() as db:
            status = self._status(db, shipment_id)
            (current,) = db.execute("SELECT current_version FROM shipments WHERE shipment_id = ?",
                                    (shipment_id,)).fetchone()
            if supersedes is None and status != "draft":
                raise ShipmentIssuedError(f"shipment {shipment_id!r} is already issued (version {current})")
            if supersedes is not None and supersedes != current:
                raise ShipmentIssuedError(f"shipment {shipment_id!r}: version {supersedes} is not the current one")
            version = int(current) + 1
            if document.get("version") != version:
                raise ValueError("the document must carry its version")
            if supersedes is not None:
                db.execute("UPDATE documents SET status = 'superseded', superseded_by = ?, superseded_ms = ? "
                           "WHERE shipment_id = ? AND version = ?", (version, issued_ms, shipment_id, supersedes))
            db.execute("INSERT INTO documents (shipment_id, version, status, issued_ms, document, figures, dataset) "
                       "VALUES (?, ?, 'issued', ?, ?, ?, ?)", (shipment_id, version, issued_ms, text, figures, dataset))
            db.execute("UPDATE shipments SET status = 'issued', current_version = ? WHERE shipment_id = ?",
                       (version, shipment_id))
        return version

    @staticmethod
    def _status(db: sqlite3.Connection, shipment_id: str) -> str:
        row = db.execute("SELECT status FROM shipments WHERE shipment_id = ?", (shipment_id,)).fetchone()
        if row is None:
            raise UnknownShipmentError(f"no shipment {shipment_id!r}")
        return str(row[0])

    # -- reads ----------------------------------------------------------------------------

    def shipped(self, site_id: str, product_id: str, lot_id: str, *, excluding: str | None = None) -> dict[str, int]:
        """{shipment id: units} drawn from a lot by recorded shipments."""
        with self._lock:
            rows = self._db.execute("SELECT shipment_id, SUM(units) FROM draws WHERE site_id = ? AND product_id = ? "
                                    "AND lot_id = ? AND shipment_id IS NOT ? GROUP BY shipment_id",
                                    (site_id, product_id, lot_id, excluding)).fetchall()
        return {sid: int(units) for sid, units in rows}

    def shipment(self, shipment_id: str) -> dict[str, Any]:
        with self._lock:
            row = self._db.execute("SELECT shipment_id, site_id, date, status, declaration, created_ms, current_version "
                                   "FROM shipments WHERE shipment_id = ?", (shipment_id,)).fetchone()
            if row is None:
                raise UnknownShipmentError(f"no shipment {shipment_id!r}")
            draws = self._db.execute(f"SELECT {', '.join(_DRAW_COLUMNS)} FROM draws WHERE shipment_id = ? "
                                     "ORDER BY line, seq", (shipment_id,)).fetchall()
        return {"shipment_id": row[0], "site_id": row[1], "date": row[2], "status": row[3],
                "declaration": json.loads(row[4]), "created_ms": row[5], "version": row[6],
                "draws": [dict(zip(_DRAW_COLUMNS, d, strict=True)) for d in draws]}

    def shipments(self, site_id: str | None = None, status: str | None = None) -> list[dict[str, Any]]:
        """Shipments newest first, with each version's status (no documents)."""
        sql = "SELECT shipment_id, site_id, date, status, declaration, created_ms, current_version FROM shipments"
        where, args = [], []
        if site_id is not None:
            where.append("site_id = ?")
            args.append(site_id)
        if status is not None:
            where.append("status = ?")
            args.append(status)
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY date DESC, created_ms DESC", args).fetchall()
            versions = self._db.execute("SELECT shipment_id, version, status, issued_ms, superseded_by FROM documents "
                                        "ORDER BY shipment_id, version").fetchall()
        by_id: dict[str, list[dict[str, Any]]] = {}
        for sid, version, vstatus, issued, by in versions:
            by_id.setdefault(sid, []).append({"version": version, "status": vstatus, "issued_ms": issued,
                                              "superseded_by": by})
        return [{"shipment_id": r[0], "site_id": r[1], "date": r[2], "status": r[3], "declaration": json.loads(r[4]),
                 "created_ms": r[5], "version": r[6], "versions": by_id.get(r[0], [])} for r in rows]

    def versions(self, shipment_id: str) -> list[dict[str, Any]]:
        """Every issued version of a shipment: number, status, when, replaced by."""
        with self._lock:
            rows = self._db.execute("SELECT version, status, issued_ms, superseded_by FROM documents "
                                    "WHERE shipment_id = ? ORDER BY version", (shipment_id,)).fetchall()
        return [{"version": v, "status": st, "issued_ms": t, "superseded_by": by} for v, st, t, by in rows]

    def document(self, shipment_id: str, version: int | None = None) -> tuple[dict[str, Any], str, str | None, int | None]:
        """(document as issued with its current status, figures, dataset, superseded_by)."""
        with self._lock:
            if version is None:
                row = self._db.execute("SELECT current_version FROM shipments WHERE shipment_id = ?",
                                       (shipment_id,)).fetchone()
                if row is None:
                    raise UnknownShipmentError(f"no shipment {shipment_id!r}")
                version = int(row[0])
            found = self._db.execute("SELECT document, status, figures, dataset, superseded_by FROM documents "
                                     "WHERE shipment_id = ? AND version = ?", (shipment_id, version)).fetchone()
        if found is None:
            raise UnknownShipmentError(f"shipment {shipment_id!r} has no issued version {version}")
        doc = json.loads(found[0])
        return {**doc, "status": found[1], "superseded_by": found[4]}, found[2], found[3], found[4]

    def issued(self) -> list[tuple[str, int]]:
        """(shipment id, current version) of every issued shipment."""
        with self._lock:
            return [(r[0], int(r[1])) for r in self._db.execute(
                "SELECT shipment_id, current_version FROM shipments WHERE status = 'issued' ORDER BY shipment_id")]

    def close(self) -> None:
        with self._lock:
            self._db.close()
