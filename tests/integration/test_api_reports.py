"""Range reports (`GET .../budgets/{bid}/report`, `GET .../report`, `budget-ledger report`)
against a real ledger: commands go through Kafka, a consumer and the relay; every figure of a
report is checked against sums computed independently from the events TOPIC.

The history has three phases, with `t1` and `t2` taken between them: the report range is
[t1, t2), so phase 1 makes the opening balances, phase 2 the range, phase 3 lies after it.
"""

from __future__ import annotations

import csv
import io
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg import sql
from pydantic import SecretStr, TypeAdapter

from budget_ledger.entrypoints.api.app import create_app
from budget_ledger.entrypoints.api.keys import create_key
from budget_ledger.entrypoints.api.models import BudgetReportOut, TenantReportOut
from budget_ledger.entrypoints.report_render import CSV_COLUMNS, report_json
from budget_ledger.ledger.db import pool as make_pool
from budget_ledger.ledger.settings import Settings
from budget_ledger.projections.readers import create_reader
from budget_ledger.projections.reports import REFUSAL_REASONS, current_period, tenant_reports
from budget_ledger.schemas.events import ALERT_TYPES, EVENT_TYPES
from budget_ledger.schemas.money import to_minor
from tests.conftest import _delete_topics, as_login, cloned_database, new_prefix, service_settings
from tests.integration.support import (
    cli,
    cli_env,
    ledger_count,
    produce,
    read_topic,
    running_consumer,
    scalar,
    wait_for,
)

pytestmark = pytest.mark.integration

CURRENCIES = {"USD": 2, "ZWG": 2, "JPY": 0}
DIGITS = {"m1": 2, "r2": 0, "ny": 2}


def _cmd(kind: str, tenant: str, budget: str, **fields: Any) -> dict[str, Any]:
    return {
        "command_id": f"{kind}-{uuid.uuid4().hex[:12]}",
        "type": kind,
        "tenant_id": tenant,
        "budget_id": budget,
        **fields,
    }


@dataclass
class World:
    """The filled database, the range between the phases, the events read from the topic."""

    settings: Settings
    keys: dict[str, str]
    t1: datetime
    t2: datetime
    events: list[dict[str, Any]]  # every event of the events topic, as published
    alerts: list[dict[str, Any]]  # every alert of the alerts topic


@pytest.fixture(scope="module")
def world(
    kafka_bootstrap: str, pg_admin_dsn: str, template_database: str, app_login: tuple[str, str]
) -> Iterator[World]:
    prefix = new_prefix()
    with cloned_database(pg_admin_dsn, template_database) as url:
        settings = service_settings(kafka_bootstrap, url, prefix, app_login, currencies=CURRENCIES)
        try:
            yield _fill(settings)
        finally:
            _delete_topics(kafka_bootstrap, prefix)


