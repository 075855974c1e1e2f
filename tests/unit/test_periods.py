"""Period boundaries in the budget's timezone."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from budget_ledger.ledger.periods import period_end

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("start", "period", "tz", "end"),
    [
        ("2026-11-25T12:00:00+00:00", "monthly", "UTC", "2026-12-01T00:00:00+00:00"),
        ("2026-12-01T00:00:00+00:00", "monthly", "UTC", "2027-01-01T00:00:00+00:00"),
        ("2026-11-25T12:00:00+00:00", "quarterly", "UTC", "2027-01-01T00:00:00+00:00"),
        ("2026-02-10T00:00:00+00:00", "quarterly", "UTC", "2026-04-01T00:00:00+00:00"),
        ("2026-11-25T12:00:00+00:00", "yearly", "UTC", "2027-01-01T00:00:00+00:00"),
        # Harare is UTC+2: the local month ends at 22:00 UTC on the last day.
        ("2026-11-25T12:00:00+00:00", "monthly", "Africa/Harare", "2026-11-30T22:00:00+00:00"),
        # 23:30 UTC on Nov 30 is already December in Harare.
        ("2026-11-30T23:30:00+00:00", "monthly", "Africa/Harare", "2026-12-31T22:00:00+00:00"),
    ],
)
def test_boundary_is_the_next_local_period_start(
    start: str, period: str, tz: str, end: str
) -> None:
    got = period_end(datetime.fromisoformat(start), period, tz)
    assert got == datetime.fromisoformat(end)
    assert got is not None and got.tzinfo == UTC


def test_rolling_budgets_have_no_boundary() -> None:
    assert period_end(datetime(2026, 1, 1, tzinfo=UTC), "rolling", "UTC") is None
