"""Period boundaries of monthly, quarterly and yearly budgets, in the budget's own timezone."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

_MONTHS_PER_PERIOD = {"monthly": 1, "quarterly": 3, "yearly": 12}


def period_end(period_start: datetime, period: str, timezone: str) -> datetime | None:
    """The first boundary strictly after `period_start` (UTC); None for rolling budgets.

    Boundaries are local midnights on the first day of a month, quarter (Jan/Apr/Jul/Oct) or
    year, so a Harare budget closes at 22:00 UTC on the last day of the month.
    """
    months = _MONTHS_PER_PERIOD.get(period)
    if months is None:
        return None
    zone = ZoneInfo(timezone)
    local = period_start.astimezone(zone)
    # Index of the period containing `local`, counted in months from year 0.
    index = (local.year * 12 + local.month - 1) // months
    first_month = (index + 1) * months
    year, month = divmod(first_month, 12)
    return datetime(year, month + 1, 1, tzinfo=zone).astimezone(UTC)