def _fill(settings: Settings) -> World:
    a, g = "acme", "globex"
    usd = {"currency": "USD"}
    jpy = {"currency": "JPY"}
    phases: list[list[dict[str, Any]]] = [
        [
            _cmd("open_budget", a, "m1", currency="USD", period="monthly",
                 timezone="Africa/Harare", hard_cap="1000.00", soft_cap="100.00"),
            _cmd("fund", a, "m1", amount="500.00", **usd),
            _cmd("reserve", a, "m1", amount="60.00", ref_id="p1", **usd),
            _cmd("reserve", a, "m1", amount="50.00", ref_id="p2", **usd),  # soft cap crossed
            _cmd("open_budget", a, "r2", currency="JPY", period="rolling"),
            _cmd("fund", a, "r2", amount="7000", **jpy),
            _cmd("open_budget", a, "ny", currency="USD", period="monthly",
                 timezone="America/New_York"),
            _cmd("open_budget", g, "m1", currency="USD", period="rolling"),
            _cmd("fund", g, "m1", amount="999.99", **usd),
        ],
        [
            _cmd("charge", a, "m1", ref_id="p1", amount="40.00"),
            _cmd("release", a, "m1", ref_id="p2"),
            _cmd("reserve", a, "m1", amount="99999.00", ref_id="big", **usd),  # refused
            _cmd("charge", a, "m1", ref_id="nope", amount="1.00"),  # refused: not found
            _cmd("configure_budget", a, "m1", soft_cap="30.00"),  # 40 charged >= 30
            _cmd("fund", a, "m1", amount="100.50", **usd),
            _cmd("reserve", a, "m1", amount="200.00", ref_id="p3", **usd),
            _cmd("reserve", a, "r2", amount="2500", ref_id="j1", **jpy),
            _cmd("reserve", a, "r2", amount="9000", ref_id="j2", **jpy),  # refused
            _cmd("charge", a, "r2", ref_id="j1"),
            _cmd("fund", a, "ny", amount="10.00", **usd),
            _cmd("reserve", g, "m1", amount="5.00", ref_id="g1", **usd),
        ],
        [
            _cmd("reserve", a, "m1", amount="10.00", ref_id="p4", **usd),
            _cmd("fund", a, "r2", amount="1", **jpy),
        ],
    ]  # fmt: skip
    marks: list[datetime] = []
    with running_consumer(settings):
        done = 0
        for phase in phases:
            if marks or done:
                time.sleep(0.05)
            marks.append(datetime.now(UTC))
            time.sleep(0.05)  # this phase's events are recorded strictly after the mark
            done += produce(settings, phase)
            wait_for(lambda n=done: ledger_count(settings.database_url) >= n, what="the ledger")
        events = [
            orjson.loads(m.value()) for m in read_topic(settings, settings.topic_events, done)
        ]
        raised = int(scalar(settings.database_url, "SELECT count(*) FROM alerts"))
        assert raised > 0  # the soft cap crossings, the hard-cap refusal
        alerts = [
            orjson.loads(m.value()) for m in read_topic(settings, settings.topic_alerts, raised)
        ]
    with make_pool(settings.database_url, size=1) as pool, pool.connection() as conn:
        keys = {
            label: create_key(conn, tenant, scopes, f"{label} key")[1]
            for label, tenant, scopes in [
                ("acme", "acme", ("read",)),
                ("globex", "globex", ("read",)),
                ("acme_write", "acme", ("write",)),
            ]
        }
    return World(settings, keys, marks[1], marks[2], events, alerts)


@pytest.fixture(scope="module")
def client(world: World) -> Iterator[TestClient]:
    with TestClient(create_app(world.settings)) as c:
        yield c


def _get(client: TestClient, world: World, path: str, key: str | None = "acme",
         **params: Any) -> Any:  # fmt: skip
    headers = {"Authorization": f"Bearer {world.keys[key]}"} if key else {}
    return client.get(path, headers=headers, params=params)


def _range(world: World) -> dict[str, str]:
    return {"from": world.t1.isoformat(), "to": world.t2.isoformat()}


# --- the independent side: sums over the events topic ---------------------------------------


def _expected(world: World, tenant: str, budget: str, since: datetime, until: datetime,
              digits: int) -> dict[str, Any]:  # fmt: skip
    """What the report must say, computed from the events as published on the topic."""
    mine = sorted(
        (e for e in world.events if (e["tenant_id"], e["budget_id"]) == (tenant, budget)),
        key=lambda e: e["sequence"],
    )

    def at(e: dict[str, Any]) -> datetime:
        return datetime.fromisoformat(e["recorded_at"])

    def balances(before: datetime) -> dict[str, Any]:
        prior = [e for e in mine if at(e) < before]
        if not prior:
            zero = "0." + "0" * digits if digits else "0"
            return dict.fromkeys(("funded", "reserved", "charged", "available"), zero) | {
                "sequence": 0, "utilization_pct": "0.00", "recorded_at": None
            }  # fmt: skip
        e = prior[-1]
        fields = ("funded", "reserved", "charged", "available", "utilization_pct", "sequence")
        return {f: e[f] for f in fields} | {"recorded_at": e["recorded_at"]}

    inside = [e for e in mine if since <= at(e) < until]
    counts = Counter(e["type"] for e in inside)
    amounts: dict[str, int] = Counter()
    for e in inside:
        if e["amount"] is not None:
            amounts[e["type"]] += to_minor(e["amount"], digits)
    refusals = Counter(e["reason"] for e in inside if e["reason"] is not None)
    peak = max((Decimal(e["utilization_pct"]) for e in inside), default=None)
    return {
        "opening": balances(since),
        "closing": balances(until),
        "counts": counts,
        "amounts": amounts,
        "refusals": refusals,
        "peak": peak,
        "event_count": len(inside),
    }


