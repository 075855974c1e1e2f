"""Upgrading a ledger written under migration 001 keeps every row and hash (real Postgres)."""

from __future__ import annotations

import argparse
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from bench.replay_bench import build_rows, command_stream
from budget_ledger.entrypoints.cli import build_parser
from budget_ledger.ledger.db import copy_rows
from budget_ledger.ledger.migrate import migrate
from budget_ledger.ledger.settings import Settings
from budget_ledger.projections.store import queries as projection_queries
from tests.conftest import _drop_database, _with_database

pytestmark = pytest.mark.integration

TOPIC = "budget.commands"
EMPTY_PARTITION = 99  # a cursor of a partition without ledger rows: dropped by 003
# The balance projection's columns before migration 007 added the state snapshot.
BALANCES_001 = (
    "COPY budget_balances (tenant_id, budget_id, currency, opened, funded, reserved, charged,"
    " available, budget_limit, utilization_pct, sequence, last_hash, period_start, config,"
    " updated_at) FROM STDIN"
)
# The consumer's ledger COPY before migration 014 added the report columns.
LEDGER_001 = (
    "COPY ledger (tenant_id, budget_id, sequence, type, command_id, command_fingerprint, ref_id,"
    " currency, amount, funded, reserved, charged, available, kafka_topic, kafka_partition,"
    " kafka_offset, event, recorded_at, prev_hash, hash) FROM STDIN"
)


@pytest.fixture
def v001_url(pg_admin_dsn: str) -> Iterator[str]:
    """An empty database migrated to 001 only."""
    name = f"ledger_m_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = _with_database(pg_admin_dsn, name)
    assert migrate(url, target="001_ledger") == ["001_ledger"]
    yield url
    _drop_database(pg_admin_dsn, name)  # waits out an autovacuum worker FORCE cannot stop


def _fill_001(url: str) -> dict[int, int]:
    """Ledger rows exactly as the consumer writes them, and 001-style relay cursors."""
    last: dict[int, int] = {}
    with psycopg.connect(url) as conn:
        for out in build_rows(command_stream(1500, 30, 5), partitions=4, topic=TOPIC):
            copy_rows(conn, LEDGER_001, [row[:20] for row in out.ledger_rows])
            # One batch (1,500 < 5,000 commands): plain COPYs, in the 001 balance columns.
            copy_rows(conn, BALANCES_001, [row[:15] for row in out.balance_rows])
            copy_rows(conn, projection_queries()["copy_reservations"], out.reservation_rows)
            for row in out.ledger_rows:
                last[int(row[14])] = int(row[15])  # type: ignore[call-overload]
        for partition, offset in [*last.items(), (EMPTY_PARTITION, -1)]:
            conn.execute(
                "INSERT INTO relay_cursors (partition, last_offset) VALUES (%s, %s)",
                (partition, offset),
            )
    return last


def _snapshot(url: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT position, tenant_id, budget_id, sequence, type, command_id, kafka_topic,"
            " kafka_partition, kafka_offset, event::text, recorded_at, prev_hash, hash"
            " FROM ledger ORDER BY position"
        ).fetchall()


def _reconcile(url: str) -> int:
    args: argparse.Namespace = build_parser().parse_args(["reconcile", "--no-alerts"])
    return int(args.handler(args, Settings(database_url=url)))


def test_upgrade_keeps_every_row_and_hash_and_moves_cursors_to_topics(v001_url: str) -> None:
    last = _fill_001(v001_url)
    before = _snapshot(v001_url)
    assert len(before) == 1500

    applied = migrate(v001_url)

    assert "003_topic_identity" in applied and "004_relay_set_aside" in applied
    assert _snapshot(v001_url) == before
    with psycopg.connect(v001_url) as conn:
        key = conn.execute(
            "SELECT array_agg(a.attname ORDER BY k.ord) FROM pg_index i"
            " CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)"
            " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum"
            " WHERE i.indrelid = 'ledger'::regclass AND i.indisprimary"
        ).fetchone()
        cursors = conn.execute(
            "SELECT topic, partition, last_offset FROM relay_cursors ORDER BY partition"
        ).fetchall()
    # 003's key; 008 adds recorded_at, the partition key, which every key of a partitioned
    # table must include.
    assert key is not None
    assert key[0] == ["kafka_topic", "kafka_partition", "kafka_offset", "recorded_at"]
    # Every partition's cursor now names the ledger's topic; the empty partition's is gone.
    assert cursors == [(TOPIC, p, o) for p, o in sorted(last.items())]
    assert _reconcile(v001_url) == 0


def test_after_upgrade_the_same_offsets_of_another_topic_are_other_commands(
    v001_url: str,
) -> None:
    _fill_001(v001_url)
    migrate(v001_url)
    with psycopg.connect(v001_url) as conn:
        conn.execute(
            "INSERT INTO ledger (tenant_id, budget_id, sequence, type, command_id,"
            " command_fingerprint, funded, reserved, charged, available, kafka_topic,"
            " kafka_partition, kafka_offset, event, recorded_at, prev_hash, hash)"
            " SELECT 'other', budget_id, sequence, type, command_id, command_fingerprint,"
            " funded, reserved, charged, available, 'budget.commands.v2', kafka_partition,"
            " kafka_offset, event, recorded_at, prev_hash, hash FROM ledger"
            " WHERE kafka_partition = 0 AND kafka_offset = 0"
        )
        same = conn.execute(
            "SELECT count(*) FROM ledger WHERE kafka_partition = 0 AND kafka_offset = 0"
        ).fetchone()
    assert same == (2,)
