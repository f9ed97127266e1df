"""Footprint windows: turning `window=`, `start=` and `end=` into a half-open [start_ms, end_ms).

Windows are calendar windows in the site's own time zone (a shift in Chongqing starts at
08:00 Beijing time, not UTC). Shifts are three 8-hour shifts starting 00:00, 08:00 and 16:00
local time. `live` is the current local day so far: the window an operator watches, long
enough to hold units produced even early in a shift. A window that contains "now" ends now.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Literal
from zoneinfo import ZoneInfo

from tanji import civil_calendar

Window = Literal["live", "hour", "shift", "day", "month", "year"]
WINDOWS: tuple[str, ...] = ("live", "hour", "shift", "day", "month", "year")

#: Timestamps the API accepts: 2000-01-01 to 2100-01-01 UTC, in epoch milliseconds.
MIN_MS = 946_684_800_000
MAX_MS = 4_102_444_800_000
SHIFT_HOURS = 8


class WindowError(ValueError):
    """The requested window is malformed; the message tells the caller how to fix it."""


def now_ms() -> int:
    return int(time.time() * 1000)


def parse_instant(value: str, name: str) -> int:
    """Epoch milliseconds, or an ISO 8601 timestamp with an offset (``2025-03-01T08:00:00+08:00``)."""
    text = value.strip()
    if text.lstrip("-").isdigit():
        ms = int(text)
    else:
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise WindowError(f"{name}={value!r} is neither epoch milliseconds nor an ISO 8601 "
                              "timestamp (e.g. 2025-03-01T08:00:00+08:00)") from None
        if parsed.tzinfo is None:
            raise WindowError(f"{name}={value!r} has no UTC offset; add one, e.g. +08:00 or Z")
        try:
            ms = int(parsed.timestamp() * 1000)
        except (OverflowError, ValueError):
            raise WindowError(f"{name}={value!r} is out of range") from None
    if not MIN_MS <= ms <= MAX_MS:
        raise WindowError(f"{name}={value!r} is outside 2000-01-01..2100-01-01 UTC")
    return ms


def window_bounds(window: str, at_ms: int, tz: ZoneInfo) -> tuple[int, int]:
    """The calendar window of kind `window` that contains the instant `at_ms` (whole window).

    `tanji.civil_calendar` owns what a window is (the engine's matching windows come from it
    too); the API only names the zone and maps `live` to the day, so the two never disagree.
    """
    if window not in WINDOWS:
        raise WindowError(f"window={window!r} is unknown; use one of {', '.join(WINDOWS)}")
    return civil_calendar.window_bounds("day" if window == "live" else window, at_ms, tz,
                                        shift_hours=SHIFT_HOURS, first_shift_local_hour=0)


def resolve(window: str | None, start: str | None, end: str | None, tz: ZoneInfo,
            now: int | None = None) -> tuple[int, int]:
    """[start_ms, end_ms) for a request.

    - `start` and `end`: exactly that period (`window` must then be absent);
    - `window` and `start`: the whole window containing `start`;
    - `window` alone: the current window, so far;
    - nothing: the live window (the current local day so far).
    A window reaching into the future is cut at now: the future has no readings yet.
    """
    now = now_ms() if now is None else now
    start_ms = parse_instant(start, "start") if start is not None else None
    end_ms = parse_instant(end, "end") if end is not None else None
    if start_ms is not None and end_ms is not None:
        if window is not None:
            raise WindowError("give either window= (with an optional start=) or start= and end=, not all three")
        if end_ms <= start_ms:
            raise WindowError(f"end ({end_ms}) must be after start ({start_ms})")
        return start_ms, end_ms
    if end_ms is not None:
        raise WindowError("end= needs start= as well")
    lo, hi = window_bounds(window or "live", now if start_ms is None else start_ms, tz)
    hi = min(hi, max(now, lo + 1))
    return lo, hi