def _check(report: dict[str, Any], expected: dict[str, Any], digits: int) -> None:
    assert report["opening"] == expected["opening"]
    assert report["closing"] == expected["closing"]
    assert report["event_count"] == expected["event_count"]
    assert list(report["events"]) == list(EVENT_TYPES)
    for etype, total in report["events"].items():
        assert total["count"] == expected["counts"][etype], etype
        assert to_minor(total["amount"], digits) == expected["amounts"][etype], etype
        assert len(total["amount"].partition(".")[2]) == digits
    assert list(report["refusals"])[: len(REFUSAL_REASONS)] == list(REFUSAL_REASONS)
    assert {k: v for k, v in report["refusals"].items() if v} == dict(expected["refusals"])
    peak = report["peak_utilization_pct"]
    assert (None if peak is None else Decimal(peak)) == expected["peak"]


# --- the budget report -------------------------------------------------------------------------


def test_the_budget_report_equals_the_sums_over_the_events_topic(
    client: TestClient, world: World
) -> None:
    for budget in ("m1", "r2", "ny"):
        response = _get(client, world, f"/v1/tenants/acme/budgets/{budget}/report", **_range(world))
        assert response.status_code == 200, response.text
        report = response.json()
        TypeAdapter(BudgetReportOut).validate_python(report)  # the documented shape
        d = DIGITS[budget]
        _check(report, _expected(world, "acme", budget, world.t1, world.t2, d), d)
        assert (report["tenant_id"], report["budget_id"]) == ("acme", budget)
    m1 = _get(client, world, "/v1/tenants/acme/budgets/m1/report", **_range(world)).json()
    # The history's own figures, spelled out once.
    assert m1["events"]["budget_funded"] == {"count": 1, "amount": "100.50"}
    assert m1["events"]["reservation_charged"] == {"count": 1, "amount": "40.00"}
    assert m1["refusals"]["reservation_not_found"] == 1
    assert m1["refusals"]["hard_cap_exceeded"] + m1["refusals"]["insufficient_funds"] == 1
    assert m1["opening"]["reserved"] == "110.00" and m1["closing"]["reserved"] == "200.00"
    assert m1["events"]["funds_reserved"]["count"] == 1  # p4 lies after the range
    r2 = _get(client, world, "/v1/tenants/acme/budgets/r2/report", **_range(world)).json()
    assert r2["closing"]["charged"] == "2500" and r2["refusals"]["insufficient_funds"] == 1


def test_the_consumer_wrote_the_report_columns_of_each_event(world: World) -> None:
    # Migration 014: the report reads reason and utilization_bp from the row (index-only scan);
    # the consumer's COPY writes them equal to the event's JSON, refusals' reasons included.
    url = world.settings.database_url
    differ = scalar(
        url,
        "SELECT count(*) FROM ledger WHERE reason IS DISTINCT FROM event ->> 'reason'"
        " OR utilization_bp IS DISTINCT FROM (event ->> 'utilization_pct')::numeric * 100",
    )
    assert differ == 0
    reasons = scalar(
        url,
        "SELECT count(*) FROM ledger WHERE reason IS NOT NULL"
        " AND type IN ('reservation_rejected', 'command_rejected')",
    )
    assert reasons == 3  # hard cap / insufficient funds, reservation_not_found, j2
    assert scalar(url, "SELECT count(*) FROM ledger WHERE utilization_bp > 0") > 0


def test_a_range_before_the_history_has_zero_balances_and_no_peak(
    client: TestClient, world: World
) -> None:
    params = {"from": "2001-01-01T00:00:00Z", "to": "2001-02-01T00:00:00+02:00"}
    report = _get(client, world, "/v1/tenants/acme/budgets/r2/report", **params).json()
    assert report["opening"]["funded"] == report["closing"]["available"] == "0"
    assert report["opening"]["recorded_at"] is None and report["peak_utilization_pct"] is None
    assert report["event_count"] == 0
    assert report["to"] == "2001-01-31T22:00:00.000000Z"  # the offset is honoured


