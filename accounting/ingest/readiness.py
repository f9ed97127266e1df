"""When the accounting service is ready: restored, subscribed and caught up (`/api/v1/ready`).

Liveness (`/api/v1/health`) only says the process serves. A gateway, an orchestrator or an
integrator's script that starts publishing then can lose readings: on a fresh install the broker
holds no session for accounting yet and drops what nobody is subscribed to, and after an outage
the answers are stale until the broker's queue has been worked off. Ready means:

- restored: every site's engine was rebuilt from its checkpoint and the store;
- subscribed: the broker acknowledged every subscription on the current connection (one it
  refused, e.g. by its ACL, keeps the service not ready, and the log names it);
- caught up: everything the broker delivered has been stored and fed to the engines, and the
  newest reading is live (at most `live_lag_ms` old) or nothing arrived for `settle_s`. The
  broker sends a queued backlog one window of unacknowledged messages at a time, so "nothing
  waiting here" alone is also true for a moment between two windows; old readings, or a pause
  with nothing arriving, tell the two apart.

Once caught up, the service stays ready for as long as that subscription lasts: with live
traffic a message is in the pipeline most of the time, and readiness must not flap with it (a
backlog that builds up later is a throughput matter, in the ingest stats). A new connection
(the broker restarted, the network dropped) starts over: not subscribed, then caught up again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

#: The newest reading at most this old means the messages arriving are live, not a queued backlog.
LIVE_LAG_MS = 60_000
#: With nothing arriving for this long, whatever the broker had queued has been delivered.
SETTLE_S = 1.0


class Subscribed(Protocol):
    """The subscriber's side (`MqttSubscriber`)."""

    subscribed_at: float | None  # monotonic time of the broker's SUBACK on this connection

    def inbox_empty(self) -> bool: ...


class Flowing(Protocol):
    """The pipeline's side (`accounting.ingest.pipeline.Pipeline`)."""

    messages_taken: int  # taken from the inbox (ingest thread)
    messages_delivered: int  # stored, acknowledged and fed to the engines (engine thread)
    last_taken_at: float  # monotonic


class Readiness:
    """Answers `check()` from the subscriber, the pipeline and the newest reading's time."""

    def __init__(self, subscriber: Subscribed, pipeline: Flowing, newest_ms: Callable[[], int | None], *,
                 live_lag_ms: int = LIVE_LAG_MS, settle_s: float = SETTLE_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.subscriber = subscriber
        self.pipeline = pipeline
        self.newest_ms = newest_ms
        self.live_lag_ms = live_lag_ms
        self.settle_s = settle_s
        self.clock = clock
        self.starting = False  # start() has begun: until restored, data routes answer 503
        self.restored = False
        self._caught_up_for: float | None = None  # the subscription (its subscribed_at) caught up

    def check(self, now_ms: int | None = None) -> dict[str, Any]:
        """`{"ready", "restored", "subscribed", "caught_up", "in_flight_messages", "reasons": [...]}`."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        since = self.subscriber.subscribed_at
        subscribed = since is not None
        in_flight = self.pipeline.messages_taken - self.pipeline.messages_delivered
        drained = in_flight == 0 and self.subscriber.inbox_empty()
        newest = self.newest_ms()
        live = newest is not None and now_ms - newest <= self.live_lag_ms
        settled = subscribed and self.clock() - max(self.pipeline.last_taken_at, since or 0.0) >= self.settle_s
        caught_up = subscribed and (since == self._caught_up_for or (drained and (live or settled)))
        if caught_up:
            self._caught_up_for = since
        reasons = []
        if not self.restored:
            reasons.append("restoring the engines from the checkpoints and the store")
        if not subscribed:
            reasons.append("not subscribed at the broker (connecting, or a subscription was refused)")
        elif not caught_up and not drained:
            reasons.append(f"ingesting what the broker delivered ({in_flight} messages in the pipeline)")
        elif not caught_up:
            reasons.append("working off the broker's queued backlog")
        return {"ready": self.restored and caught_up, "starting": self.starting and not self.restored,
                "restored": self.restored, "subscribed": subscribed,
                "caught_up": caught_up, "in_flight_messages": in_flight, "reasons": reasons}
