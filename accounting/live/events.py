"""Update events and the listeners that hear them (the API's live stream, benchmarks).

Events are plain dicts, built here only:
- ``{"type": "meters", "site": id, "meters": [rows]}`` after each delivered cycle, with the
  `PlantStatus.meter_rows` of the meters that cycle touched;
- ``{"type": "footprints", "site": id, "through_ms": ts}`` at most every announcement interval,
  when the site's footprints may have moved (readings fed or instruments attached) since the
  last one; `through_ms` is the newest reading the engine holds. It carries no footprints: a
  listener asks for the window it shows (the dashboard its local day), and none is computed
  for listeners that do not ask.
Listeners are called on the service's engine thread; an asyncio consumer must hop threads
with `loop.call_soon_threadsafe`. A listener that raises is logged and keeps its place.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

Event = dict[str, Any]
Listener = Callable[[Event], None]


def meters_event(site_id: str, rows: list[dict[str, Any]]) -> Event:
    return {"type": "meters", "site": site_id, "meters": rows}


def footprints_event(site_id: str, through_ms: int | None) -> Event:
    return {"type": "footprints", "site": site_id, "through_ms": through_ms}


class Listeners:
    """The registered listeners; `emit` calls each in registration order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listeners: list[Listener] = []

    def __bool__(self) -> bool:
        return bool(self._listeners)

    def add(self, callback: Listener) -> None:
        with self._lock:
            self._listeners.append(callback)

    def remove(self, callback: Listener) -> None:
        with self._lock:
            if callback in self._listeners:
                self._listeners.remove(callback)

    def emit(self, event: Event) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(event)
            except Exception:
                log.exception("listener %r failed on a %s event", listener, event.get("type"))