def test_alerts_raised_equal_the_alerts_topic_in_the_range(
    client: TestClient, world: World
) -> None:
    seen = 0
    for budget in ("m1", "r2", "ny"):
        report = _get(client, world, f"/v1/tenants/acme/budgets/{budget}/report", **_range(world))
        raised = report.json()["alerts_raised"]
        assert list(raised) == list(ALERT_TYPES)
        expected = Counter(
            a["type"]
            for a in world.alerts
            if (a["tenant_id"], a["budget_id"]) == ("acme", budget)
            and world.t1 <= datetime.fromisoformat(a["recorded_at"]) < world.t2
        )
        assert {k: v for k, v in raised.items() if v} == dict(expected), budget
        seen += sum(expected.values())
    assert seen > 0  # the range holds alerts: the configure that lowered m1's soft cap


def test_the_budget_report_as_csv_parses_and_round_trips(client: TestClient, world: World) -> None:
    response = _get(client, world, "/v1/tenants/acme/budgets/m1/report", format="csv",
                    **_range(world))  # fmt: skip
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    disposition = response.headers["content-disposition"]
    stamp = (world.t1.strftime("%Y%m%dT%H%M%SZ"), world.t2.strftime("%Y%m%dT%H%M%SZ"))
    assert disposition.startswith(f'attachment; filename="acme-m1-{stamp[0]}-{stamp[1]}.csv"')
    body = response.content
    text = body.decode("utf-8")
    assert text.endswith("\r\n") and text.count("\r\n") == 2
    rows = list(csv.reader(io.StringIO(text, newline=""), dialect="excel"))
    assert rows[0] == list(CSV_COLUMNS) and len(rows) == 2 and len(rows[1]) == len(CSV_COLUMNS)
    again = io.StringIO(newline="")
    csv.writer(again, dialect="excel").writerows(rows)  # excel writes CRLF
    assert again.getvalue().encode() == body
    row = next(csv.DictReader(io.StringIO(text, newline=""), dialect="excel"))
    report = _get(client, world, "/v1/tenants/acme/budgets/m1/report", **_range(world)).json()
    assert row["budget_id"] == "m1" and row["from"] == report["from"]
    for side in ("opening", "closing"):
        for f in ("sequence", "funded", "reserved", "charged", "available", "utilization_pct"):
            assert row[f"{side}_{f}"] == str(report[side][f])
    for etype, total in report["events"].items():
        assert (row[f"{etype}_count"], row[f"{etype}_amount"]) == (
            str(total["count"]),
            total["amount"],
        )
    for reason in REFUSAL_REASONS:
        assert row[f"refused_{reason}"] == str(report["refusals"][reason])
    assert (
        row["refused_other"] == "" and row["peak_utilization_pct"] == report["peak_utilization_pct"]
    )


def test_period_shortcuts_are_the_current_period_in_the_budgets_zone(
    client: TestClient, world: World
) -> None:
    for period in ("today", "week", "month", "quarter", "year"):
        for budget, zone in (("m1", "Africa/Harare"), ("ny", "America/New_York")):
            before = datetime.now(UTC)
            report = _get(client, world, f"/v1/tenants/acme/budgets/{budget}/report",
                          period=period).json()  # fmt: skip
            after = datetime.now(UTC)
            expected = {current_period(period, zone, t) for t in (before, after)}
            got = (datetime.fromisoformat(report["from"]), datetime.fromisoformat(report["to"]))
            assert got in expected, (period, budget)
    month = _get(client, world, "/v1/tenants/acme/budgets/m1/report", period="month").json()
    assert month["from"].endswith("T22:00:00.000000Z")  # midnight of the 1st in Harare
    # The whole history is this month (or, right at a boundary, this year): the closing
    # balances of the year are the budget's current ones.
    year = _get(client, world, "/v1/tenants/acme/budgets/m1/report", period="year").json()
    budget = _get(client, world, "/v1/tenants/acme/budgets/m1").json()
    assert year["closing"]["sequence"] == budget["sequence"]


# --- the tenant report -------------------------------------------------------------------------


