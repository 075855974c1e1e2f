"""Daily report rollups (migration 017): per budget, UTC day, event type and reason, the count,
summed amount and peak utilization of that day's ledger rows, so a report reads a month of a
busy budget from ~30 rows per group instead of every event (projections/reports.py).

`roll_up` is the scheduled job (`budget-ledger reports rollup`): every whole UTC day that ended
at least `margin` ago and is not rolled yet, oldest first, one transaction per day that replaces
the day's rows and moves `report_rollup_progress`. `recompute` replaces one rolled day again
(rows a faulty consumer clock recorded into it after it was rolled); `verify` recomputes rolled
days and names those whose stored rows differ. All run as ledger_app, off the write path.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import psycopg

from budget_ledger.projections.reports import queries, rolled_through


def day_start(day: date) -> datetime:
    """00:00 UTC of `day`."""
    return datetime.combine(day, time(), tzinfo=UTC)


def last_rollable_day(now: datetime, margin: timedelta) -> date:
    """The newest UTC day that ended at least `margin` before `now`."""
    return (now - margin).astimezone(UTC).date() - timedelta(days=1)


@dataclass(frozen=True, slots=True)
class RollupRun:
    """What a `roll_up` did: the days it rolled (None: none) and the rows it wrote."""

    first: date | None
    last: date | None
    days: int
    rows: int


def roll_up(
    conn: psycopg.Connection, now: datetime, margin: timedelta, until: date | None = None
) -> RollupRun:
    """Roll up every day after the progress row (from the ledger's first day on the first
    run) through the last rollable day (or `until`, if earlier); a transaction per day."""
    last = last_rollable_day(now, margin)
    if until is not None:
        last = min(last, until)
    done = rolled_through(conn)
    if done is None:
        row = conn.execute(queries()["rollup_first_day"]).fetchone()
        conn.commit()  # end the read's transaction: each day gets its own below
        if row is None or row[0] is None:
            return RollupRun(None, None, 0, 0)  # an empty ledger: nothing to roll, no progress
        first = row[0]
    else:
        first = done + timedelta(days=1)
    days = rows = 0
    day = first
    while day <= last:
        rows += replace_day(conn, day)
        days += 1
        day += timedelta(days=1)
    if not days:
        return RollupRun(None, None, 0, 0)
    return RollupRun(first, last, days, rows)


def replace_day(conn: psycopg.Connection, day: date) -> int:
    """Compute `day` from the ledger and replace its rollup rows in one transaction, moving
    the progress to it when it is newer; the number of rows written."""
    q = queries()
    with conn.transaction():
        conn.execute(q["rollup_lock"])
        rows = list(_compute(conn, day))
        conn.execute(q["rollup_delete_day"], {"day": day})
        with conn.cursor().copy(q["rollup_copy"]) as copy:
            for row in rows:
                copy.write_row(row)
        conn.execute(q["rollup_set_progress"], {"day": day})
    return len(rows)


def recompute(conn: psycopg.Connection, day: date) -> int:
    """Replace one day's rollups from the ledger (`reports rollup --recompute DAY`); ValueError
    for a day after the progress (the scheduled run will roll it)."""
    done = rolled_through(conn)
    conn.commit()
    if done is None or day > done:
        raise ValueError(f"{day} is not rolled up yet (rolled through {done})")
    return replace_day(conn, day)


def _compute(conn: psycopg.Connection, day: date) -> Iterator[tuple[Any, ...]]:
    params = {"day": day, "start": day_start(day), "end": day_start(day + timedelta(days=1))}
    yield from conn.execute(queries()["rollup_day"], params)


@dataclass(frozen=True, slots=True)
class DayDiff:
    """A rolled day whose stored rows differ from the ledger: the groups that differ."""

    day: date
    missing: int  # groups of the ledger that no stored row matches
    extra: int  # stored rows that no group of the ledger matches


def verify(conn: psycopg.Connection, since: date | None = None) -> tuple[int, list[DayDiff]]:
    """Recompute every rolled day from `since` (default: the first rolled one) and compare
    with the stored rows: (days checked, the days that differ)."""
    q = queries()
    done = rolled_through(conn)
    if done is None:
        return 0, []
    if since is None:
        row = conn.execute(q["rollup_first_rolled"]).fetchone()
        since = done if row is None or row[0] is None else row[0]
    checked = 0
    diffs = []
    day = since
    while day <= done:
        computed = {_key(r) for r in _compute(conn, day)}
        stored = {_key(r) for r in conn.execute(q["rollup_stored_day"], {"day": day})}
        conn.commit()  # a snapshot per day, no long transaction over the ledger
        if computed != stored:
            diffs.append(DayDiff(day, len(computed - stored), len(stored - computed)))
        checked += 1
        day += timedelta(days=1)
    return checked, diffs


def _key(row: tuple[Any, ...]) -> tuple[Any, ...]:
    # numeric comes back as Decimal with the scale of its computation: compare by value.
    tenant, budget, day, etype, reason, count, amount, peak = row
    return (tenant, budget, day, etype, reason, int(count), int(amount),
            None if peak is None else peak.normalize())  # fmt: skip
