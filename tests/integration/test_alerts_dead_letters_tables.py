"""Migration 012 (real Postgres): the alert and dead-letter tables are append-only, written by
the consumer's role, and read per tenant by the API's reader and the tenant reader logins."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql
from pydantic import SecretStr

from budget_ledger.projections.readers import create_reader
from tests.conftest import as_login

pytestmark = pytest.mark.integration

TABLES = ("alerts", "dead_letters")
_ALERT = (
    "INSERT INTO alerts (tenant_id, budget_id, sequence, type, severity, utilization_bp,"
    " threshold_bp, recorded_at, payload) VALUES (%(t)s, 'b1', 3, 'soft_cap_exceeded',"
    " 'warning', 8100, 8000, now(), '{}')"
)
_DEAD_LETTER = (
    "INSERT INTO dead_letters (tenant_id, command_id, command_type, error_class, reason,"
    " kafka_topic, kafka_partition, kafka_offset, recorded_at) VALUES (%(t)s, 'c1', 'fund',"
    " 'unauthorized', 'no signature', 'budget.commands', 0, 7, now())"
)


def _seed(url: str, tenants: tuple[str, ...] = ("A", "B")) -> None:
    with psycopg.connect(url) as conn:
        conn.execute("SET ROLE ledger_app")
        for t in tenants:
            conn.execute(_ALERT, {"t": t})
            conn.execute(_DEAD_LETTER, {"t": t})


def _tenants(conn: psycopg.Connection) -> dict[str, set[str]]:
    return {t: {r[0] for r in conn.execute(f"SELECT tenant_id FROM {t}")} for t in TABLES}


@pytest.fixture
def reader_role(database_url: str) -> Iterator[str]:
    role = f"reader_{uuid.uuid4().hex[:10]}"
    yield role
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


@pytest.mark.parametrize("table", TABLES)
@pytest.mark.parametrize("role", ["ledger_app", None])
def test_rows_can_be_neither_changed_nor_removed(
    database_url: str, table: str, role: str | None
) -> None:
    _seed(database_url)
    for statement in (
        f"UPDATE {table} SET tenant_id = 'C'",
        f"DELETE FROM {table}",
        f"TRUNCATE {table}",
    ):
        with psycopg.connect(database_url) as conn:
            if role is not None:
                conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
    with psycopg.connect(database_url) as conn:
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (2,)


def test_the_api_reader_sees_the_tenant_of_its_transaction_only(database_url: str) -> None:
    _seed(database_url)
    with psycopg.connect(database_url) as conn:
        conn.execute("SET ROLE ledger_reader")
        assert _tenants(conn) == {t: set() for t in TABLES}
        conn.commit()
        with conn.transaction():
            conn.execute("SELECT set_config('ledger.tenant_id', 'B', true)")
            assert _tenants(conn) == {t: {"B"} for t in TABLES}
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(_ALERT, {"t": "B"})


def test_a_tenant_reader_login_sees_its_tenant_only(database_url: str, reader_role: str) -> None:
    _seed(database_url)
    with psycopg.connect(database_url) as conn:
        create_reader(conn, "A", reader_role, SecretStr("pw-A-1"))
    with psycopg.connect(as_login(database_url, reader_role, "pw-A-1"), autocommit=True) as conn:
        conn.execute("SET ledger.tenant_id = 'B'")
        assert _tenants(conn) == {t: {"A"} for t in TABLES}
