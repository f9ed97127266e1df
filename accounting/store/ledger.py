"""The durable ledger: certificate claims, contracts, loaded factor datasets, recomputed results.

What an operator *did* through the write API must survive a restart exactly as the readings
do: a certificate serial claimed before a restart is still claimed after it (ACCOUNTING.md
§4: no serial claimed twice across products, sites and recomputations), a factor dataset
version once loaded keeps its content, and a recomputed result keeps its version. One small
SQLite file beside the checkpoints, whatever the reading store is (InfluxDB has no unique
constraint to hold a claim).

The database, not the process, decides a claim: a serial is the primary key of `claims`, so
two accounting processes sharing the file still cannot both claim it.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from accounting.errors import CertificateAlreadyClaimedError, FactorVersionConflictError
from accounting.store.state_db import open_state_db

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS claims (
        serial TEXT PRIMARY KEY, site_id TEXT NOT NULL, claimant TEXT NOT NULL,
        generation_month TEXT NOT NULL, technology TEXT NOT NULL, province TEXT NOT NULL,
        mwh REAL NOT NULL, earmark TEXT, contract_id TEXT, claimed_ms INTEGER NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS contracts (
        contract_id TEXT PRIMARY KEY, site_id TEXT NOT NULL, document TEXT NOT NULL,
        added_ms INTEGER NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS factor_datasets (
        dataset_id TEXT NOT NULL, version TEXT NOT NULL, digest TEXT NOT NULL,
        document TEXT NOT NULL, added_ms INTEGER NOT NULL, PRIMARY KEY (dataset_id, version))""",
    """CREATE TABLE IF NOT EXISTS results (
        site_id TEXT NOT NULL, result_version INTEGER NOT NULL, result_id TEXT NOT NULL,
        dataset_id TEXT NOT NULL, dataset_version TEXT NOT NULL, start_ms INTEGER NOT NULL,
        end_ms INTEGER NOT NULL, computed_ms INTEGER NOT NULL, document TEXT NOT NULL,
        PRIMARY KEY (site_id, result_version))""",
)
_CLAIM_COLUMNS = ("serial", "site_id", "claimant", "generation_month", "technology", "province",
                  "mwh", "earmark", "contract_id", "claimed_ms", "detail")


def _now_ms() -> int:
    return int(time.time() * 1000)


