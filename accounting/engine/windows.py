"""Footprint windows (hour, shift, day, month, year) in the site's civil calendar."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from accounting.engine.kernels_energy import HOUR_MS


def window_bounds(kind: str, at_ms: int, *, utc_offset_minutes: int = 480,
                  shift_hours: int = 8, first_shift_local_hour: int = 0) -> tuple[int, int]:
    """``(start_ms, end_ms)`` of the hour/shift/day/month/year containing ``at_ms``.

    Shifts are ``shift_hours`` long and start at ``first_shift_local_hour`` (local time).
    """
    tz = timezone(timedelta(minutes=utc_offset_minutes))
    local = datetime.fromtimestamp(at_ms / 1000, UTC).astimezone(tz)
    if kind == "hour":
        start = at_ms - at_ms % HOUR_MS
        return start, start + HOUR_MS
    if kind == "shift":
        day = local.replace(hour=0, minute=0, second=0, microsecond=0)
        first = day + timedelta(hours=first_shift_local_hour)
        if local < first:
            first -= timedelta(days=1)
        n = int((local - first) / timedelta(hours=shift_hours))
        begin = first + timedelta(hours=n * shift_hours)
        end = begin + timedelta(hours=shift_hours)
    elif kind == "day":
        begin = local.replace(hour=0, minute=0, second=0, microsecond=0)
        end = begin + timedelta(days=1)
    elif kind == "month":
        begin = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        end = begin.replace(year=begin.year + begin.month // 12, month=begin.month % 12 + 1)
    elif kind == "year":
        begin = local.replace(month=1, day=1, hour=0, minute=0, second=0, microsecond=0)
        end = begin.replace(year=begin.year + 1)
    else:
        raise ValueError(f"unknown window kind {kind!r}")
    return int(begin.timestamp() * 1000), int(end.timestamp() * 1000)
