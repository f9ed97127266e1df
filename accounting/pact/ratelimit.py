"""Failed logins are limited per client id and per address; logins per client are limited too.

Without a limit a client could try secrets as fast as the server answers (300 wrong secrets at
619/s in the adversarial pass, then the right one worked). Here each key (`client:<id>`,
`addr:<ip>`) may fail `max_failures` times within `window_s`; beyond that every attempt with
that key, right secret or not, answers 429 until the oldest failure leaves the window. A
lockout does not touch tokens already issued. Memory is bounded: at most `max_keys` keys are
tracked (the least recently used is forgotten first).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable


class SlidingLimit:
    """At most `limit` events per key within `window_s` (a sliding window, injectable clock)."""

    def __init__(self, limit: int, window_s: float, *, max_keys: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window_s = window_s
        self.max_keys = max_keys
        self.clock = clock
        self._events: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float] | None:
        q = self._events.get(key)
        if q is None:
            return None
        while q and q[0] <= now - self.window_s:
            q.popleft()
        if not q:
            del self._events[key]
            return None
        return q

    def retry_after(self, key: str) -> float:
        """Seconds until `key` may act again (0 when it may now)."""
        with self._lock:
            now = self.clock()
            q = self._recent(key, now)
            if q is None or len(q) < self.limit:
                return 0.0
            return max(0.0, q[0] + self.window_s - now)

    def record(self, key: str) -> None:
        with self._lock:
            now = self.clock()
            q = self._recent(key, now)
            if q is None:
                q = self._events[key] = deque(maxlen=self.limit)
                while len(self._events) > self.max_keys:
                    self._events.popitem(last=False)
            self._events.move_to_end(key)
            q.append(now)


class AuthLimiter:
    """What `POST /auth/token` asks before checking a secret, and tells after."""

    def __init__(self, *, failures_per_client: int = 10, failures_per_address: int = 30,
                 logins_per_client: int = 60, window_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logins = SlidingLimit(logins_per_client, window_s, clock=clock)
        self._client_fail = SlidingLimit(failures_per_client, window_s, clock=clock)
        self._addr_fail = SlidingLimit(failures_per_address, window_s, clock=clock)

    def wait_s(self, client_id: str | None, address: str) -> float:
        """Seconds the caller must wait before an attempt is even checked (0: go ahead)."""
        waits = [self._addr_fail.retry_after(address)]
        if client_id is not None:
            waits += [self._client_fail.retry_after(client_id), self.logins.retry_after(client_id)]
        return max(waits)

    def failed(self, client_id: str | None, address: str) -> None:
        self._addr_fail.record(address)
        if client_id is not None:
            self._client_fail.record(client_id)

    def succeeded(self, client_id: str) -> None:
        self.logins.record(client_id)
