"""Range reports of budgets: opening and closing balances, count and total per event type,
refusals per reason, peak utilization and alerts raised, aggregated in SQL
(`report_queries.sql`) a chunk of budgets at a time. The HTTP API and the CLI `report` both
call these functions; `entrypoints/report_render.py` renders the results as JSON or CSV.

Ranges are `[since, until)` on `recorded_at`, like the ledger pages. A `period=` shortcut is
the current period in each budget's own time zone (`current_period`). The counts, sums and
peaks of the whole UTC days inside a range that the rollup job has rolled up come from the
daily rollups (migration 017, projections/report_rollups.py); the rest of the range (the
partial days at its edges, the days not rolled yet) from an index-only scan of the ledger.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from functools import cache
from typing import Any, Final, TypeVar
from zoneinfo import ZoneInfo

import psycopg

from budget_ledger.ledger.reasons import Reason
from budget_ledger.ledger.sql import load_queries
from budget_ledger.projections.api_reads import BudgetView, list_budgets
from budget_ledger.schemas.codec import pct_text
from budget_ledger.schemas.events import ALERT_TYPES, EVENT_TYPES

PERIODS: Final = ("today", "week", "month", "quarter", "year")
# Reasons that only ever go to the DLQ: no ledger event carries them.
_DEAD_LETTER_ONLY: Final = frozenset(
    {
        Reason.IDEMPOTENCY_CONFLICT,
        Reason.MALFORMED_JSON,
        Reason.SCHEMA_VIOLATION,
        Reason.KEY_MISMATCH,
        Reason.TOO_LARGE,
        Reason.DUPLICATE_KEY,
        Reason.INVALID_ID,
        Reason.INVALID_TEXT,
        Reason.OUT_OF_RANGE,
    }
)
#: The reasons a refusal event (reservation_rejected, command_rejected) can carry.
REFUSAL_REASONS: Final[tuple[str, ...]] = tuple(
    r.value for r in Reason if r not in _DEAD_LETTER_ONLY
)
# The event types whose reason a report counts (the others are not looked into).
_REFUSALS: Final = frozenset({"reservation_rejected", "command_rejected"})
# Budgets per chunk of a tenant report: one page of list_budgets, three queries per range.
CHUNK: Final = 1000

Range = tuple[datetime, datetime]
V = TypeVar("V")


@cache
def queries() -> dict[str, str]:
    """The named queries of `projections/report_queries.sql`."""
    return load_queries("budget_ledger.projections", "report_queries.sql")


def current_period(period: str, timezone: str, now: datetime) -> Range:
    """The `[start, end)` in UTC of the current `period` (today, week = ISO week from Monday,
    month, quarter, year) at `now`, its boundaries local midnights in `timezone`."""
    zone = ZoneInfo(timezone)
    day = now.astimezone(zone).date()
    if period == "today":
        start, end = day, day + timedelta(days=1)
    elif period == "week":
        start = day - timedelta(days=day.weekday())
        end = start + timedelta(days=7)
    elif period in ("month", "quarter", "year"):
        months = {"month": 1, "quarter": 3, "year": 12}[period]
        first = (day.month - 1) // months * months  # 0-based month the period starts in
        start = date(day.year, first + 1, 1)
        year, month = divmod(first + months, 12)
        end = date(day.year + year, month + 1, 1)
    else:
        raise ValueError(f"period must be one of {', '.join(PERIODS)}")
    return _midnight(start, zone), _midnight(end, zone)


def _midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC)


@dataclass(frozen=True, slots=True)
class Balances:
    """A budget's balances after one event (minor units); sequence 0: no event by then."""

    sequence: int = 0
    funded: int = 0
    reserved: int = 0
    charged: int = 0
    available: int = 0
    utilization_pct: str = "0.00"
    recorded_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class TypeTotal:
    """Events of one type in the range: how many, and the sum of their `amount` (minor units;
    refusals: the amounts asked for; adjustments: signed)."""

    count: int = 0
    amount: int = 0


@dataclass(frozen=True, slots=True)
class BudgetReport:
    """One budget over `[since, until)`."""

    budget: BudgetView
    since: datetime
    until: datetime
    opening: Balances
    closing: Balances
    events: dict[str, TypeTotal]  # every type of EVENT_TYPES, in that order
    refusals: dict[str, int]  # every reason of REFUSAL_REASONS, then any other seen
    peak_utilization_pct: str | None  # None: no event in the range
    alerts: dict[str, int]  # every type of ALERT_TYPES

    @property
    def event_count(self) -> int:
        """Events recorded in the range."""
        return sum(t.count for t in self.events.values())


def budget_report(conn: psycopg.Connection, budget: BudgetView, since: datetime,
                  until: datetime) -> BudgetReport:  # fmt: skip
    """The report of one budget over `[since, until)`."""
    _check_range(since, until)
    return _reports(conn, budget.tenant_id, [(budget, (since, until))])[0]


