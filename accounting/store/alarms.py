"""The operator's log: alarms (raised, cleared, acknowledged) and what changed in the plant.

An alarm is something an operator can act on (a meter offline, a gateway's backlog, a
negative remainder beyond the meters' accuracy, a counter that jumped or went backwards).
Its history must survive a restart exactly as the ledger does — who acknowledged what, and
when — so it lives in a small SQLite file beside the ledger (`alarms.sqlite`), whatever the
reading store is.

Two kinds of alarm: a *condition* (a meter offline) clears itself when the condition ends;
an *event* (a counter went backwards) stays active until someone acknowledges it. At most
one alarm per (site, kind, subject) is active: raising it again only refreshes it.

A *change* is information, not an alarm: a line started or stopped, the grid factor changed
with the hour, a meter went offline or came back, energy was estimated over a gap.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, Literal

from accounting.errors import UnknownAlarmError
from accounting.store.state_db import open_state_db

Severity = Literal["alarm", "warning", "info"]
SEVERITIES: tuple[str, ...] = ("alarm", "warning", "info")

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS alarms (
        id INTEGER PRIMARY KEY AUTOINCREMENT, site_id TEXT NOT NULL, kind TEXT NOT NULL,
        subject TEXT NOT NULL, severity TEXT NOT NULL, latching INTEGER NOT NULL,
        message TEXT NOT NULL, detail TEXT NOT NULL, raised_ms INTEGER NOT NULL,
        last_seen_ms INTEGER NOT NULL, cleared_ms INTEGER, acked_ms INTEGER, acked_by TEXT,
        ack_note TEXT)""",
    """CREATE UNIQUE INDEX IF NOT EXISTS alarms_active ON alarms (site_id, kind, subject)
        WHERE cleared_ms IS NULL""",
    "CREATE INDEX IF NOT EXISTS alarms_raised ON alarms (raised_ms)",
    """CREATE TABLE IF NOT EXISTS changes (
        id INTEGER PRIMARY KEY AUTOINCREMENT, site_id TEXT NOT NULL, ts_ms INTEGER NOT NULL,
        kind TEXT NOT NULL, subject TEXT NOT NULL, message TEXT NOT NULL, detail TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS changes_ts ON changes (site_id, ts_ms)",
)
_ALARM_COLUMNS = ("id", "site_id", "kind", "subject", "severity", "latching", "message", "detail",
                  "raised_ms", "last_seen_ms", "cleared_ms", "acked_ms", "acked_by", "ack_note")


def _now_ms() -> int:
    return int(time.time() * 1000)


class AlarmStore:
    """SQLite-backed alarms and changes. ``":memory:"`` keeps them for the process only.

    Thread-safe (one connection, one lock): the service's watch writes on the engine thread,
    the API reads and acknowledges from its worker threads.
    """

    def __init__(self, path: str | Path = ":memory:") -> None:
        self.path = str(path)
        self._lock = threading.Lock()
        self._conn = open_state_db(self.path)
        for statement in _SCHEMA:
            self._conn.execute(statement)

    # -- alarms ------------------------------------------------------------------------------

    def raise_alarm(self, site_id: str, kind: str, subject: str, *, severity: Severity, message: str,
                    detail: dict[str, Any] | None = None, latching: bool = False,
                    now_ms: int | None = None) -> tuple[int, bool]:
        """Raise (or refresh) the active alarm of (site, kind, subject): (its id, newly raised?)."""
        now = _now_ms() if now_ms is None else now_ms
        text = json.dumps(detail or {}, ensure_ascii=False, separators=(",", ":"))
        with self._lock:
            row = self._conn.execute(
                "SELECT id FROM alarms WHERE site_id = ? AND kind = ? AND subject = ? AND cleared_ms IS NULL",
                (site_id, kind, subject)).fetchone()
            if row is not None:
                self._conn.execute("UPDATE alarms SET last_seen_ms = ?, message = ?, detail = ? WHERE id = ?",
                                   (now, message, text, row[0]))
                return int(row[0]), False
            cur = self._conn.execute(
                "INSERT INTO alarms (site_id, kind, subject, severity, latching, message, detail, raised_ms,"
                " last_seen_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (site_id, kind, subject, severity, int(latching), message, text, now, now))
            return int(cur.lastrowid or 0), True

    def clear_alarm(self, site_id: str, kind: str, subject: str, now_ms: int | None = None) -> bool:
        """End the active condition alarm of (site, kind, subject); False when none was active."""
        now = _now_ms() if now_ms is None else now_ms
        with self._lock:
            cur = self._conn.execute(
                "UPDATE alarms SET cleared_ms = ? WHERE site_id = ? AND kind = ? AND subject = ?"
                " AND cleared_ms IS NULL AND latching = 0", (now, site_id, kind, subject))
            return cur.rowcount > 0

    def acknowledge(self, alarm_id: int, by: str, note: str = "", now_ms: int | None = None) -> dict[str, Any]:
        """Record who acknowledged an alarm; a latching (event) alarm ends with it. Idempotent:
        a second acknowledgement keeps the first one's name and time."""
        now = _now_ms() if now_ms is None else now_ms
        with self._lock:
            row = self._conn.execute("SELECT latching, acked_ms FROM alarms WHERE id = ?", (alarm_id,)).fetchone()
            if row is None:
                raise UnknownAlarmError(alarm_id)
            if row[1] is None:
                self._conn.execute(
                    "UPDATE alarms SET acked_ms = ?, acked_by = ?, ack_note = ?,"
                    " cleared_ms = CASE WHEN latching = 1 AND cleared_ms IS NULL THEN ? ELSE cleared_ms END"
                    " WHERE id = ?", (now, by, note, now, alarm_id))
        return self.alarm(alarm_id)

    def alarm(self, alarm_id: int) -> dict[str, Any]:
        with self._lock:
            row = self._conn.execute(f"SELECT {', '.join(_ALARM_COLUMNS)} FROM alarms WHERE id = ?",
                                     (alarm_id,)).fetchone()
        if row is None:
            raise UnknownAlarmError(alarm_id)
        return _alarm_dict(row)

    def alarms(self, site_id: str | None = None, *, active: bool | None = None, since_ms: int | None = None,
               limit: int = 200) -> list[dict[str, Any]]:
        """Newest first. `active`: True only active ones, False only ended ones, None both;
        `since_ms`: raised at or after (ended alarms), active ones are never cut off by it."""
        where, args = [], []
        if site_id is not None:
            where.append("site_id = ?")
            args.append(site_id)
        if active is True:
            where.append("cleared_ms IS NULL")
        elif active is False:
            where.append("cleared_ms IS NOT NULL")
        if since_ms is not None:
            where.append("(raised_ms >= ? OR cleared_ms IS NULL)")
            args.append(since_ms)
        sql = (f"SELECT {', '.join(_ALARM_COLUMNS)} FROM alarms"
               + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY raised_ms DESC, id DESC LIMIT ?")
        with self._lock:
            rows = self._conn.execute(sql, (*args, limit)).fetchall()
        return [_alarm_dict(r) for r in rows]

    def active_subjects(self, site_id: str, kind: str) -> set[str]:
        """Subjects of the active alarms of one kind (the watch's state after a restart)."""
        with self._lock:
            rows = self._conn.execute("SELECT subject FROM alarms WHERE site_id = ? AND kind = ?"
                                      " AND cleared_ms IS NULL", (site_id, kind)).fetchall()
        return {r[0] for r in rows}

    def ever_raised(self, site_id: str, kind: str, subject: str) -> bool:
        """Whether an alarm of (site, kind, subject) was ever raised, active or ended: an event
        found again (after a restart, or after its acknowledgement) is not raised twice."""
        with self._lock:
            row = self._conn.execute("SELECT 1 FROM alarms WHERE site_id = ? AND kind = ? AND subject = ? LIMIT 1",
                                     (site_id, kind, subject)).fetchone()
        return row is not None

    # -- changes -----------------------------------------------------------------------------

    def record_change(self, site_id: str, kind: str, subject: str, message: str,
                      detail: dict[str, Any] | None = None, ts_ms: int | None = None) -> int:
        ts = _now_ms() if ts_ms is None else ts_ms
        with self._lock:
            cur = self._conn.execute(
                "INSERT INTO changes (site_id, ts_ms, kind, subject, message, detail) VALUES (?, ?, ?, ?, ?, ?)",
                (site_id, ts, kind, subject, message,
                 json.dumps(detail or {}, ensure_ascii=False, separators=(",", ":"))))
            return int(cur.lastrowid or 0)

    def changes(self, site_id: str | None = None, *, since_ms: int | None = None, until_ms: int | None = None,
                limit: int = 100) -> list[dict[str, Any]]:
        """Newest first, at most `limit`."""
        where, args = [], []
        if site_id is not None:
            where.append("site_id = ?")
            args.append(site_id)
        if since_ms is not None:
            where.append("ts_ms >= ?")
            args.append(since_ms)
        if until_ms is not None:
            where.append("ts_ms < ?")
            args.append(until_ms)
        sql = ("SELECT id, site_id, ts_ms, kind, subject, message, detail FROM changes"
               + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY ts_ms DESC, id DESC LIMIT ?")
        with self._lock:
            rows = self._conn.execute(sql, (*args, limit)).fetchall()
        return [{"id": r[0], "site_id": r[1], "ts_ms": r[2], "kind": r[3], "subject": r[4], "message": r[5],
                 "detail": json.loads(r[6])} for r in rows]

    def last_change(self, site_id: str, kind: str, subject: str) -> dict[str, Any] | None:
        with self._lock:
            r = self._conn.execute("SELECT id, site_id, ts_ms, kind, subject, message, detail FROM changes"
                                   " WHERE site_id = ? AND kind = ? AND subject = ? ORDER BY ts_ms DESC, id DESC"
                                   " LIMIT 1", (site_id, kind, subject)).fetchone()
        if r is None:
            return None
        return {"id": r[0], "site_id": r[1], "ts_ms": r[2], "kind": r[3], "subject": r[4], "message": r[5],
                "detail": json.loads(r[6])}

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _alarm_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    d = dict(zip(_ALARM_COLUMNS, row, strict=True))
    d["detail"] = json.loads(d["detail"])
    d["latching"] = bool(d["latching"])
    d["active"] = d["cleared_ms"] is None
    return d
