"""The HTTP API against a real ledger: commands go through Kafka and a running consumer, the API
(in-process, FastAPI's TestClient) reads Postgres as ledger_reader with the key's tenant.

One database is filled once for the module (two tenants that share a budget id, budgets in 0-,
2- and 3-digit currencies, a monthly capped budget, reservations in every state, a refusal).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import orjson
import psycopg
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from budget_ledger.entrypoints.api.app import create_app
from budget_ledger.entrypoints.api.keys import create_key, key_hash, key_id_of, revoke_key
from budget_ledger.ledger.db import pool as make_pool
from budget_ledger.ledger.db import read_only_pool
from budget_ledger.ledger.settings import Settings
from budget_ledger.projections.api_reads import (
    budget_read,
    keyed_reads,
    keyed_session,
    tenant_session,
)
from tests.integration.api_world import KeySpec, Services, api_world
from tests.integration.support import (
    cli,
    ledger_count,
    produce,
    running_consumer,
    wait_for,
)

pytestmark = pytest.mark.integration

CURRENCIES = {"USD": 2, "ZWG": 2, "JPY": 0, "BHD": 3}


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
    """The filled database, the app's settings and one key per case."""

    settings: Settings
    keys: dict[str, str]
    revoked_id: str
    refused_command: str
    accepted_command: str


@pytest.fixture(scope="module")
def world(
    kafka_bootstrap: str, pg_admin_dsn: str, template_database: str, app_login: tuple[str, str]
) -> Iterator[World]:
    services = Services(kafka_bootstrap, pg_admin_dsn, template_database, app_login)
    keys: list[KeySpec] = [
        (label, tenant, scopes, f"{label} test key")
        for label, tenant, scopes in [
            ("acme", "acme", ("read",)),
            ("globex", "globex", ("read", "write")),
            ("acme_write_only", "acme", ("write",)),
            ("platform", None, ("read",)),
            ("revoked", "acme", ("read",)),
        ]
    ]
    with api_world(services, keys, currencies=CURRENCIES) as w:
        yield _fill(w.settings, w.keys)


def _fill(settings: Settings, keys: dict[str, str]) -> World:
    a, g = "acme", "globex"
    usd = {"currency": "USD"}
    phases: list[list[dict[str, Any]]] = [
        [
            _cmd("open_budget", a, "b1", currency="USD", period="rolling"),
            _cmd("fund", a, "b1", amount="500.00", **usd),
            _cmd("open_budget", g, "b1", currency="USD", period="rolling"),
            _cmd("fund", g, "b1", amount="999.99", **usd),
            _cmd("reserve", g, "b1", amount="1.00", ref_id="gr1", **usd),
            _cmd(
                "open_budget",
                a,
                "b2",
                currency="USD",
                period="monthly",
                timezone="Africa/Harare",
                hard_cap="1000.00",
                soft_cap="100.00",
            ),
            _cmd("fund", a, "b2", amount="120.00", **usd),
            _cmd("reserve", a, "b2", amount="115.00", ref_id="big", **usd),
            _cmd("open_budget", a, "b3", currency="JPY", period="rolling"),
            _cmd("fund", a, "b3", amount="5000", currency="JPY"),
            _cmd("open_budget", a, "b4", currency="BHD", period="rolling"),
            _cmd("fund", a, "b4", amount="12.345", currency="BHD"),
            # A budget nobody opened: the refusal makes it known to the ledger, not to the API.
            _cmd("reserve", a, "ghost", amount="1.00", ref_id="g1", **usd),
        ],
        [
            _cmd("reserve", a, "b1", amount="120.50", ref_id="r1", **usd),
            _cmd("reserve", a, "b1", amount="30.00", ref_id="r2", **usd),
            _cmd("reserve", a, "b1", amount="10.00", ref_id="r3", **usd),
        ],
        [
            _cmd("charge", a, "b1", ref_id="r1", amount="100.00"),
            _cmd("release", a, "b1", ref_id="r2"),
            _cmd("reserve", a, "b1", amount="99999.00", ref_id="r4", **usd),  # refused
        ],
    ]
    with running_consumer(settings):
        done = 0
        for phase in phases:
            done += produce(settings, phase)
            wait_for(lambda n=done: ledger_count(settings.database_url) >= n, what="the ledger")
            time.sleep(0.05)  # the next phase's events are recorded strictly later
    revoked_id = keys["revoked"].split("_")[1]
    with psycopg.connect(settings.database_url) as conn:
        assert revoke_key(conn, revoked_id)
    return World(
        settings,
        keys,
        revoked_id,
        refused_command=phases[2][2]["command_id"],
        accepted_command=phases[2][0]["command_id"],
    )