def tenant_reports(
    conn: psycopg.Connection,
    tenant_id: str,
    range_of: Callable[[BudgetView], Range],
    chunk: int = CHUNK,
) -> Iterator[BudgetReport]:
    """The report of every opened budget of the tenant that had an event before its range
    ended, in budget_id order, `range_of(budget)` each; a chunk of budgets in memory at a time."""
    after = ""
    while True:
        page, last = list_budgets(conn, tenant_id, after, chunk)
        ranged = [(b, range_of(b)) for b in page]
        for _, (since, until) in ranged:
            _check_range(since, until)
        if ranged:
            for report in _reports(conn, tenant_id, ranged):
                if report.closing.sequence:
                    yield report
        if last is None:
            return
        after = last


def _check_range(since: datetime, until: datetime) -> None:
    if since.tzinfo is None or until.tzinfo is None:
        raise ValueError("from and to must be timezone-aware")
    if not since < until:
        raise ValueError("from must be before to")


def rolled_through(conn: psycopg.Connection) -> date | None:
    """The last UTC day the rollup job has rolled up (None: none yet)."""
    row = conn.execute(queries()["report_rolled_through"]).fetchone()
    return None if row is None else row[0]


def split_range(since: datetime, until: datetime, rolled: date | None) -> tuple[
    tuple[date, date] | None, list[Range]
]:  # fmt: skip
    """`[since, until)` as the rolled whole UTC days inside it, `[first, end)` (None: none),
    and the ranges to scan in the ledger (the rest, in order)."""
    first = since.astimezone(UTC).date()
    if _utc_midnight(first) < since:
        first += timedelta(days=1)
    end = until.astimezone(UTC).date()  # the days before the one `until` falls in
    if rolled is not None:
        end = min(end, rolled + timedelta(days=1))
    if rolled is None or first >= end:
        return None, [(since, until)]
    scans = [(since, _utc_midnight(first)), (_utc_midnight(end), until)]
    return (first, end), [(a, b) for a, b in scans if a < b]


