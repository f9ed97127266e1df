"""The readiness rule (accounting.ingest.readiness), case by case, on an injected clock.

The end-to-end proofs are in tests/service/test_ready.py; these pin the cases a real broker
rarely shows on demand: the pause between two windows of a queued backlog.
"""

from __future__ import annotations

from dataclasses import dataclass

from accounting.ingest.readiness import Readiness

NOW_MS = 1_750_000_000_000


@dataclass
class Sub:
    subscribed_at: float | None = None
    empty: bool = True

    def inbox_empty(self) -> bool:
        return self.empty


@dataclass
class Pipe:
    messages_taken: int = 0
    messages_delivered: int = 0
    last_taken_at: float = 0.0


class Clock:
    t = 100.0

    def __call__(self) -> float:
        return self.t


def make(newest: int | None = None) -> tuple[Readiness, Sub, Pipe, Clock, list[int | None]]:
    sub, pipe, clock, newest_box = Sub(), Pipe(), Clock(), [newest]
    r = Readiness(sub, pipe, lambda: newest_box[0], clock=clock)
    r.restored = True
    return r, sub, pipe, clock, newest_box


def test_not_ready_before_restore_or_subscription():
    r, sub, _, clock, _ = make()
    r.restored = False
    sub.subscribed_at = clock.t - 10
    r.starting = True
    state = r.check(NOW_MS)
    assert not state["ready"] and state["starting"] and state["reasons"][0].startswith("restoring")
    r.restored = True
    sub.subscribed_at = None
    state = r.check(NOW_MS)
    assert not state["ready"] and not state["subscribed"]


def test_nothing_arriving_after_the_subscription_settles_into_ready():
    r, sub, _, clock, _ = make()
    sub.subscribed_at = clock.t
    assert not r.check(NOW_MS)["ready"]  # the broker may still be sending what it queued
    clock.t += r.settle_s
    assert r.check(NOW_MS)["ready"]


def test_messages_in_the_pipeline_or_the_inbox_are_not_caught_up():
    r, sub, pipe, clock, newest = make(NOW_MS - 1000)
    sub.subscribed_at = clock.t - 60
    pipe.messages_taken, pipe.messages_delivered = 500, 400
    state = r.check(NOW_MS)
    assert not state["ready"] and state["in_flight_messages"] == 100
    pipe.messages_delivered = 500
    sub.empty = False
    assert not r.check(NOW_MS)["ready"]
    sub.empty = True
    assert r.check(NOW_MS)["ready"]


def test_a_pause_between_two_windows_of_an_old_backlog_is_not_caught_up():
    """Drained for a moment, but the newest reading is an hour old and messages came just now."""
    r, sub, pipe, clock, newest = make(NOW_MS - 3_600_000)
    sub.subscribed_at = clock.t - 30
    pipe.messages_taken = pipe.messages_delivered = 100
    pipe.last_taken_at = clock.t - 0.01
    state = r.check(NOW_MS)
    assert not state["ready"] and "backlog" in state["reasons"][0]
    newest[0] = NOW_MS - 2000  # live readings reached: caught up
    assert r.check(NOW_MS)["ready"]


def test_once_caught_up_it_stays_ready_while_the_subscription_lasts():
    """Live traffic keeps a message in the pipeline most of the time: readiness must not flap."""
    r, sub, pipe, clock, _ = make(NOW_MS - 1000)
    sub.subscribed_at = clock.t - 5
    assert r.check(NOW_MS)["ready"]
    pipe.messages_taken += 3
    sub.empty = False
    assert r.check(NOW_MS)["ready"]
    sub.subscribed_at = None  # the connection dropped
    assert not r.check(NOW_MS)["ready"]
    sub.subscribed_at = clock.t  # a new one: caught up again first
    assert not r.check(NOW_MS)["ready"]
    pipe.messages_delivered += 3
    sub.empty = True
    assert r.check(NOW_MS)["ready"]