@pytest.fixture(scope="module")
def client(world: World) -> Iterator[TestClient]:
    with TestClient(create_app(world.settings)) as c:
        yield c


def _get(client: TestClient, world: World, path: str, key: str = "acme", **params: Any) -> Any:
    headers = {"Authorization": f"Bearer {world.keys[key]}"} if key else {}
    return client.get(path, headers=headers, params=params)


def _ok(client: TestClient, world: World, path: str, key: str = "acme", **params: Any) -> Any:
    response = _get(client, world, path, key, **params)
    assert response.status_code == 200, response.text
    return response.json()


def _events(world: World, tenant: str, budget: str) -> list[tuple[datetime, dict[str, Any]]]:
    """A budget's events straight from the ledger, as the owner (independent of the API)."""
    with psycopg.connect(world.settings.database_url) as conn:
        rows = conn.execute(
            "SELECT recorded_at, event::text FROM ledger WHERE tenant_id = %s AND budget_id = %s"
            " ORDER BY sequence",
            (tenant, budget),
        ).fetchall()
    return [(at, orjson.loads(text)) for at, text in rows]


# --- reads ---------------------------------------------------------------------------------------


def test_budget_detail_renders_the_balances_with_the_currency_digits(
    client: TestClient, world: World
) -> None:
    b1 = _ok(client, world, "/v1/tenants/acme/budgets/b1")
    last = _events(world, "acme", "b1")[-1][1]
    for field in ("funded", "reserved", "charged", "available", "utilization_pct", "sequence"):
        assert b1[field] == last[field], field
    assert (b1["funded"], b1["reserved"], b1["charged"]) == ("500.00", "10.00", "100.00")
    assert b1["available"] == "390.00" and b1["limit"] == "500.00"
    assert b1["currency"] == "USD" and b1["next_reset_at"] is None
    assert b1["config"]["period"] == "rolling" and b1["config"]["hard_cap"] is None
    assert _ok(client, world, "/v1/tenants/acme/budgets/b3")["funded"] == "5000"
    assert _ok(client, world, "/v1/tenants/acme/budgets/b4")["available"] == "12.345"


def test_a_monthly_budget_shows_its_limits_flags_and_next_reset(
    client: TestClient, world: World
) -> None:
    b2 = _ok(client, world, "/v1/tenants/acme/budgets/b2")
    assert b2["config"]["hard_cap"] == "1000.00" and b2["config"]["soft_cap"] == "100.00"
    assert b2["config"]["timezone"] == "Africa/Harare"
    assert b2["reserved"] == "115.00" and b2["limit"] == "120.00"
    assert b2["soft_cap_exceeded"] and b2["hard_cap_approaching"]  # 115 >= 100, 115 >= 95% of 120
    # The next local midnight of the 1st in Harare (UTC+2) is 22:00 UTC.
    assert b2["next_reset_at"].endswith("T22:00:00.000000Z")
    assert b2["period_start"] < _now_text() < b2["next_reset_at"]