def test_the_tenant_report_holds_every_budget_of_the_tenant_and_totals(
    client: TestClient, world: World
) -> None:
    response = _get(client, world, "/v1/tenants/acme/report", **_range(world))
    assert response.status_code == 200, response.text
    report = response.json()
    TypeAdapter(TenantReportOut).validate_python(report)
    assert [b["budget_id"] for b in report["budgets"]] == ["m1", "ny", "r2"]
    assert {b["tenant_id"] for b in report["budgets"]} == {"acme"}  # never globex's m1
    for b in report["budgets"]:
        one = _get(client, world, f"/v1/tenants/acme/budgets/{b['budget_id']}/report",
                   **_range(world)).json()  # fmt: skip
        assert b == one
    totals = {t["currency"]: t for t in report["totals"]}
    assert set(totals) == {"USD", "JPY"} and totals["USD"]["budgets"] == 2
    usd = [b for b in report["budgets"] if b["currency"] == "USD"]
    for side in ("opening", "closing"):
        for f in ("funded", "reserved", "charged", "available"):
            assert to_minor(totals["USD"][side][f], 2) == sum(to_minor(b[side][f], 2) for b in usd)
    fund_count = sum(b["events"]["budget_funded"]["count"] for b in usd)
    assert totals["USD"]["events"]["budget_funded"]["count"] == fund_count == 2
    assert totals["USD"]["events"]["budget_funded"]["amount"] == "110.50"
    assert totals["JPY"]["refusals"]["insufficient_funds"] == 1
    globex = _get(client, world, "/v1/tenants/globex/report", key="globex", **_range(world))
    assert [(b["tenant_id"], b["budget_id"]) for b in globex.json()["budgets"]] == [
        ("globex", "m1")
    ]


def test_the_tenant_csv_is_one_row_per_budget(client: TestClient, world: World) -> None:
    response = _get(client, world, "/v1/tenants/acme/report", format="csv", **_range(world))
    assert response.status_code == 200, response.text
    assert 'filename="acme-all-' in response.headers["content-disposition"]
    text = response.content.decode("utf-8")
    rows = list(csv.DictReader(io.StringIO(text, newline=""), dialect="excel"))
    assert [(r["tenant_id"], r["budget_id"], r["currency"]) for r in rows] == [
        ("acme", "m1", "USD"),
        ("acme", "ny", "USD"),
        ("acme", "r2", "JPY"),
    ]
    json_report = _get(client, world, "/v1/tenants/acme/report", **_range(world)).json()
    for row, b in zip(rows, json_report["budgets"], strict=True):
        assert row["closing_funded"] == b["closing"]["funded"]
        assert row["events"] == str(b["event_count"])


def test_the_tenant_report_with_a_period_gives_each_budget_its_own_zone(
    client: TestClient, world: World
) -> None:
    report = _get(client, world, "/v1/tenants/acme/report", period="today").json()
    assert report["period"] == "today" and report["from"] is None
    froms = {b["budget_id"]: b["from"] for b in report["budgets"]}
    assert froms["m1"].endswith("T22:00:00.000000Z")  # Harare, UTC+2
    assert froms["ny"][11:13] in ("04", "05")  # New York, UTC-4 or UTC-5
    assert froms["r2"].endswith("T00:00:00.000000Z")  # a rolling budget's default zone, UTC


def test_the_tenant_report_in_chunks_equals_the_report_in_one(world: World) -> None:
    from budget_ledger.projections.api_reads import tenant_session

    with make_pool(world.settings.api_dsn(), world.settings.api_database_role, 1) as pool:

        def run(chunk: int) -> list[dict[str, Any]]:
            with tenant_session(pool, "acme") as conn:
                reports = tenant_reports(conn, "acme", lambda b: (world.t1, world.t2), chunk)
                return [report_json(r) for r in reports]

        one_each = run(1)
        assert [r["budget_id"] for r in one_each] == ["m1", "ny", "r2"]
        assert one_each == run(1000)


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"from": "2026-01-01T00:00:00Z"},
        {"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"},
        {"from": "2026-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"},
        {"from": "2026-01-01T00:00:00", "to": "2026-02-01T00:00:00"},
        {"from": "yesterday", "to": "2026-02-01T00:00:00Z"},
        {"period": "decade"},
        {"period": "month", "from": "2026-01-01T00:00:00Z"},
        {"period": "month", "format": "xlsx"},
    ],
)
def test_invalid_ranges_and_formats_are_422(
    client: TestClient, world: World, params: dict[str, str]
) -> None:
    for path in ("/v1/tenants/acme/budgets/m1/report", "/v1/tenants/acme/report"):
        response = _get(client, world, path, **params)
        assert response.status_code == 422, (path, params, response.text)


