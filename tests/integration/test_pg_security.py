"""PostgreSQL least privilege (real Postgres): per-tenant reader logins, the API's reader role,
and the keyed hash chain that a database writer alone cannot extend."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql
from pydantic import SecretStr

from budget_ledger.projections.readers import ReaderRefused, create_reader

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


def _as(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    netloc = f"{user}:{password}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


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
    with psycopg.connect(_as(database_url, reader_role, "pw-A-1"), autocommit=True) as conn:
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
    with psycopg.connect(_as(database_url, reader_role, "pw4")) as conn:
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
    with psycopg.connect(_as(database_url, reader_role, secret)) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (reader_role,)
