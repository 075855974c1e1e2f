"""The `period=` shortcuts of the reports: the current period's boundaries, local midnights in
the budget's zone (projections.reports.current_period), and how a requested range is checked."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from budget_ledger.projections.reports import PERIODS, RangeSpec, current_period

pytestmark = pytest.mark.unit


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("period", "now", "start", "end"),
    [
        # Harare is UTC+2 all year: local midnight is 22:00 UTC the day before.
        ("today", utc(2026, 3, 10, 21, 59), utc(2026, 3, 9, 22), utc(2026, 3, 10, 22)),
        ("today", utc(2026, 3, 10, 22, 0), utc(2026, 3, 10, 22), utc(2026, 3, 11, 22)),
        # 2026-03-11 is a Wednesday: the ISO week runs from Monday the 9th.
        ("week", utc(2026, 3, 11, 12), utc(2026, 3, 8, 22), utc(2026, 3, 15, 22)),
        ("month", utc(2026, 2, 28, 21, 59), utc(2026, 1, 31, 22), utc(2026, 2, 28, 22)),
        ("month", utc(2026, 2, 28, 22, 0), utc(2026, 2, 28, 22), utc(2026, 3, 31, 22)),
        ("month", utc(2026, 12, 15), utc(2026, 11, 30, 22), utc(2026, 12, 31, 22)),
        ("quarter", utc(2026, 6, 30, 21), utc(2026, 3, 31, 22), utc(2026, 6, 30, 22)),
        ("quarter", utc(2026, 11, 27), utc(2026, 9, 30, 22), utc(2026, 12, 31, 22)),
        ("year", utc(2026, 12, 31, 22, 30), utc(2026, 12, 31, 22), utc(2027, 12, 31, 22)),
    ],
)
def test_harare_periods(period: str, now: datetime, start: datetime, end: datetime) -> None:
    assert current_period(period, "Africa/Harare", now) == (start, end)


@pytest.mark.parametrize(
    ("period", "now", "start", "end"),
    [
        # DST starts 2026-03-08 02:00 local: that day is 23 hours long (EST -5 to EDT -4).
        ("today", utc(2026, 3, 8, 12), utc(2026, 3, 8, 5), utc(2026, 3, 9, 4)),
        # DST ends 2026-11-01 02:00 local: that day is 25 hours long.
        ("today", utc(2026, 11, 1, 12), utc(2026, 11, 1, 4), utc(2026, 11, 2, 5)),
        # The week of the spring change (Monday 2 March to Monday 9 March).
        ("week", utc(2026, 3, 8, 12), utc(2026, 3, 2, 5), utc(2026, 3, 9, 4)),
        # A month across a change: starts in EDT, ends in EST.
        ("month", utc(2026, 11, 15), utc(2026, 11, 1, 4), utc(2026, 12, 1, 5)),
        ("month", utc(2026, 3, 1, 4, 59), utc(2026, 2, 1, 5), utc(2026, 3, 1, 5)),
        ("quarter", utc(2026, 4, 1, 3, 59), utc(2026, 1, 1, 5), utc(2026, 4, 1, 4)),
        ("year", utc(2027, 1, 1, 4, 59), utc(2026, 1, 1, 5), utc(2027, 1, 1, 5)),
    ],
)
def test_new_york_periods_across_dst(
    period: str, now: datetime, start: datetime, end: datetime
) -> None:
    assert current_period(period, "America/New_York", now) == (start, end)


@given(
    now=st.datetimes(
        min_value=datetime(2001, 1, 1), max_value=datetime(2198, 1, 1), timezones=st.just(UTC)
    ),
    period=st.sampled_from(PERIODS),
    zone=st.sampled_from(["UTC", "Africa/Harare", "America/New_York", "Asia/Kolkata"]),
)
def test_the_current_period_holds_now_and_the_next_one_follows_it(
    now: datetime, period: str, zone: str
) -> None:
    start, end = current_period(period, zone, now)
    assert start <= now < end and start.tzinfo is UTC and end.tzinfo is UTC
    assert current_period(period, zone, end)[0] == end
    assert current_period(period, zone, start - timedelta(microseconds=1))[1] == start


def test_an_unknown_period_is_refused() -> None:
    with pytest.raises(ValueError, match="period must be one of"):
        current_period("decade", "UTC", utc(2026, 1, 1))


def test_a_range_is_from_and_to_or_a_period() -> None:
    a, b = utc(2026, 1, 1), utc(2026, 2, 1)
    assert RangeSpec.of(a, b, None) == RangeSpec(a, b)
    assert RangeSpec.of(None, None, "week") == RangeSpec(period="week")
    for since, until, period, message in [
        (a, None, None, "give from and to"),
        (None, None, None, "give from and to"),
        (b, a, None, "before"),
        (a, a, None, "before"),
        (a, b, "month", "not both"),
        (None, None, "decade", "period must be one of"),
        (datetime(2026, 1, 1), datetime(2026, 2, 1), None, "timezone-aware"),
    ]:
        with pytest.raises(ValueError, match=message):
            RangeSpec.of(since, until, period)