class LedgerStore:
    """SQLite-backed claims, contracts, factor dataset documents and recomputed results.

    ``path`` may be ``":memory:"`` (a service without a state directory: writes work, but do
    not survive the process). Thread-safe (one connection, one lock).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._lock = threading.Lock()
        self._conn = open_state_db(self.path)
        for statement in _SCHEMA:
            self._conn.execute(statement)
        # `detail` (JSON: tradable, project, cancellation period, counted) came after the first release
        if "detail" not in {r[1] for r in self._conn.execute("PRAGMA table_info(claims)")}:
            self._conn.execute("ALTER TABLE claims ADD COLUMN detail TEXT")

    # -- certificate claims --------------------------------------------------------------

    def claim(self, rows: list[dict[str, Any]], contract: dict[str, Any] | None = None) -> None:
        """Record claims (each a dict of the `claims` columns), all or none, plus the contract
        they are bundled with. Raises CertificateAlreadyClaimedError for a serial claimed before."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                for row in rows:
                    known = self._conn.execute("SELECT claimant FROM claims WHERE serial = ?",
                                               (row["serial"],)).fetchone()
                    if known is not None:
                        raise CertificateAlreadyClaimedError(row["serial"], known[0])
                    self._conn.execute(
                        f"INSERT INTO claims ({', '.join(_CLAIM_COLUMNS)}) VALUES ({', '.join('?' * len(_CLAIM_COLUMNS))})",
                        tuple(json.dumps(row.get(c)) if c == "detail" and row.get(c) is not None
                              else row.get(c) for c in _CLAIM_COLUMNS))
                if contract is not None:
                    self._conn.execute("INSERT INTO contracts VALUES (?, ?, ?, ?)",
                                       (contract["contract_id"], contract["site_id"],
                                        json.dumps(contract), _now_ms()))
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def claimant_of(self, serial: str) -> str | None:
        with self._lock:
            row = self._conn.execute("SELECT claimant FROM claims WHERE serial = ?", (serial,)).fetchone()
        return row[0] if row else None

    def claims(self, site_id: str | None = None) -> list[dict[str, Any]]:
        """Claims in claim order (one site's, or all)."""
        sql = f"SELECT {', '.join(_CLAIM_COLUMNS)} FROM claims"
        args: tuple = ()
        if site_id is not None:
            sql, args = sql + " WHERE site_id = ?", (site_id,)
        with self._lock:
            rows = self._conn.execute(sql + " ORDER BY claimed_ms, rowid", args).fetchall()
        out = [dict(zip(_CLAIM_COLUMNS, r, strict=True)) for r in rows]
        for row in out:
            row["detail"] = json.loads(row["detail"]) if row["detail"] else None
        return out

    def contracts(self, site_id: str | None = None) -> list[dict[str, Any]]:
        sql, args = "SELECT document FROM contracts", ()
        if site_id is not None:
            sql, args = sql + " WHERE site_id = ?", (site_id,)
        with self._lock:
            rows = self._conn.execute(sql + " ORDER BY added_ms, rowid", args).fetchall()
        return [json.loads(r[0]) for r in rows]

    # -- factor datasets -----------------------------------------------------------------

    def add_dataset(self, document: dict[str, Any], digest: str) -> bool:
        """Keep a dataset document; False when this exact content is already kept.
        Different content under a kept (id, version) raises FactorVersionConflictError."""
        key = (str(document["dataset_id"]), str(document["version"]))
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                known = self._conn.execute("SELECT digest FROM factor_datasets WHERE dataset_id = ? "
                                           "AND version = ?", key).fetchone()
                if known is not None and known[0] != digest:
                    raise FactorVersionConflictError(
                        f"{key[0]} version {key[1]} is already loaded with different content; "
                        "publish the correction as a new version")
                if known is None:
                    self._conn.execute("INSERT INTO factor_datasets VALUES (?, ?, ?, ?, ?)",
                                       (*key, digest, json.dumps(document), _now_ms()))
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
        return known is None

    def datasets(self) -> list[tuple[dict[str, Any], int]]:
        """(document, added_ms) of every loaded dataset, in load order."""
        with self._lock:
            rows = self._conn.execute("SELECT document, added_ms FROM factor_datasets "
                                      "ORDER BY added_ms, rowid").fetchall()
        return [(json.loads(d), int(t)) for d, t in rows]

    # -- recomputed results --------------------------------------------------------------

    def add_result(self, document: dict[str, Any], min_version: int = 1) -> int:
        """Store a result under the site's next version (at least ``min_version``); returns it."""
        site = document["site_id"]
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                (last,) = self._conn.execute("SELECT COALESCE(MAX(result_version), 0) FROM results "
                                             "WHERE site_id = ?", (site,)).fetchone()
                version = max(int(last) + 1, min_version)
                document = {**document, "result_version": version, "revision": version}
                self._conn.execute("INSERT INTO results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                   (site, version, document["result_id"], document["dataset_id"],
                                    document["dataset_version"], document["start_ms"], document["end_ms"],
                                    document["computed_ms"], json.dumps(document, default=float)))
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
        return version

    def results(self, site_id: str | None = None) -> list[dict[str, Any]]:
        """Every stored result (without its footprints), oldest first."""
        sql = ("SELECT site_id, result_version, result_id, dataset_id, dataset_version, start_ms, "
               "end_ms, computed_ms FROM results")
        args: tuple = ()
        if site_id is not None:
            sql, args = sql + " WHERE site_id = ?", (site_id,)
        with self._lock:
            rows = self._conn.execute(sql + " ORDER BY computed_ms, site_id, result_version", args).fetchall()
        keys = ("site_id", "result_version", "result_id", "dataset_id", "dataset_version", "start_ms",
                "end_ms", "computed_ms")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def result(self, site_id: str, result_version: int) -> dict[str, Any] | None:
        with self._lock:
            row = self._conn.execute("SELECT document FROM results WHERE site_id = ? AND result_version = ?",
                                     (site_id, result_version)).fetchone()
        return json.loads(row[0]) if row else None

    def close(self) -> None:
        with self._lock:
            self._conn.close()
