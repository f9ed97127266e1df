"""The civil calendar (tanji/civil_calendar.py): windows in the site's own zone, daylight saving
included, the same whenever the process started."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from accounting.engine.arrays import civil_period_index
from tanji.civil_calendar import civil_zone, period_start_ms, whole_hour_zone, window_bounds

H = 3_600_000
BERLIN, BEIJING = civil_zone("Europe/Berlin"), civil_zone("Asia/Shanghai")


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


@pytest.mark.parametrize(("kind", "at", "tz", "start", "end"), [
    # Beijing: fixed UTC+8
    ("day", "2025-03-01T20:00", BEIJING, "2025-03-01T16:00", "2025-03-02T16:00"),
    ("month", "2025-03-01T20:00", BEIJING, "2025-02-28T16:00", "2025-03-31T16:00"),
    ("year", "2025-03-01T20:00", BEIJING, "2024-12-31T16:00", "2025-12-31T16:00"),
    ("shift", "2025-03-01T20:00", BEIJING, "2025-03-01T16:00", "2025-03-02T00:00"),
    # Berlin: winter UTC+1, summer UTC+2; April starts in summer time, March in winter time
    ("month", "2026-04-15T12:00", BERLIN, "2026-03-31T22:00", "2026-04-30T22:00"),
    ("month", "2026-03-15T12:00", BERLIN, "2026-02-28T23:00", "2026-03-31T22:00"),
    ("month", "2026-10-15T12:00", BERLIN, "2026-09-30T22:00", "2026-10-31T23:00"),
    ("year", "2026-07-01T00:00", BERLIN, "2025-12-31T23:00", "2026-12-31T23:00"),
    # the day the clocks go forward has 23 hours, the day they go back 25
    ("day", "2026-03-29T12:00", BERLIN, "2026-03-28T23:00", "2026-03-29T22:00"),
    ("day", "2026-10-25T12:00", BERLIN, "2026-10-24T22:00", "2026-10-25T23:00"),
    # shifts are wall-clock shifts: 00:00-08:00 local is 7 hours on the spring day
    ("shift", "2026-03-29T03:00", BERLIN, "2026-03-28T23:00", "2026-03-29T06:00"),
    ("shift", "2026-03-29T07:00", BERLIN, "2026-03-29T06:00", "2026-03-29T14:00"),
    ("hour", "2026-03-29T01:30", BERLIN, "2026-03-29T01:00", "2026-03-29T02:00"),
])
def test_window_bounds_in_the_sites_zone(kind, at, tz, start, end):
    assert window_bounds(kind, ms(at), tz) == (ms(start), ms(end))


def test_period_starts_follow_the_zone():
    assert period_start_ms("2026-07", BERLIN) == ms("2026-06-30T22:00")
    assert period_start_ms("2026-01", BERLIN) == ms("2025-12-31T23:00")
    assert period_start_ms("2025", BEIJING) == ms("2024-12-31T16:00")
    with pytest.raises(ValueError):
        period_start_ms("2025-13", BEIJING)
    with pytest.raises(ValueError):
        period_start_ms("March", BEIJING)


def test_matching_windows_change_at_local_month_starts():
    hours = np.arange(ms("2026-03-31T20:00"), ms("2026-04-01T01:00"), H, dtype=np.int64)
    months = civil_period_index(hours, "monthly", BERLIN)
    # 20:00Z and 21:00Z are still March in Berlin (22:00 and 23:00 CEST); 22:00Z is April 1st
    assert (months - 2026 * 12).tolist() == [2, 2, 3, 3, 3]
    years = civil_period_index(np.array([ms("2026-12-31T22:00"), ms("2026-12-31T23:00")]), "annual", BERLIN)
    assert years.tolist() == [2026, 2027]
    assert civil_period_index(np.zeros(0, dtype=np.int64), "monthly", BERLIN).size == 0


def test_matching_windows_agree_with_the_calendar_over_two_years():
    hours = np.arange(ms("2025-01-01T00:00"), ms("2027-01-01T00:00"), H, dtype=np.int64)
    for tz in (BERLIN, BEIJING, civil_zone("America/New_York")):
        months = civil_period_index(hours, "monthly", tz)
        local = [datetime.fromtimestamp(h / 1000, tz) for h in hours.tolist()]
        assert months.tolist() == [t.year * 12 + t.month - 1 for t in local]


def test_only_whole_hour_zones():
    assert whole_hour_zone(BERLIN) and whole_hour_zone(BEIJING)
    assert not whole_hour_zone(civil_zone("Asia/Kolkata"))
