"""The civil calendar: a site's hours, shifts, days, months and years, in its own time zone.

Footprints are asked for calendar windows ("March", "today's second shift") and market-based
matching shares certificates within a civil month or year, so every part that cuts time into
windows must cut it the same way: the engine's matching windows, monthly and annual factors,
the API's windows, PACT's closed months, the audit bundle. This module is that one cut.

It follows the site's IANA zone, daylight saving included: a plant in Debrecen or Erfurt has a
23-hour day in March, its April starts at 22:00 UTC and its January at 23:00 UTC. A Chinese
plant (Asia/Shanghai, no daylight saving) gets fixed UTC+8 windows. The result does not depend on
when a process started (an offset read from "now" would move a summer site's windows by an hour
after a winter restart).

Energy is booked in whole UTC hours, so a zone must keep whole-hour offsets for calendar
boundaries to fall on hour buckets (`whole_hour_zone`; the site file refuses others). Windows
are wall-clock windows: a shift is 00:00–08:00 local, even on the day the clocks change.

Pure standard library (the gateway imports `tanji`; numpy stays out).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

#: A site file without `timezone` is on Beijing time.
DEFAULT_TIMEZONE = "Asia/Shanghai"
#: Calendar window kinds; "hour" is the UTC hour (the booking unit).
WINDOW_KINDS = ("hour", "shift", "day", "month", "year")
HOUR_MS = 3_600_000


@lru_cache(maxsize=64)
def civil_zone(name: str = DEFAULT_TIMEZONE) -> ZoneInfo:
    """The ZoneInfo of an IANA name (cached; raises ZoneInfoNotFoundError for unknown names)."""
    return ZoneInfo(name)


@lru_cache(maxsize=64)
def whole_hour_zone(tz: ZoneInfo, years: range = range(1990, 2101)) -> bool:
    """Whether every UTC offset the zone uses in `years` (January and July) is whole hours."""
    for year in years:
        for month in (1, 7):
            offset = datetime(year, month, 1, tzinfo=tz).utcoffset() or timedelta(0)
            if offset.total_seconds() % 3600:
                return False
    return True


def month_start_ms(year: int, month: int, tz: ZoneInfo) -> int:
    """UTC epoch ms of local midnight starting `year`-`month`-01 in `tz`."""
    return int(datetime(year, month, 1, tzinfo=tz).timestamp() * 1000)


def period_start_ms(period: str, tz: ZoneInfo) -> int:
    """UTC epoch ms of the local start of ``"YYYY"`` or ``"YYYY-MM"``; ValueError otherwise."""
    parts = period.split("-")
    if len(parts) > 2:
        raise ValueError(f"bad period {period!r}: use YYYY or YYYY-MM")
    year, month = int(parts[0]), int(parts[1]) if len(parts) > 1 else 1
    return month_start_ms(year, month, tz)


def civil_month(at_ms: int, tz: ZoneInfo) -> str:
    """``"YYYY-MM"`` of the local month holding the instant."""
    local = datetime.fromtimestamp(at_ms / 1000, tz)
    return f"{local.year:04d}-{local.month:02d}"


def month_starts(first_ms: int, last_ms: int, tz: ZoneInfo) -> tuple[int, list[int]]:
    """(year of the first, UTC ms of every local month start from January of the year holding
    `first_ms` to January after the year holding `last_ms`): the boundaries to search instants in."""
    y0 = datetime.fromtimestamp(first_ms / 1000, tz).year
    y1 = datetime.fromtimestamp(last_ms / 1000, tz).year
    return y0, [month_start_ms(y, m, tz) for y in range(y0, y1 + 1) for m in range(1, 13)] + \
        [month_start_ms(y1 + 1, 1, tz)]


def window_bounds(kind: str, at_ms: int, tz: ZoneInfo, *, shift_hours: int = 8,
                  first_shift_local_hour: int = 0) -> tuple[int, int]:
    """``(start_ms, end_ms)`` of the hour/shift/day/month/year holding `at_ms`, in zone `tz`.

    Shifts are `shift_hours` long on the wall clock and start at `first_shift_local_hour`.
    """
    if kind == "hour":
        start = at_ms - at_ms % HOUR_MS
        return start, start + HOUR_MS
    local = datetime.fromtimestamp(at_ms / 1000, tz).replace(tzinfo=None)  # wall clock
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if kind == "shift":
        first = midnight + timedelta(hours=first_shift_local_hour)
        if local < first:
            first -= timedelta(days=1)
        n = int((local - first) / timedelta(hours=shift_hours))
        begin = first + timedelta(hours=n * shift_hours)
        end = begin + timedelta(hours=shift_hours)
    elif kind == "day":
        begin, end = midnight, midnight + timedelta(days=1)
    elif kind == "month":
        begin = midnight.replace(day=1)
        end = begin.replace(year=begin.year + begin.month // 12, month=begin.month % 12 + 1)
    elif kind == "year":
        begin = midnight.replace(month=1, day=1)
        end = begin.replace(year=begin.year + 1)
    else:
        raise ValueError(f"unknown window kind {kind!r}; use one of {', '.join(WINDOW_KINDS)}")
    return _utc_ms(begin, tz), _utc_ms(end, tz)


def _utc_ms(wall: datetime, tz: ZoneInfo) -> int:
    """A local wall-clock time as UTC ms (an ambiguous time: its first occurrence; a time the
    clocks skipped: as if they had not, i.e. an hour later in UTC terms by the earlier offset)."""
    return int(wall.replace(tzinfo=tz, fold=0).astimezone(UTC).timestamp() * 1000)