def test_keys_tenants_and_budgets_are_checked(client: TestClient, world: World) -> None:
    r = _range(world)
    for path in ("/v1/tenants/acme/budgets/m1/report", "/v1/tenants/acme/report"):
        assert _get(client, world, path, key=None, **r).status_code == 401
        other = _get(client, world, path, key="globex", **r)
        assert other.status_code == 403 and "acme" not in other.text.replace("/acme/", "")
        no_read = _get(client, world, path, key="acme_write", **r)
        assert no_read.status_code == 403 and "read" in no_read.json()["detail"]
    for unknown in ("nope", "ghost"):
        path = f"/v1/tenants/acme/budgets/{unknown}/report"
        assert _get(client, world, path, **r).status_code == 404
    # globex's m1 is not acme's: the same id under another tenant's key is globex's own.
    g = _get(client, world, "/v1/tenants/globex/budgets/m1/report", key="globex", **r).json()
    assert g["tenant_id"] == "globex" and g["closing"]["funded"] == "999.99"


# --- the CLI -------------------------------------------------------------------------------------


def test_the_cli_report_writes_what_the_api_answers(
    client: TestClient, world: World, tmp_path: Path
) -> None:
    r = _range(world)
    done = cli(world.settings, "report", "--tenant", "acme", "--budget", "m1",
               "--from", r["from"], "--to", r["to"], "--format", "json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    api = _get(client, world, "/v1/tenants/acme/budgets/m1/report", **r).json()
    assert orjson.loads(done.stdout) == api
    out = tmp_path / "acme.csv"
    done = cli(world.settings, "report", "--tenant", "acme", "--from", r["from"],
               "--to", r["to"], "--format", "csv", "-o", str(out))  # fmt: skip
    assert done.returncode == 0, done.stderr
    api_csv = _get(client, world, "/v1/tenants/acme/report", format="csv", **r).content
    assert out.read_bytes() == api_csv
    done = cli(world.settings, "report", "--tenant", "acme", "--period", "month")
    assert done.returncode == 0, done.stderr
    assert [b["budget_id"] for b in orjson.loads(done.stdout)["budgets"]] == ["m1", "ny", "r2"]


def test_the_cli_report_as_a_tenant_reader_login_sees_its_tenant_only(
    client: TestClient, world: World
) -> None:
    role, secret = f"reader_{uuid.uuid4().hex[:10]}", f"pw-{uuid.uuid4().hex}"
    url = world.settings.database_url
    with psycopg.connect(url) as conn:
        create_reader(conn, "acme", role, SecretStr(secret))
    try:
        env = {**cli_env(world.settings), "LEDGER_DATABASE_URL": as_login(url, role, secret)}
        base = [sys.executable, "-m", "budget_ledger.entrypoints.cli", "report"]
        r = _range(world)
        args = ["--budget", "m1", "--from", r["from"], "--to", r["to"]]
        done = subprocess.run([*base, "--tenant", "acme", *args], env=env, capture_output=True,
                              text=True, timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stderr
        api = _get(client, world, "/v1/tenants/acme/budgets/m1/report", **r).json()
        assert orjson.loads(done.stdout) == api
        other = subprocess.run([*base, "--tenant", "globex", *args], env=env,
                               capture_output=True, text=True, timeout=120)  # fmt: skip
        assert other.returncode == 2 and "no budget 'm1' of tenant 'globex'" in other.stderr
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--budget", "nope", "--period", "month"], "no budget 'nope'"),
        (["--from", "2026-13-01T00:00Z", "--to", "2026-12-01T00:00Z"], "not an RFC 3339"),
        (["--from", "2026-11-01T00:00", "--to", "2026-12-01T00:00Z"], "offset"),
        (["--from", "2026-12-01T00:00Z", "--to", "2026-11-01T00:00Z"], "before"),
        (["--from", "2026-12-01T00:00Z"], "give from and to"),
        (["--period", "month", "--to", "2026-11-01T00:00Z"], "not both"),
    ],
)
def test_the_cli_report_refuses_bad_arguments_with_exit_2(
    world: World, tmp_path: Path, args: list[str], message: str
) -> None:
    out = tmp_path / "never.json"
    done = cli(world.settings, "report", "--tenant", "acme", *args, "-o", str(out))
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert not out.exists() and not (tmp_path / "never.json.partial").exists()


def test_the_cli_report_says_when_it_cannot_write_the_file(world: World, tmp_path: Path) -> None:
    out = tmp_path / "missing" / "r.csv"
    done = cli(world.settings, "report", "--tenant", "acme", "--period", "week", "-o", str(out))
    assert done.returncode == 2 and "cannot write the report to" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