def _now_text() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_budgets_page_by_budget_id_and_only_the_tenants_own(
    client: TestClient, world: World
) -> None:
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = _ok(client, world, "/v1/tenants/acme/budgets", **params)
        assert len(page["budgets"]) <= 2
        seen += [b["budget_id"] for b in page["budgets"]]
        assert all(b["tenant_id"] == "acme" for b in page["budgets"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["b1", "b2", "b3", "b4"]  # ordered, each once, no unopened "ghost"
    globex = _ok(client, world, "/v1/tenants/globex/budgets", key="globex")
    assert [(b["budget_id"], b["funded"]) for b in globex["budgets"]] == [("b1", "999.99")]
    assert [b["reserved"] for b in globex["budgets"]] == ["1.00"]
    assert _get(client, world, "/v1/tenants/acme/budgets", cursor="%%").status_code == 400


def test_utilization_now(client: TestClient, world: World) -> None:
    u = _ok(client, world, "/v1/tenants/acme/budgets/b2/utilization")
    assert (u["funded"], u["reserved"], u["charged"], u["available"]) == (
        "120.00",
        "115.00",
        "0.00",
        "5.00",
    )
    assert u["utilization_pct"] == "95.83" and u["as_of"] is None
    assert u["soft_cap_exceeded"] and u["hard_cap_approaching"]


def test_utilization_as_of_equals_the_event_recorded_by_then(
    client: TestClient, world: World
) -> None:
    events = _events(world, "acme", "b1")
    assert len({at for at, _ in events}) >= 3  # three phases, three recording times at least
    for at, _ in events:
        # The last event recorded at or before `at` (a batch shares one recorded_at).
        expected = [e for t, e in events if t <= at][-1]
        u = _ok(client, world, "/v1/tenants/acme/budgets/b1/utilization", as_of=at.isoformat())
        for field in ("funded", "reserved", "charged", "available", "utilization_pct"):
            assert u[field] == expected[field], (field, at)
        assert u["sequence"] == expected["sequence"]
        assert u["recorded_at"] == expected["recorded_at"]
        assert not u["soft_cap_exceeded"]
    before = events[0][0] - timedelta(seconds=1)
    path = "/v1/tenants/acme/budgets/b1/utilization"
    assert _get(client, world, path, as_of=before.isoformat()).status_code == 404
    later = _ok(client, world, path, as_of=(events[-1][0] + timedelta(days=1)).isoformat())
    assert later["sequence"] == events[-1][1]["sequence"]
    assert _get(client, world, path, as_of="2026-01-01T00:00:00").status_code == 422  # no offset
    assert _get(client, world, path, as_of="yesterday").status_code == 422
    assert _get(client, world, path, as_of="0001-01-01T00:00:00+01:00").status_code == 422
    assert _get(client, world, path, as_of="9999-12-31T23:00:00-05:00").status_code == 422


def test_as_of_takes_the_flags_of_the_limits_in_force_then(
    client: TestClient, world: World
) -> None:
    events = _events(world, "acme", "b2")  # open, fund 120, reserve 115 (one batch or more)
    funded_at = next(at for at, e in events if e["type"] == "budget_funded")
    u = _ok(client, world, "/v1/tenants/acme/budgets/b2/utilization", as_of=funded_at.isoformat())
    expected = [e for t, e in events if t <= funded_at][-1]
    assert u["reserved"] == expected["reserved"]
    assert u["soft_cap_exceeded"] == (expected["reserved"] == "115.00")


def test_reservations_by_status_a_page_at_a_time(client: TestClient, world: World) -> None:
    path = "/v1/tenants/acme/budgets/b1/reservations"
    first = _ok(client, world, path, limit=2)
    second = _ok(client, world, path, limit=2, cursor=first["next_cursor"])
    assert second["next_cursor"] is None
    rows = {r["ref_id"]: r for r in first["reservations"] + second["reservations"]}
    assert list(rows) == ["r1", "r2", "r3"]  # r4 was refused: never a reservation
    assert (rows["r1"]["status"], rows["r1"]["amount"], rows["r1"]["charged"]) == (
        "charged",
        "120.50",
        "100.00",
    )
    assert rows["r2"]["status"] == "released" and rows["r3"]["status"] == "reserved"
    held = _ok(client, world, path, status="reserved")["reservations"]
    assert [r["ref_id"] for r in held] == ["r3"]
    assert _get(client, world, path, status="lost").status_code == 422


def test_a_commands_outcome_or_pending(client: TestClient, world: World) -> None:
    path = "/v1/tenants/acme/commands/"
    refused = _ok(client, world, path + world.refused_command)
    assert refused["status"] == "recorded" and refused["type"] == "reservation_rejected"
    assert refused["event"]["reason"] == "insufficient_funds"
    accepted = _ok(client, world, path + world.accepted_command)
    assert accepted["type"] == "reservation_charged" and accepted["event"]["amount"] == "100.00"
    assert _ok(client, world, path + "never-sent")["status"] == "pending"
    # Another tenant's command is not found in its ledger: pending, not its outcome.
    other = _ok(client, world, "/v1/tenants/globex/commands/" + world.accepted_command, "globex")
    assert other == {
        "command_id": world.accepted_command,
        "status": "pending",
        "budget_id": None,
        "sequence": None,
        "type": None,
        "event": None,
    }


# --- identity ------------------------------------------------------------------------------------


def test_no_key_wrong_key_or_revoked_key_is_401(client: TestClient, world: World) -> None:
    path = "/v1/tenants/acme/budgets/b1"
    assert client.get(path).status_code == 401
    assert client.get(path).headers["WWW-Authenticate"] == "Bearer"
    good = world.keys["acme"]
    wrong_secret = good[:-2] + ("AA" if not good.endswith("AA") else "BB")
    unknown_id = "blk_" + "0" * 16 + good[20:]
    for header in (
        "Bearer nonsense",
        f"Bearer {wrong_secret}",
        f"Bearer {unknown_id}",
        f"Basic {good}",
        good,
        f"Bearer {world.keys['revoked']}",
    ):
        response = client.get(path, headers={"Authorization": header})
        assert response.status_code == 401, header
        assert response.json() == {"detail": "missing, unknown or revoked API key"}


def test_another_tenants_path_is_403_without_its_data(client: TestClient, world: World) -> None:
    for path in (
        "/v1/tenants/globex/budgets",
        "/v1/tenants/globex/budgets/b1",
        "/v1/tenants/globex/budgets/b1/utilization",
        "/v1/tenants/globex/budgets/b1/reservations",
        "/v1/tenants/globex/commands/x",
    ):
        response = _get(client, world, path)
        assert response.status_code == 403, path
        assert "999.99" not in response.text and "b1" not in response.text


def test_a_missing_scope_is_403_naming_it(client: TestClient, world: World) -> None:
    response = _get(client, world, "/v1/tenants/acme/budgets", key="acme_write_only")
    assert response.status_code == 403
    assert "'read'" in response.json()["detail"]


def test_an_unknown_budget_of_your_own_tenant_is_404(client: TestClient, world: World) -> None:
    for path in ("ghost", "nope", "nope/utilization", "nope/reservations"):
        assert _get(client, world, f"/v1/tenants/acme/budgets/{path}").status_code == 404, path
    assert _get(client, world, "/v1/tenants/acme/budgets/a%00b").status_code == 422


def test_a_platform_key_reads_every_tenant(client: TestClient, world: World) -> None:
    acme = _ok(client, world, "/v1/tenants/acme/budgets/b1", key="platform")
    globex = _ok(client, world, "/v1/tenants/globex/budgets/b1", key="platform")
    assert (acme["funded"], globex["funded"]) == ("500.00", "999.99")


def test_openapi_and_docs_are_served(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert "/v1/tenants/{tid}/budgets/{bid}/utilization" in spec["paths"]
    assert "/v1/tenants/{tid}/commands/{command_id}" in spec["paths"]
    assert client.get("/docs").status_code == 200


# --- row-level security under the API's session ------------------------------------------------


def test_the_session_shows_one_tenant_even_to_a_query_without_a_tenant_filter(
    world: World,
) -> None:
    pool = make_pool(world.settings.database_url, "ledger_reader", 2)
    try:
        for tenant in ("acme", "globex"):
            with tenant_session(pool, tenant) as conn:
                for table in ("ledger", "budget_balances", "reservations"):
                    tenants = {
                        r[0] for r in conn.execute(f"SELECT tenant_id FROM {table}").fetchall()
                    }
                    assert tenants == {tenant}, table
                budgets = {r[0] for r in conn.execute("SELECT budget_id FROM budget_balances")}
                assert "b1" in budgets and (tenant == "acme") == ("b2" in budgets)
        # The setting is SET LOCAL: the next transaction on the same connection sees nothing.
        with pool.connection() as conn:
            assert conn.execute("SELECT count(*) FROM ledger").fetchone() == (0,)
            role = conn.execute("SELECT current_user").fetchone()
            assert role == ("ledger_reader",)
        # The reader cannot read the key table itself, nor write in a session.
        with pytest.raises(psycopg.errors.InsufficientPrivilege), pool.connection() as conn:
            conn.execute("SELECT * FROM api_keys")
        with (
            pytest.raises(psycopg.errors.ReadOnlySqlTransaction),
            tenant_session(pool, "acme") as conn,
        ):
            conn.execute("CREATE TEMP TABLE t (x int)")
    finally:
        pool.close()


def test_the_database_binds_a_tenant_only_for_a_key_that_may_read_it(world: World) -> None:
    """`keyed_session` binds in SQL on the conditions `check_caller` checks in Python: every
    refusal leaves the transaction without a tenant, so it reads nothing."""
    pool = make_pool(world.settings.database_url, "ledger_reader", 2)

    def bound(label: str, tenant: str, scope: str = "read", key: str | None = None) -> bool:
        key = key or world.keys[label]
        key_id = key_id_of(key)
        assert key_id is not None
        with keyed_session(pool, key_id, key_hash(key), tenant, scope) as (row, conn):
            seen = {r[0] for r in conn.execute("SELECT tenant_id FROM budget_balances")}
            assert row is not None
            assert seen == ({tenant} if row[-1] == tenant else set())
            return row[-1] == tenant

    try:
        assert bound("acme", "acme") and bound("platform", "globex")
        assert not bound("acme", "globex")  # another tenant's key
        assert not bound("acme_write_only", "acme")  # no read scope
        assert bound("acme_write_only", "acme", scope="write")
        assert not bound("revoked", "acme")
        forged = world.keys["acme"][:-4] + "AAAA"  # the right id, a wrong secret
        assert not bound("acme", "acme", key=forged)
        with keyed_session(pool, "0" * 16, bytes(32), "acme", "read") as (row, conn):
            assert row is None  # no such key
            assert conn.execute("SELECT count(*) FROM budget_balances").fetchone() == (0,)
    finally:
        pool.close()


def test_pipelined_reads_of_a_refused_key_see_no_rows(world: World) -> None:
    """`keyed_reads` sends the reads with the key statement, before the API checks the key: for
    a key that may not read the tenant they run without one and find nothing."""

    async def reads(label: str, tenant: str) -> tuple[object, list[object]]:
        pool = read_only_pool(world.settings.database_url, "ledger_reader", 1)
        await pool.open()
        try:
            key = world.keys[label]
            key_id = key_id_of(key)
            assert key_id is not None
            got = [budget_read(tenant, "b1"), budget_read(tenant, "b2")]
            return await keyed_reads(pool, key_id, key_hash(key), tenant, "read", got)
        finally:
            await pool.close()

    row, (b1, b2) = asyncio.run(reads("acme", "acme"))
    assert row is not None and row[-1] == "acme" and b1 is not None and b2 is not None
    for label, tenant in [("acme", "globex"), ("revoked", "acme"), ("acme_write_only", "acme")]:
        row, rows = asyncio.run(reads(label, tenant))
        assert row is not None and row[-1] is None and rows == [None, None], label


# --- the keys command ----------------------------------------------------------------------------


def test_keys_create_list_revoke(client: TestClient, world: World) -> None:
    made = cli(world.settings, "keys", "create", "--tenant", "acme", "--scopes", "read", "--name",
               "finance dashboard")  # fmt: skip
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip().splitlines()[-1]
    assert key.startswith("blk_")
    key_id = key.split("_")[1]
    headers = {"Authorization": f"Bearer {key}"}
    assert client.get("/v1/tenants/acme/budgets/b1", headers=headers).status_code == 200
    listed = cli(world.settings, "keys", "list", "--tenant", "acme")
    assert (
        listed.returncode == 0 and key_id in listed.stdout and "finance dashboard" in listed.stdout
    )
    assert key.split("_", 2)[2] not in listed.stdout  # never the secret
    assert cli(world.settings, "keys", "revoke", key_id).returncode == 0
    assert client.get("/v1/tenants/acme/budgets/b1", headers=headers).status_code == 401
    again = cli(world.settings, "keys", "revoke", key_id)
    assert again.returncode == 2 and "no active key" in again.stderr
    bad = cli(world.settings, "keys", "create", "--tenant", "acme", "--scopes", "read,root")
    assert bad.returncode == 2 and "root" in bad.stderr
    none = cli(world.settings, "keys", "create", "--scopes", "read")
    assert none.returncode == 2 and "--platform" in none.stderr
    with psycopg.connect(world.settings.database_url) as conn:
        stored = conn.execute("SELECT secret_hash FROM api_keys WHERE key_id = %s", (key_id,))
        assert key.encode() not in bytes(stored.fetchone()[0])  # type: ignore[index]


# --- the ledger ----------------------------------------------------------------------------------


def _walk(client: TestClient, world: World, path: str, **params: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    cursor = None
    for _ in range(100):
        page = _ok(client, world, path, **params, **({"cursor": cursor} if cursor else {}))
        assert len(page["entries"]) <= params.get("limit", 100)
        out += page["entries"]
        cursor = page["next_cursor"]
        if cursor is None:
            return out
    raise AssertionError("the pages did not end")


def test_ledger_pages_newest_first_each_entry_once(client: TestClient, world: World) -> None:
    events = [e for _, e in _events(world, "acme", "b1")]
    path = "/v1/tenants/acme/budgets/b1/ledger"
    for limit in (1, 2, 3, 100):
        entries = _walk(client, world, path, limit=limit)
        assert [e["sequence"] for e in entries] == [e["sequence"] for e in reversed(events)]
    newest = _ok(client, world, path, limit=1)["entries"][0]
    wire = events[-1]
    assert newest == {k: v for k, v in wire.items() if k not in ("tenant_id", "budget_id")}
    assert newest["type"] == "reservation_rejected" and newest["reason"] == "insufficient_funds"


def test_ledger_by_type_and_time_window(client: TestClient, world: World) -> None:
    timed = _events(world, "acme", "b1")
    path = "/v1/tenants/acme/budgets/b1/ledger"
    reserved = _walk(client, world, path, type="funds_reserved", limit=2)
    assert [e["ref_id"] for e in reserved] == ["r3", "r2", "r1"]
    assert _walk(client, world, path, type="no_such_type") == []
    times = sorted({at for at, _ in timed})
    window = {"from": times[1].isoformat(), "to": times[-1].isoformat()}
    inside = _walk(client, world, path, limit=2, **window)
    expected = [e["sequence"] for at, e in timed if times[1] <= at < times[-1]]
    assert [e["sequence"] for e in inside] == sorted(expected, reverse=True) and expected
    assert _get(client, world, path, cursor="bm90IGEgY3Vyc29y").status_code == 400
    assert _get(client, world, path, **{"from": "2026-01-01T00:00:00"}).status_code == 422
    assert _get(client, world, path, to="0001-01-01T00:00:00+01:00").json()["detail"][0]["loc"] == [
        "query",
        "to",
    ]
    assert _get(client, world, "/v1/tenants/acme/budgets/nope/ledger").status_code == 404
    assert _get(client, world, "/v1/tenants/globex/budgets/b1/ledger").status_code == 403


# --- the server ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("workers", "access_log"), [("1", "--access-log"), ("2", "--no-access-log")]
)
def test_serve_answers_over_http(world: World, workers: str, access_log: str) -> None:
    import socket
    import subprocess
    import sys

    import httpx

    from tests.integration.support import cli_env

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**cli_env(world.settings), "LEDGER_CURRENCIES": orjson.dumps(CURRENCIES).decode()}
    proc = subprocess.Popen(
        [sys.executable, "-m", "budget_ledger.entrypoints.cli", "serve", "--port", str(port),
         "--workers", workers, access_log],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            try:
                return httpx.get(f"{base}/openapi.json", timeout=2).status_code == 200
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                return False

        wait_for(up, timeout=60, what="the API server")
        headers = {"Authorization": f"Bearer {world.keys['acme']}"}
        for _ in range(4):  # more requests than workers: each worker answers with its own pool
            got = httpx.get(f"{base}/v1/tenants/acme/budgets/b4", headers=headers, timeout=10)
            assert got.status_code == 200 and got.json()["funded"] == "12.345"
        assert httpx.get(f"{base}/v1/tenants/acme/budgets/b4", timeout=10).status_code == 401
    finally:
        proc.terminate()
        # uvicorn shuts down gracefully, then re-raises the SIGTERM it caught (one process).
        assert proc.wait(30) in (0, -15)
    # A line per request with --access-log; none without (the default).
    logged = proc.stdout.read().decode() if proc.stdout else ""
    assert ("GET /v1/tenants/acme/budgets/b4" in logged) == (access_log == "--access-log"), logged


# --- no request makes it fail --------------------------------------------------------------------

_TEXT = st.text(st.characters(blacklist_categories=["Cs"]), max_size=140)
_PARAM = st.one_of(
    _TEXT, st.integers(-5, 5000).map(str), st.datetimes().map(lambda d: d.isoformat() + "Z")
)


@hypothesis_settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    segment=st.sampled_from(["", "/b1", "/b1/utilization", "/b1/reservations", "/b1/ledger"]),
    bid=_TEXT,
    params=st.dictionaries(
        st.sampled_from(["limit", "cursor", "as_of", "status", "from", "to", "type"]), _PARAM
    ),
)
def test_no_request_is_answered_with_a_server_error(
    client: TestClient, world: World, segment: str, bid: str, params: dict[str, str]
) -> None:
    path = "/v1/tenants/acme/budgets" + segment
    if bid and segment:
        path = path.replace("b1", quote(bid, safe=""), 1)
    elif bid:
        path = "/v1/tenants/acme/commands/" + quote(bid, safe="")
    response = _get(client, world, path, **params)
    assert response.status_code < 500, (path, params, response.text)
    assert isinstance(response.json(), dict)


# --- paging a long ledger while it grows ---------------------------------------------------------


def test_paging_10000_entries_while_events_are_appended(settings: Settings) -> None:
    import threading

    reserves = [
        _cmd("reserve", "acme", "hot", amount="0.01", ref_id=f"r{i}", currency="USD")
        for i in range(10_500)
    ]
    opening = [
        _cmd("open_budget", "acme", "hot", currency="USD", period="rolling"),
        _cmd("fund", "acme", "hot", amount="1000000.00", currency="USD"),
    ]
    with running_consumer(settings, relay=False):
        produce(settings, opening + reserves[:9_998])
        wait_for(lambda: ledger_count(settings.database_url) >= 10_000, what="10,000 entries")
        with psycopg.connect(settings.database_url) as conn:
            key = create_key(conn, "acme", ("read",), "pager")[1]
        late = threading.Thread(target=produce, args=(settings, reserves[9_998:]))
        with TestClient(create_app(settings)) as client:
            headers = {"Authorization": f"Bearer {key}"}
            path = "/v1/tenants/acme/budgets/hot/ledger"
            seen: list[int] = []
            cursor = None
            while True:
                params: dict[str, Any] = {"limit": 37, **({"cursor": cursor} if cursor else {})}
                page = client.get(path, headers=headers, params=params).json()
                seen += [e["sequence"] for e in page["entries"]]
                if len(seen) == 37:
                    late.start()  # 500 more events are recorded while the walk goes on
                cursor = page["next_cursor"]
                if cursor is None:
                    break
        late.join(60)
        wait_for(lambda: ledger_count(settings.database_url) >= 10_502, what="the late events")
    top = seen[0]
    assert top == 10_000  # the walk began before the late events
    assert seen == list(range(top, 0, -1))  # every entry of the first page and below, once
