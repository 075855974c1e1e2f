"""Daily report rollups (migration 017, projections/report_rollups.py): a report that reads the
rollups of its whole rolled days and scans the ledger for the rest gives exactly the totals of
the pure scan, over random ranges (edges inside days, inside one day, over days not rolled
yet) and the `period=` shortcuts in non-UTC zones.

The ledger is written through Kafka and the real consumer, whose clock is set per phase (the
processor's `datetime.now`) so that its rows fall on several past UTC days, at midnight and a
microsecond before it. A last phase records a row into a rolled day (a consumer clock fault):
`--verify` finds the day, `--recompute` fixes it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from unittest import mock

import psycopg
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql
from pydantic import SecretStr

from budget_ledger.consumers import processor
from budget_ledger.entrypoints.api.app import create_app
from budget_ledger.entrypoints.api.keys import create_key
from budget_ledger.ledger.db import connect
from budget_ledger.ledger.settings import Settings
from budget_ledger.projections import report_rollups as ru
from budget_ledger.projections import reports
from budget_ledger.projections.api_reads import BudgetView, bind_tenant, get_budget
from budget_ledger.projections.readers import create_reader
from budget_ledger.projections.reports import PERIODS, RangeSpec, budget_report, tenant_reports
from tests.conftest import _delete_topics, as_login, cloned_database, new_prefix, service_settings
from tests.integration.support import cli, ledger_count, produce, running_consumer, wait_for

pytestmark = pytest.mark.integration

CURRENCIES = {"USD": 2, "ZWG": 2, "JPY": 0}
BUDGETS = [("acme", "in"), ("acme", "ny"), ("acme", "r2"), ("globex", "g1")]


class _Clock:
    at: datetime | None = None


class _FakeDatetime(datetime):
    """The processor's `datetime`: `now()` is the test's clock while one is set."""

    @classmethod
    def now(cls, tz: Any = None) -> Any:
        if _Clock.at is None:
            return datetime.now(tz)
        return _Clock.at if tz is None else _Clock.at.astimezone(tz)


def _cmd(kind: str, tenant: str, budget: str, **fields: Any) -> dict[str, Any]:
    return {"command_id": f"{kind}-{uuid.uuid4().hex[:12]}", "type": kind,
            "tenant_id": tenant, "budget_id": budget, **fields}  # fmt: skip


def _at(day: date, hour: int, minute: int = 0, second: int = 0, micro: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute, second, micro), tzinfo=UTC)


@dataclass
class World:
    settings: Settings
    base: date  # the first day with events
    today: date
    instants: list[datetime]  # the times rows were recorded at


@pytest.fixture(scope="module")
def world(
    kafka_bootstrap: str, pg_admin_dsn: str, template_database: str, app_login: tuple[str, str]
) -> Iterator[World]:
    prefix = new_prefix()
    with cloned_database(pg_admin_dsn, template_database) as url:
        s = service_settings(kafka_bootstrap, url, prefix, app_login, currencies=CURRENCIES)
        try:
            with mock.patch.object(processor, "datetime", _FakeDatetime):
                yield _fill(s)
        finally:
            _Clock.at = None
            _delete_topics(kafka_bootstrap, prefix)


def _fill(s: Settings) -> World:
    today = datetime.now(UTC).date()
    b = today - timedelta(days=5)
    usd, jpy = {"currency": "USD"}, {"currency": "JPY"}
    a, g = "acme", "globex"
    phases: list[tuple[datetime, list[dict[str, Any]]]] = [
        (_at(b, 9), [
            _cmd("open_budget", a, "in", currency="USD", period="monthly",
                 timezone="Asia/Kolkata", hard_cap="1000.00", soft_cap="100.00"),
            _cmd("open_budget", a, "ny", currency="USD", period="monthly",
                 timezone="America/New_York"),
            _cmd("open_budget", a, "r2", currency="JPY", period="rolling"),
            _cmd("open_budget", g, "g1", currency="USD", period="rolling"),
            _cmd("fund", a, "in", amount="500.00", **usd),
            _cmd("fund", a, "ny", amount="80.00", **usd),
            _cmd("fund", a, "r2", amount="7000", **jpy),
            _cmd("fund", g, "g1", amount="999.99", **usd),
        ]),
        (_at(b, 23, 59, 59, 999_999), [
            _cmd("reserve", a, "in", amount="60.00", ref_id="p1", **usd),
            _cmd("reserve", a, "in", amount="50.00", ref_id="p2", **usd),  # soft cap crossed
            _cmd("reserve", a, "ny", amount="90.00", ref_id="n0", **usd),  # refused
        ]),
        (_at(b + timedelta(days=1), 0), [
            _cmd("charge", a, "in", ref_id="p1", amount="40.00"),
            _cmd("reserve", a, "in", amount="99999.00", ref_id="big", **usd),  # refused
            _cmd("reserve", a, "r2", amount="2500", ref_id="j1", **jpy),
        ]),
        (_at(b + timedelta(days=1), 13), [
            _cmd("release", a, "in", ref_id="p2"),
            _cmd("fund", a, "in", amount="100.50", **usd),
            _cmd("reserve", a, "r2", amount="9000", ref_id="j2", **jpy),  # refused
            _cmd("reserve", g, "g1", amount="5.00", ref_id="g1", **usd),
        ]),
        (_at(b + timedelta(days=2), 18, 30), [  # midnight in Kolkata
            _cmd("reserve", a, "in", amount="200.00", ref_id="p3", **usd),
            _cmd("charge", a, "r2", ref_id="j1"),
            _cmd("reserve", a, "ny", amount="10.00", ref_id="n1", **usd),
        ]),
        (_at(b + timedelta(days=3), 4, 59, 59), [
            _cmd("charge", a, "in", ref_id="nope", amount="1.00"),  # refused: not found
            _cmd("configure_budget", a, "in", soft_cap="30.00"),
            _cmd("charge", a, "ny", ref_id="n1", amount="2.50"),
        ]),
        (_at(b + timedelta(days=4), 11), [
            _cmd("reserve", a, "in", amount="10.00", ref_id="p4", **usd),
            _cmd("fund", a, "r2", amount="1", **jpy),
            _cmd("release", g, "g1", ref_id="g1"),
        ]),
        (datetime.now(UTC) - timedelta(seconds=5), [  # today: never rolled
            _cmd("reserve", a, "in", amount="1.00", ref_id="p5", **usd),
            _cmd("fund", g, "g1", amount="0.01", **usd),
        ]),
    ]  # fmt: skip
    instants = []
    done = 0
    with running_consumer(s):
        for at, commands in phases:
            _Clock.at = at
            instants.append(at)
            done += produce(s, commands)
            wait_for(lambda n=done: ledger_count(s.database_url) >= n, what="the ledger")
    _Clock.at = None
    return World(s, b, today, instants)


def _budget(conn: psycopg.Connection, tenant: str, budget: str) -> BudgetView:
    found = get_budget(conn, tenant, budget)
    assert found is not None
    return found


def _pure(conn: psycopg.Connection, budget: BudgetView, since: datetime, until: datetime) -> Any:
    with mock.patch.object(reports, "rolled_through", return_value=None):
        return budget_report(conn, budget, since, until)


def _roll(world: World, until: date | None = None) -> ru.RollupRun:
    # As the processes' role, ledger_app: what the CronJob runs as.
    s = world.settings
    with connect(s.app_dsn(), role=s.database_role) as conn:
        return ru.roll_up(conn, datetime.now(UTC), timedelta(hours=1), until)


def _check_ranges(world: World, ranges: list[tuple[datetime, datetime]]) -> int:
    """Compare both paths over `ranges` for every budget; the number of ranges that used
    rollups."""
    used = 0
    with psycopg.connect(world.settings.database_url) as conn:
        rolled = reports.rolled_through(conn)
        budgets = [_budget(conn, t, b) for t, b in BUDGETS]
        for since, until in ranges:
            used += ru_days(since, until, rolled)
            for budget in budgets:
                fast = budget_report(conn, budget, since, until)
                assert fast == _pure(conn, budget, since, until), (budget.budget_id, since, until)
    return used


def ru_days(since: datetime, until: datetime, rolled: date | None) -> int:
    return int(reports.split_range(since, until, rolled)[0] is not None)


def test_split_range_takes_the_whole_rolled_days_and_scans_the_rest() -> None:
    d = date(2026, 11, 1)
    mid = _at(d, 0)
    assert reports.split_range(mid, _at(d + timedelta(days=3), 0), None) == (
        None,
        [(mid, _at(d + timedelta(days=3), 0))],
    )
    # Whole days 1..2 rolled through the 2nd: the 3rd is scanned.
    days, scans = reports.split_range(_at(d, 6), _at(d + timedelta(days=4), 1), d + timedelta(2))
    assert days == (d + timedelta(days=1), d + timedelta(days=3))
    assert scans == [(_at(d, 6), _at(d + timedelta(days=1), 0)),
                     (_at(d + timedelta(days=3), 0), _at(d + timedelta(days=4), 1))]  # fmt: skip
    # A range inside one day, or no whole day rolled yet: the plain scan.
    assert reports.split_range(_at(d, 1), _at(d, 2), d)[0] is None
    assert (
        reports.split_range(_at(d, 0), _at(d + timedelta(days=1), 0), d - timedelta(1))[0] is None
    )
    assert reports.split_range(_at(d, 0), _at(d + timedelta(days=1), 0), d) == (
        (d, d + timedelta(days=1)),
        [],
    )


def test_a_run_rolls_each_day_once_and_only_days_past_the_margin(world: World) -> None:
    b = world.base
    first = _roll(world, until=b + timedelta(days=2))
    assert (first.first, first.last, first.days) == (b, b + timedelta(days=2), 3)
    assert first.rows > 0
    again = _roll(world, until=b + timedelta(days=2))
    assert again.days == 0  # idempotent: nothing new to roll
    _check_ranges(world, [(_at(b, 0), _at(world.today + timedelta(days=1), 0))])
    rest = _roll(world)
    yesterday = ru.last_rollable_day(datetime.now(UTC), timedelta(hours=1))
    assert (rest.first, rest.last) == (b + timedelta(days=3), yesterday)
    with psycopg.connect(world.settings.database_url) as conn:
        assert reports.rolled_through(conn) == yesterday
        days = {r[0] for r in conn.execute("SELECT DISTINCT day FROM report_rollups")}
    assert world.today not in days
    # Every day with events up to the last one past the margin (before 01:00 UTC that is the
    # day before yesterday: yesterday ended less than the hour's margin ago).
    assert days == {b + timedelta(days=i) for i in range(5) if b + timedelta(days=i) <= yesterday}


def _instants(world: World) -> list[datetime]:
    b = world.base
    points = [_at(b + timedelta(days=i), 0) for i in range(-1, 8)]
    for at in world.instants:
        points += [at, at - timedelta(microseconds=1), at + timedelta(microseconds=1)]
    return points


@st.composite
def _ranges(draw: st.DrawFn, points: list[datetime]) -> tuple[datetime, datetime]:
    lo, hi = min(points), max(points) + timedelta(days=1)
    anywhere = st.datetimes(min_value=lo.replace(tzinfo=None), max_value=hi.replace(tzinfo=None),
                            timezones=st.just(UTC))  # fmt: skip
    pick = st.sampled_from(points) | anywhere
    a, b = draw(pick), draw(pick)
    if a == b:
        b = a + timedelta(microseconds=draw(st.integers(1, 86_400_000_000)))
    return min(a, b), max(a, b)


def test_rollups_and_scan_give_the_pure_scans_totals_over_random_ranges(world: World) -> None:
    _roll(world)
    points = _instants(world)
    used = []

    @settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(_ranges(points), min_size=1, max_size=4))
    def check(ranges: list[tuple[datetime, datetime]]) -> None:
        used.append(_check_ranges(world, ranges))

    check()
    assert sum(used) > 0  # some ranges did read rollups


def test_period_shortcuts_in_non_utc_zones_and_the_tenant_report(world: World) -> None:
    _roll(world)
    now = datetime.now(UTC)
    with psycopg.connect(world.settings.database_url) as conn:
        for period in PERIODS:
            spec = RangeSpec.of(None, None, period)
            for tenant, budget_id in BUDGETS:
                budget = _budget(conn, tenant, budget_id)
                since, until = spec.for_budget(budget, now)
                assert budget_report(conn, budget, since, until) == _pure(
                    conn, budget, since, until
                ), (period, budget_id)

            def range_of(b: BudgetView, spec: RangeSpec = spec) -> tuple[datetime, datetime]:
                return spec.for_budget(b, now)

            for tenant in ("acme", "globex"):
                fast = list(tenant_reports(conn, tenant, range_of))
                with mock.patch.object(reports, "rolled_through", return_value=None):
                    slow = list(tenant_reports(conn, tenant, range_of))
                assert fast == slow, (period, tenant)


def test_readers_see_their_tenants_rollups_only_and_the_api_reads_them(world: World) -> None:
    _roll(world)
    s = world.settings
    b = world.base
    month = {"from": _at(b, 0).isoformat(), "to": _at(world.today, 0).isoformat()}
    with connect(s.database_url, role="ledger_reader") as conn, conn.transaction():
        bind_tenant(conn, "globex")
        tenants = {r[0] for r in conn.execute("SELECT DISTINCT tenant_id FROM report_rollups")}
        assert tenants == {"globex"}
        assert reports.rolled_through(conn) is not None
    role, secret = f"reader_{uuid.uuid4().hex[:10]}", f"pw-{uuid.uuid4().hex}"
    with psycopg.connect(s.database_url) as conn:
        create_reader(conn, "acme", role, SecretStr(secret))
    try:  # a tenant reader login (`readers create`): its own tenant's rollups only
        with psycopg.connect(as_login(s.database_url, role, secret)) as conn:
            rows = conn.execute("SELECT DISTINCT tenant_id FROM report_rollups").fetchall()
            assert rows == [("acme",)]
            assert reports.rolled_through(conn) is not None
    finally:
        with psycopg.connect(s.database_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
    with psycopg.connect(s.database_url, autocommit=True) as conn:
        key = create_key(conn, "acme", ("read",), "rollup test")[1]
        budget = _budget(conn, "acme", "in")
        expected = _pure(conn, budget, _at(b, 0), _at(world.today, 0))
    with TestClient(create_app(s)) as client:
        got = client.get(
            "/v1/tenants/acme/budgets/in/report",
            params=month,
            headers={"Authorization": f"Bearer {key}"},
        )
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["events"]["funds_reserved"]["count"] == expected.events["funds_reserved"].count
    assert sum(body["refusals"].values()) == sum(expected.refusals.values()) > 0


def test_a_row_recorded_late_into_a_rolled_day_is_found_by_verify_and_fixed_by_recompute(
    world: World,
) -> None:
    _roll(world)
    late_day = world.base + timedelta(days=1)
    with running_consumer(world.settings):  # a consumer whose clock is two days behind
        _Clock.at = _at(late_day, 15)
        try:
            n = ledger_count(world.settings.database_url) + 1
            produce(world.settings, [_cmd("fund", "acme", "ny", amount="3.00", currency="USD")])
            wait_for(lambda: ledger_count(world.settings.database_url) >= n, what="the ledger")
        finally:
            _Clock.at = None
    verify = cli(world.settings, "reports", "rollup", "--verify")
    assert verify.returncode == 1, verify.stdout + verify.stderr
    assert f"{late_day}: differs" in verify.stdout
    whole = [(_at(world.base, 0), _at(world.today, 0))]
    with psycopg.connect(world.settings.database_url) as conn:
        ny = _budget(conn, "acme", "ny")
        stale = budget_report(conn, ny, *whole[0])
        assert stale != _pure(conn, ny, *whole[0])  # the rollup misses the late row
    fixed = cli(world.settings, "reports", "rollup", "--recompute", str(late_day))
    assert fixed.returncode == 0, fixed.stderr
    verify = cli(world.settings, "reports", "rollup", "--verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert _check_ranges(world, whole) == 1
    again = cli(world.settings, "reports", "rollup")
    assert again.returncode == 0 and "nothing to roll up" in again.stdout, again.stderr
    future = cli(world.settings, "reports", "rollup", "--recompute", str(world.today))
    assert future.returncode == 2 and "not rolled up yet" in future.stderr
