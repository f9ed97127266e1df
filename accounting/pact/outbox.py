"""Events to partners, delivered at least once, with exponential backoff that survives restarts.

Every event leaving the host (a Published event, the answer to a RequestCreated event) is
first written to the outbox (SQLite, in the state directory), then delivered by `deliver_due`:
authenticate at the partner (its OpenID configuration's `token_endpoint`, else
`<auth_url>/auth/token`, client credentials by HTTP Basic), POST the CloudEvent to its events
URL. A 2xx marks it delivered. Anything else schedules the next attempt `retry_base_s * 2^n`
later (±20 %, at most an hour apart) in the database, so a restart resumes where it stopped.
An event not delivered within 72 hours is abandoned and logged (the spec: SHOULD NOT retry
for more than 3 days). A request is answered when its row is first processed; the answer is
then stored in the row, so retries send the same event (same CloudEvent id: a partner can
drop duplicates).
"""

from __future__ import annotations

import base64
import json
import logging
import random
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from accounting.pact.clients import EventsTarget
from accounting.pact.events import CONTENT_TYPE
from accounting.store.state_db import open_state_db

log = logging.getLogger(__name__)

GIVE_UP_S = 72 * 3600
#: Delivered and abandoned events are kept this long (for the operator), then pruned.
KEEP_DONE_S = 30 * 86400
MAX_DELAY_S = 3600.0
TIMEOUT_S = 10.0

_SCHEMA = """CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    client_id TEXT NOT NULL,
    kind TEXT NOT NULL,             -- 'event' (ready to send) or 'request' (answer not built yet)
    body TEXT NOT NULL,             -- the CloudEvent to send, or the request event to answer
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'abandoned')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_ms INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    done_ms INTEGER,
    last_error TEXT)"""


@dataclass(frozen=True)
class OutboxRow:
    seq: int
    client_id: str
    kind: str
    body: dict[str, Any]
    state: str
    attempts: int
    next_ms: int
    created_ms: int
    last_error: str | None


class DeliveryError(Exception):
    """A partner did not accept an event (or could not be reached); retried later."""


