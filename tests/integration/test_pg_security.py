"""PostgreSQL least privilege (real Postgres): per-tenant reader logins, the API's reader role,
and the keyed hash chain that a database writer alone cannot extend."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import psycopg
import pytest
from confluent_kafka import Producer
from psycopg import sql
from pydantic import SecretStr

from budget_ledger.consumers import sweeper
from budget_ledger.consumers.command_consumer import CommandConsumer
from budget_ledger.consumers.processor import (
    BatchContext,
    BatchOutput,
    Incoming,
    PartitionState,
    process_batch,
)
from budget_ledger.consumers.relay import Relay
from budget_ledger.ledger import store
from budget_ledger.ledger.chain_mac import ChainKey, ChainKeyring
from budget_ledger.ledger.db import connect
from budget_ledger.ledger.settings import Settings
from budget_ledger.ledger.store import load_budgets
from budget_ledger.projections.chain_seal import seal_legacy
from budget_ledger.projections.readers import ReaderRefused, create_reader
from budget_ledger.projections.reconcile import ReconcileOptions, iter_lines, reconcile
from budget_ledger.projections.store import upsert_projections
from tests.conftest import CHAIN_KEYS, as_login
from tests.integration.support import (
    fund,
    ledger_count,
    open_budget,
    produce,
    reserve,
    running_consumer,
    wait_for,
)

pytestmark = pytest.mark.integration

TABLES = ("ledger", "budget_balances", "reservations")
_LEDGER_ROW = (
    "INSERT INTO ledger (tenant_id, budget_id, sequence, type, command_id, command_fingerprint,"
    " funded, reserved, charged, available, kafka_topic, kafka_partition, kafka_offset, event,"
    " recorded_at, prev_hash, hash) VALUES (%(t)s, 'b1', 1, 'budget_funded', %(c)s, 'fp',"
    " 100, 0, 0, 100, 'x', 0, %(o)s, '{}', now(), '', 'h')"
)
_BALANCE_ROW = (
    "INSERT INTO budget_balances (tenant_id, budget_id, opened, funded, reserved, charged,"
    " available, budget_limit, utilization_pct, sequence, last_hash, updated_at)"
    " VALUES (%(t)s, 'b1', true, 100, 0, 0, 100, 100, 0, 1, 'h', now())"
)
_RESERVATION_ROW = (
    "INSERT INTO reservations (tenant_id, budget_id, ref_id, status, amount, charged, command_id,"
    " created_seq, updated_seq) VALUES (%(t)s, 'b1', 'r1', 'reserved', 5, 0, 'c', 1, 1)"
)


def _seed(database_url: str, tenants: tuple[str, ...] = ("A", "B")) -> None:
    with psycopg.connect(database_url) as conn:
        for i, t in enumerate(tenants):
            conn.execute(_LEDGER_ROW, {"t": t, "c": f"c{i}", "o": i})
            conn.execute(_BALANCE_ROW, {"t": t})
            conn.execute(_RESERVATION_ROW, {"t": t})


def _each(*tenants: str) -> dict[str, set[str]]:
    """The tenants every table should show."""
    return {table: set(tenants) for table in TABLES}


def _tenants(conn: psycopg.Connection) -> dict[str, set[str]]:
    return {
        table: {r[0] for r in conn.execute(f"SELECT tenant_id FROM {table}")} for table in TABLES
    }


@pytest.fixture
def reader_role(database_url: str) -> Iterator[str]:
    """A fresh role name, dropped afterwards (roles are cluster-wide)."""
    role = f"reader_{uuid.uuid4().hex[:10]}"
    yield role
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def test_a_tenant_reader_sees_its_tenant_only_whatever_it_sets(
    database_url: str, reader_role: str
) -> None:
    _seed(database_url)
    with psycopg.connect(database_url) as conn:
        assert create_reader(conn, "A", reader_role, SecretStr("pw-A-1")) == "created"
    with psycopg.connect(as_login(database_url, reader_role, "pw-A-1"), autocommit=True) as conn:
        assert _tenants(conn) == _each("A")
        # The API's setting means nothing for this role.
        conn.execute("SET ledger.tenant_id = 'B'")
        assert _tenants(conn) == _each("A")
        # Its group role maps to no tenant: nothing at all.
        conn.execute("SET ROLE ledger_tenant_reader")
        assert _tenants(conn) == _each()
        conn.execute("RESET ROLE")
        for other in ("ledger_reader", "ledger_app", "ledger_owner"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(other)))
        # The mapping and the writes are out of reach.
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM tenant_readers")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("INSERT INTO tenant_readers (role, tenant_id) VALUES (current_user, 'B')")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE budget_balances SET funded = 0")


def test_readers_create_refuses_to_remap_or_adopt_a_role(
    database_url: str, reader_role: str
) -> None:
    with psycopg.connect(database_url) as conn:
        assert create_reader(conn, "A", reader_role, SecretStr("pw1")) == "created"
        with pytest.raises(ReaderRefused, match="already reads tenant 'A'"):
            create_reader(conn, "B", reader_role, SecretStr("pw2"))
        with pytest.raises(ReaderRefused, match="is not a tenant reader"):
            create_reader(conn, "A", "ledger_app", SecretStr("pw3"))
        assert create_reader(conn, "A", reader_role, SecretStr("pw4")) == "password_reset"
    with psycopg.connect(as_login(database_url, reader_role, "pw4")) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_the_api_reader_role_sees_the_tenant_set_in_its_transaction(database_url: str) -> None:
    # The HTTP API's path: its own role, the tenant set with SET LOCAL from a verified identity.
    _seed(database_url)
    with psycopg.connect(database_url) as conn:
        conn.execute("SET ROLE ledger_reader")
        assert _tenants(conn) == _each()  # no tenant set: nothing
        conn.commit()
        with conn.transaction():
            conn.execute("SELECT set_config('ledger.tenant_id', 'B', true)")
            assert _tenants(conn) == _each("B")
        assert _tenants(conn) == _each()  # SET LOCAL ended with it


def test_the_readers_create_command_never_prints_the_password(
    database_url: str, reader_role: str
) -> None:
    secret = f"s3cret-{uuid.uuid4().hex}"
    env = {**os.environ, "LEDGER_DATABASE_URL": database_url, "LEDGER_READER_PASSWORD": secret}
    cmd = [sys.executable, "-m", "budget_ledger.entrypoints.cli", "readers", "create"]
    args = ["--tenant", "A", "--role", reader_role]
    done = subprocess.run([*cmd, *args], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert f"reader {reader_role} of tenant A: created" in done.stdout
    again = [*cmd, "--tenant", "B", "--role", reader_role]
    refused = subprocess.run(again, capture_output=True, text=True, env=env, timeout=60)
    assert refused.returncode == 2 and "already reads tenant 'A'" in refused.stderr
    for out in (done.stdout, done.stderr, refused.stdout, refused.stderr):
        assert secret not in out
    with psycopg.connect(as_login(database_url, reader_role, secret)) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (reader_role,)


# -- the keyed chain and the processes' own login -----------------------------------------------

KEY = ChainKey("dev-chain-1", CHAIN_KEYS["chain_keys"]["dev-chain-1"].encode())
RING = ChainKeyring({KEY.key_id: KEY.secret})
TENANT = "t-sec"


def _commands() -> list[dict[str, Any]]:
    base = {"tenant_id": TENANT, "budget_id": "b1"}
    return [
        {**base, "command_id": "c1", "type": "open_budget", "currency": "USD", "period": "rolling"},
        {**base, "command_id": "c2", "type": "fund", "amount": "100.00", "currency": "USD"},
        {**base, "command_id": "c3", "type": "reserve", "amount": "10.00", "currency": "USD",
         "ref_id": "r1"},
    ]  # fmt: skip


def _batch(
    conn: psycopg.Connection, commands: list[dict[str, Any]], offset: int, key: ChainKey | None
) -> BatchOutput:
    """The consumer's own batch logic over `commands` (no signature check), budgets loaded from
    the ledger through `conn`."""
    ctx = BatchContext("sec.commands", "sec.events", "sec.alerts", "sec.dlq",
                       {"USD": 2}, chain_key=key)  # fmt: skip
    msgs = [
        Incoming(0, offset + i, f"{TENANT}:b1".encode(), orjson.dumps(c))
        for i, c in enumerate(commands)
    ]
    return process_batch(
        msgs,
        {0: PartitionState(next_offset=offset)},
        ctx,
        lookup_prior=lambda keys: {},
        load_budgets=lambda keys: load_budgets(conn, keys),
    )


def _write(conn: psycopg.Connection, out: BatchOutput, keyed: bool) -> None:
    with conn.transaction():
        store.append_ledger_rows(conn, out.ledger_rows, keyed)
        upsert_projections(conn, out.balance_rows, out.reservation_rows)


def _reconcile(url: str, keys: ChainKeyring | None) -> list[tuple[int, str]]:
    report = reconcile(url, ReconcileOptions(progress=False, chain_keys=keys))
    assert not report.drifts, list(iter_lines(report))
    return [(b.sequence, b.problem) for b in report.broken]


@pytest.fixture
def app_url(database_url: str, app_login: tuple[str, str]) -> str:
    return as_login(database_url, *app_login)


def test_a_row_forged_with_the_app_credentials_alone_is_a_broken_link(
    database_url: str, app_url: str
) -> None:
    with connect(app_url, role="ledger_app") as conn:  # the consumer, holding the key
        _write(conn, _batch(conn, _commands(), 0, KEY), keyed=True)
    assert _reconcile(database_url, RING) == []

    # Someone with the ledger_app credentials but not the key: a budget_funded of 5,000,000.00
    # on a correct plain hash chain, the projection patched to match.
    forged = {"tenant_id": TENANT, "budget_id": "b1", "command_id": "evil", "type": "fund",
              "amount": "5000000.00", "currency": "USD"}  # fmt: skip
    with connect(app_url) as conn:
        out = _batch(conn, [forged], 3, None)
        assert [r[3] for r in out.ledger_rows] == ["budget_funded"]
        _write(conn, out, keyed=False)
    assert _reconcile(database_url, None) == []  # the plain chain cannot tell
    assert _reconcile(database_url, RING) == [
        (4, "mac missing: the row was not written by a holder of the chain key")
    ]


def test_a_forged_mac_is_a_broken_link(database_url: str, app_url: str) -> None:
    with connect(app_url) as conn:
        guess = ChainKey(KEY.key_id, b"a guessed key, not the real one!")
        _write(conn, _batch(conn, _commands(), 0, guess), keyed=True)
    assert _reconcile(database_url, RING) == [
        (1, "mac mismatch: the row was not written by a holder of the chain key")
    ]


def test_seal_legacy_covers_the_rows_written_before_the_key(
    database_url: str, app_url: str
) -> None:
    commands = _commands()
    with connect(app_url) as conn:  # before the key: no MACs
        _write(conn, _batch(conn, commands[:2], 0, None), keyed=False)
    assert _reconcile(database_url, RING)[0][1].startswith("mac missing")
    with connect(app_url) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        seal_legacy(conn, KEY)  # the app role cannot seal
    with connect(database_url) as conn:  # the owner, with the key
        assert seal_legacy(conn, KEY) == 1
    assert _reconcile(database_url, RING) == []
    with connect(app_url) as conn:  # after the key: MACs; an unkeyed row after the seal breaks
        _write(conn, _batch(conn, commands[2:], 2, KEY), keyed=True)
    assert _reconcile(database_url, RING) == []


@pytest.mark.parametrize("process", ["consumer", "relay"])
def test_no_process_connection_can_become_the_owner(settings: Settings, process: str) -> None:
    conn = CommandConsumer(settings)._db() if process == "consumer" else Relay(settings)._db()
    try:
        assert conn.execute("SELECT session_user").fetchone() == ("ledger_app",)
        conn.execute("RESET ROLE")
        assert conn.execute("SELECT current_user").fetchone() == ("ledger_app",)
        for statement in (
            "SET ROLE ledger_owner",
            "SET SESSION AUTHORIZATION ledger_owner",
            "ALTER TABLE ledger DISABLE TRIGGER ledger_append_only",
            "UPDATE ledger SET amount = 0",
            "DELETE FROM ledger",
            "INSERT INTO chain_legacy_seals (tenant_id, budget_id, sequence, hash, mac,"
            " mac_key_id) VALUES ('t', 'b', 1, 'h', 'm', 'k')",
            "INSERT INTO tenant_readers (role, tenant_id) VALUES ('ledger_app', 't')",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
    finally:
        conn.close()


def test_the_consumer_macs_every_row_it_writes(settings: Settings) -> None:
    keyed = settings.model_copy(
        update={
            "chain_keys": {KEY.key_id: SecretStr(KEY.secret.decode())},
            "chain_key_id": KEY.key_id,
        }
    )
    commands = [
        open_budget(TENANT, "b2", "k1", currency="USD", period="rolling"),
        fund(TENANT, "b2", "k2", "50.00"),
        reserve(TENANT, "b2", "k3", "5.00", "r1"),
    ]
    with running_consumer(keyed, relay=False):
        produce(keyed, commands)
        wait_for(lambda: ledger_count(settings.database_url) == 3, what="3 ledger rows")
    with psycopg.connect(settings.database_url) as conn:
        keys = conn.execute("SELECT DISTINCT mac_key_id, mac IS NULL FROM ledger").fetchall()
    assert keys == [(KEY.key_id, False)]
    assert _reconcile(settings.database_url, RING) == []


def test_the_sweeper_logs_in_as_the_app_role(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []

    def spy(dsn: str, *args: Any, **kwargs: Any) -> psycopg.Connection:
        seen.append(dsn)
        return connect(dsn, *args, **kwargs)

    monkeypatch.setattr(sweeper, "connect", spy)
    assert sweeper.sweep_once(settings, Producer({"bootstrap.servers": "127.0.0.1:1"})) == 0
    assert seen == [settings.app_dsn()] and seen[0] != settings.database_url