def _utc_midnight(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


def _reports(
    conn: psycopg.Connection, tenant_id: str, ranged: Sequence[tuple[BudgetView, Range]]
) -> list[BudgetReport]:
    """The reports of `ranged`, in its order: per distinct range among them, the balances, the
    rollups of its rolled whole days, the scan of the rest and the alerts (report_events_legacy
    too when a scanned range holds rows written before migration 014)."""
    q = queries()
    acc = {b.budget_id: _Acc() for b, _ in ranged}
    groups: dict[Range, list[str]] = {}
    for b, r in ranged:
        groups.setdefault(r, []).append(b.budget_id)
    rolled = rolled_through(conn)
    for (since, until), budgets in groups.items():
        params = {"tenant": tenant_id, "budgets": budgets, "since": since, "until": until}
        for row in conn.execute(q["report_balances"], params):
            a = acc[row[0]]
            a.opening, a.closing = _balances(row[1:8]), _balances(row[8:15])
        days, scans = split_range(since, until, rolled)
        if days is not None:
            whole = {**params, "first_day": days[0], "end_day": days[1]}
            for budget_id, etype, reason, count, amount, peak in conn.execute(
                q["report_rollup_events"], whole
            ):
                acc[budget_id].add(etype, reason, int(count), int(amount), peak)
        for part in scans:
            _scan(conn, acc, {**params, "since": part[0], "until": part[1]})
        for budget_id, atype, count in conn.execute(q["report_alerts"], params):
            acc[budget_id].alerts[atype] = acc[budget_id].alerts.get(atype, 0) + count
    return [acc[b.budget_id].report(b, since, until) for b, (since, until) in ranged]


def _scan(conn: psycopg.Connection, acc: dict[str, _Acc], params: dict[str, Any]) -> None:
    """Add the ledger rows of `params`' range (report_events, and report_events_legacy for
    the budgets with rows written before migration 014)."""
    q = queries()
    legacy = set()
    for budget_id, etype, reason, old, count, amount, peak in conn.execute(
        q["report_events"], params
    ):
        if old:  # rows from before migration 014: counted from their JSON below
            legacy.add(budget_id)
        else:
            acc[budget_id].add(etype, reason, count, int(amount), peak)
    if legacy:
        slow = {**params, "budgets": sorted(legacy)}
        for budget_id, etype, reason, count, amount, peak in conn.execute(
            q["report_events_legacy"], slow
        ):
            acc[budget_id].add(etype, reason, count, int(amount), peak)


def _balances(row: Sequence[Any]) -> Balances:
    seq, funded, reserved, charged, available, pct, recorded_at = row
    if seq is None:
        return Balances()
    return Balances(seq, funded, reserved, charged, available, pct, recorded_at)


@dataclass(slots=True)
class _Acc:
    """One budget's query results while they are collected."""

    opening: Balances = field(default_factory=Balances)
    closing: Balances = field(default_factory=Balances)
    events: dict[str, TypeTotal] = field(default_factory=dict)
    refusals: dict[str, int] = field(default_factory=dict)
    alerts: dict[str, int] = field(default_factory=dict)
    peak_bp: Decimal | None = None

    def add(
        self, etype: str, reason: str | None, count: int, amount: int, peak: Decimal | None
    ) -> None:
        had = self.events.get(etype, TypeTotal())
        self.events[etype] = TypeTotal(had.count + count, had.amount + amount)
        if reason is not None and etype in _REFUSALS:
            self.refusals[reason] = self.refusals.get(reason, 0) + count
        if peak is not None and (self.peak_bp is None or peak > self.peak_bp):
            self.peak_bp = peak

    def report(self, budget: BudgetView, since: datetime, until: datetime) -> BudgetReport:
        return BudgetReport(
            budget,
            since,
            until,
            self.opening,
            self.closing,
            complete(self.events, EVENT_TYPES, TypeTotal()),
            complete(self.refusals, REFUSAL_REASONS, 0),
            None if self.peak_bp is None else pct_text(int(self.peak_bp)),
            complete(self.alerts, ALERT_TYPES, 0),
        )


def complete(found: dict[str, V], keys: Sequence[str], zero: V) -> dict[str, V]:
    """`found` with every key of `keys` first (in that order, `zero` when absent), then any
    other key it holds (sorted)."""
    out = dict.fromkeys(keys, zero)
    out.update(found)  # in C: a tenant report completes three dicts per budget
    if len(out) > len(keys):  # keys outside `keys` came in found's order: sort them
        extra = sorted(k for k in found if k not in keys)
        out = {k: out[k] for k in (*keys, *extra)}
    return out


@dataclass(slots=True)
class CurrencyTotals:
    """The sums over the budgets of one currency (and minor digits) of a tenant report."""

    currency: str
    digits: int
    budgets: int = 0
    opening: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    closing: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    events: dict[str, TypeTotal] = field(default_factory=dict)
    refusals: dict[str, int] = field(default_factory=dict)
    alerts: dict[str, int] = field(default_factory=dict)

    def add(self, r: BudgetReport) -> None:
        """Add one budget's report."""
        self.budgets += 1
        for sums, b in ((self.opening, r.opening), (self.closing, r.closing)):
            for i, v in enumerate((b.funded, b.reserved, b.charged, b.available)):
                sums[i] += v
        for etype, t in r.events.items():
            had = self.events.get(etype, TypeTotal())
            self.events[etype] = TypeTotal(had.count + t.count, had.amount + t.amount)
        for reason, n in r.refusals.items():
            self.refusals[reason] = self.refusals.get(reason, 0) + n
        for atype, n in r.alerts.items():
            self.alerts[atype] = self.alerts.get(atype, 0) + n


class Totals:
    """Tenant-report totals, one `CurrencyTotals` per (currency, digits): amounts of different
    currencies are never added together."""

    def __init__(self) -> None:
        self._by: dict[tuple[str, int], CurrencyTotals] = {}

    def add(self, r: BudgetReport) -> None:
        """Add one budget's report."""
        key = (r.budget.currency, r.budget.digits)
        if key not in self._by:
            self._by[key] = CurrencyTotals(*key)
        self._by[key].add(r)

    def currencies(self) -> list[CurrencyTotals]:
        """The totals in currency order."""
        return [self._by[k] for k in sorted(self._by)]


@dataclass(frozen=True, slots=True)
class RangeSpec:
    """What a caller asked for: `from` and `to`, or a `period` shortcut (resolved per budget)."""

    since: datetime | None = None
    until: datetime | None = None
    period: str | None = None

    @classmethod
    def of(cls, since: datetime | None, until: datetime | None, period: str | None) -> RangeSpec:
        """Check the combination; ValueError saying what is wrong."""
        if period is not None:
            if since is not None or until is not None:
                raise ValueError("give either period or from and to, not both")
            if period not in PERIODS:
                raise ValueError(f"period must be one of {', '.join(PERIODS)}")
            return cls(period=period)
        if since is None or until is None:
            raise ValueError("give from and to (RFC 3339 with an offset), or period")
        _check_range(since, until)
        return cls(since.astimezone(UTC), until.astimezone(UTC))

    def for_budget(self, budget: BudgetView, now: datetime) -> Range:
        """The range of `budget`: the given one, or the current period in its time zone."""
        if self.period is not None:
            return current_period(self.period, budget.config.timezone, now)
        assert self.since is not None and self.until is not None
        return self.since, self.until