class Outbox:
    """The durable queue of events to partners; `path=None` keeps it in memory."""

    def __init__(self, path: str | Path | None = None, *, retry_base_s: float = 10.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.retry_base_s = retry_base_s
        self.clock = clock
        self._lock = threading.Lock()
        self._db = open_state_db(path)
        self._db.execute(_SCHEMA)
        self._db.execute("CREATE INDEX IF NOT EXISTS outbox_due ON outbox (state, next_ms)")
        self._tokens: dict[str, tuple[str, float]] = {}  # events url -> (token, valid until)
        self.wake = threading.Event()

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def add(self, client_id: str, kind: str, body: dict[str, Any]) -> int:
        with self._lock:
            cur = self._db.execute("INSERT INTO outbox (client_id, kind, body, next_ms, created_ms) "
                                   "VALUES (?, ?, ?, ?, ?)",
                                   (client_id, kind, json.dumps(body, separators=(",", ":")), self._now_ms(),
                                    self._now_ms()))
        self.wake.set()
        return int(cur.lastrowid)

    def rows(self, state: str | None = None) -> list[OutboxRow]:
        query, args = "SELECT seq, client_id, kind, body, state, attempts, next_ms, created_ms, last_error FROM outbox", ()
        if state is not None:
            query, args = query + " WHERE state = ?", (state,)
        with self._lock:
            found = self._db.execute(query + " ORDER BY seq", args).fetchall()
        return [OutboxRow(r[0], r[1], r[2], json.loads(r[3]), *r[4:]) for r in found]

    def due(self, limit: int = 100) -> list[OutboxRow]:
        """Pending events whose next attempt is due, oldest first (at most `limit`)."""
        with self._lock:
            self._db.execute("DELETE FROM outbox WHERE state != 'pending' AND done_ms < ?",
                             (self._now_ms() - KEEP_DONE_S * 1000,))
            found = self._db.execute(
                "SELECT seq, client_id, kind, body, state, attempts, next_ms, created_ms, last_error FROM outbox "
                "WHERE state = 'pending' AND next_ms <= ? ORDER BY seq LIMIT ?", (self._now_ms(), limit)).fetchall()
        return [OutboxRow(r[0], r[1], r[2], json.loads(r[3]), *r[4:]) for r in found]

    def next_due_s(self) -> float | None:
        """Seconds until the next pending attempt (None: nothing pending)."""
        with self._lock:
            row = self._db.execute("SELECT MIN(next_ms) FROM outbox WHERE state = 'pending'").fetchone()
        return None if row[0] is None else max(0.0, (row[0] - self._now_ms()) / 1000)

    def answered(self, seq: int, event: dict[str, Any]) -> None:
        """Store the built answer of a request row: from now on it is an ordinary event."""
        with self._lock:
            self._db.execute("UPDATE outbox SET kind = 'event', body = ? WHERE seq = ?",
                             (json.dumps(event, separators=(",", ":")), seq))

    def delivered(self, seq: int) -> None:
        with self._lock:
            self._db.execute("UPDATE outbox SET state = 'delivered', done_ms = ?, attempts = attempts + 1, "
                             "last_error = NULL WHERE seq = ?", (self._now_ms(), seq))

    def failed(self, row: OutboxRow, error: str) -> None:
        """Schedule the next attempt (or abandon after 72 h)."""
        now = self._now_ms()
        attempts = row.attempts + 1
        if now - row.created_ms >= GIVE_UP_S * 1000:
            with self._lock:
                self._db.execute("UPDATE outbox SET state = 'abandoned', done_ms = ?, attempts = ?, last_error = ? "
                                 "WHERE seq = ?", (now, attempts, error[:500], row.seq))
            log.error("PACT: gave up event %d to %s after %d attempts over 72 h: %s", row.seq, row.client_id,
                      attempts, error)
            return
        delay = min(MAX_DELAY_S, self.retry_base_s * 2 ** (attempts - 1)) * random.uniform(0.8, 1.2)
        with self._lock:
            self._db.execute("UPDATE outbox SET attempts = ?, next_ms = ?, last_error = ? WHERE seq = ?",
                             (attempts, now + int(delay * 1000), error[:500], row.seq))
        log.warning("PACT: event %d to %s not delivered (attempt %d: %s); next try in %.0f s", row.seq,
                    row.client_id, attempts, error, delay)

    # -- delivery -------------------------------------------------------------------------

    def send(self, target: EventsTarget, event: dict[str, Any]) -> None:
        """POST one event to a partner; raises DeliveryError unless it answers 2xx."""
        context = ssl.create_default_context(cafile=target.ca_file) if target.ca_file else None
        for attempt in (1, 2):
            token = self._token(target, context)
            request = urllib.request.Request(
                target.url, data=json.dumps(event, ensure_ascii=False).encode(), method="POST",
                headers={"Content-Type": CONTENT_TYPE, "Authorization": f"Bearer {token}"})
            try:
                with urllib.request.urlopen(request, timeout=TIMEOUT_S, context=context) as resp:
                    resp.read(65536)
                    return
            except urllib.error.HTTPError as exc:
                if exc.code == 401 and attempt == 1:
                    self._tokens.pop(target.url, None)  # our token expired there: log in again
                    continue
                raise DeliveryError(f"{target.url} answered {exc.code}: {exc.read(300)!r}") from None
            except (urllib.error.URLError, OSError) as exc:
                raise DeliveryError(f"{target.url}: {getattr(exc, 'reason', exc)}") from None

    def _token(self, target: EventsTarget, context: ssl.SSLContext | None) -> str:
        cached = self._tokens.get(target.url)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        endpoint = self._token_endpoint(target, context)
        basic = base64.b64encode(f"{urllib.parse.quote(target.client_id)}:"
                                 f"{urllib.parse.quote(target.client_secret)}".encode()).decode()
        request = urllib.request.Request(endpoint, data=b"grant_type=client_credentials", method="POST",
                                         headers={"Content-Type": "application/x-www-form-urlencoded",
                                                  "Accept": "application/json", "Authorization": f"Basic {basic}"})
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S, context=context) as resp:
                body = json.loads(resp.read(65536))
        except urllib.error.HTTPError as exc:
            raise DeliveryError(f"login at {endpoint} answered {exc.code}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise DeliveryError(f"login at {endpoint}: {getattr(exc, 'reason', exc)}") from None
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str):
            raise DeliveryError(f"login at {endpoint}: no access_token in the answer")
        lifetime = body.get("expires_in") if isinstance(body.get("expires_in"), int | float) else 300
        self._tokens[target.url] = (token, time.monotonic() + max(0.0, float(lifetime) - 30))
        return token

    @staticmethod
    def _token_endpoint(target: EventsTarget, context: ssl.SSLContext | None) -> str:
        """The partner's OpenID `token_endpoint`, else `<auth_url>/auth/token` (v3 Authenticate)."""
        try:
            with urllib.request.urlopen(f"{target.auth_url}/.well-known/openid-configuration",
                                        timeout=TIMEOUT_S, context=context) as resp:
                endpoint = json.loads(resp.read(65536)).get("token_endpoint")
                if isinstance(endpoint, str) and endpoint.startswith(("https://", "http://")):
                    return endpoint
        except (urllib.error.URLError, OSError, ValueError, AttributeError):
            pass
        return f"{target.auth_url}/auth/token"
