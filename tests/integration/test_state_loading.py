"""Budget state loaded from the projections (real Kafka, real Postgres).

A ledger written before migration 007 (balance rows without the snapshot columns) is upgraded,
then a real consumer with a two-budget cache applies new commands to old and new budgets. Every
budget then loads from its projection rows (or, without a snapshot, by replay) exactly as a full
replay compacts; settled refs long evicted are still refused; and the reconciler reports a
wrong snapshot column as drift.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import psycopg
import pytest
from psycopg import sql
from pydantic import SecretStr

from bench.replay_bench import build_rows, command_stream
from budget_ledger.ledger import store
from budget_ledger.ledger.db import copy_rows
from budget_ledger.ledger.migrate import migrate
from budget_ledger.ledger.settings import Settings
from budget_ledger.ledger.state import compact
from budget_ledger.projections.rebuild import rebuild
from budget_ledger.projections.reconcile import ReconcileOptions, reconcile
from budget_ledger.projections.state_loading import load_states
from budget_ledger.projections.store import queries as projection_queries
from tests.conftest import _drop_database, _with_database, as_login
from tests.integration.support import (
    charge,
    fund,
    ledger_count,
    produce,
    random_stream,
    reserve,
    running_consumer,
    wait_for,
)

pytestmark = pytest.mark.integration

BEFORE_007 = "006_reconcile_checkpoints"
BALANCES_006 = (
    "COPY budget_balances (tenant_id, budget_id, currency, opened, funded, reserved, charged,"
    " available, budget_limit, utilization_pct, sequence, last_hash, period_start, config,"
    " updated_at) FROM STDIN"
)
OLD_BUDGETS = 6
# The consumer's ledger COPY before migration 014 added the report columns.
LEDGER_001 = (
    "COPY ledger (tenant_id, budget_id, sequence, type, command_id, command_fingerprint, ref_id,"
    " currency, amount, funded, reserved, charged, available, kafka_topic, kafka_partition,"
    " kafka_offset, event, recorded_at, prev_hash, hash) FROM STDIN"
)


@pytest.fixture
def upgraded(
    pg_admin_dsn: str, settings: Settings, app_login: tuple[str, str]
) -> Iterator[Settings]:
    """Settings on a database filled at migration 006 (the old balance columns), then migrated."""
    name = f"ledger_s_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = _with_database(pg_admin_dsn, name)
    assert migrate(url, target=BEFORE_007)[-1] == BEFORE_007
    with psycopg.connect(url) as conn:
        # One batch (800 < 5,000 commands): plain COPYs, as the consumer of that time wrote.
        (out,) = build_rows(command_stream(800, OLD_BUDGETS, seed=3), partitions=2)
        copy_rows(conn, LEDGER_001, [row[:20] for row in out.ledger_rows])
        copy_rows(conn, BALANCES_006, [row[:15] for row in out.balance_rows])
        copy_rows(conn, projection_queries()["copy_reservations"], out.reservation_rows)
    migrate(url)
    yield settings.model_copy(
        update={
            "database_url": url,
            "app_database_url": SecretStr(as_login(url, *app_login)),
            "state_cache_budgets": 2,
            "batch_max_messages": 40,
        }
    )
    _drop_database(pg_admin_dsn, name)


def _settled(url: str, budget: str, status: str) -> str:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT ref_id FROM reservations WHERE budget_id = %s AND status = %s"
            " ORDER BY updated_seq LIMIT 1",
            (budget, status),
        ).fetchone()
    assert row is not None, f"{budget} has no {status} reservation"
    return str(row[0])


def _keys(url: str) -> list[tuple[str, str]]:
    with psycopg.connect(url) as conn:
        return [(t, b) for t, b in conn.execute("SELECT DISTINCT tenant_id, budget_id FROM ledger")]


def test_states_load_from_projections_as_a_replay_and_settled_refs_stay_refused(
    upgraded: Settings,
) -> None:
    url = upgraded.database_url
    old = "budget-1"  # opened before migration 007 (tenant-1); budget-0 stays untouched
    early = _settled(url, old, "charged")
    commands: list[dict[str, Any]] = [
        fund("tenant-1", old, "new-fund", "50.00"),
        reserve("tenant-1", old, "old-dup", "1.00", early),  # settled before the upgrade
        charge("tenant-1", old, "old-charge", early),
    ]
    commands += random_stream(seed=7, budgets=8, commands=400)
    settled_new = next(c for c in commands if c["type"] == "charge" and c["tenant_id"] == "acme")
    commands += [  # reused long after their budgets were evicted from the two-budget cache
        reserve("acme", str(settled_new["budget_id"]), "new-dup", "1.00",
                str(settled_new["ref_id"])),
        charge("acme", str(settled_new["budget_id"]), "new-charge", str(settled_new["ref_id"])),
    ]  # fmt: skip
    before = ledger_count(url)
    with running_consumer(upgraded, relay=False) as consumer:
        produce(upgraded, commands)
        wait_for(lambda: ledger_count(url) == before + len(commands), what="all events")
        assert len(consumer.cache) <= 2

    with psycopg.connect(url, autocommit=True) as conn:
        reasons = dict(
            conn.execute(
                "SELECT command_id, event->>'reason' FROM ledger WHERE command_id = ANY(%s)",
                (["old-dup", "old-charge", "new-dup", "new-charge"],),
            ).fetchall()
        )
        assert reasons == {
            "old-dup": "duplicate_ref",
            "old-charge": "reservation_not_active",
            "new-dup": "duplicate_ref",
            "new-charge": "reservation_not_active",
        }
        snapshots = dict(
            conn.execute(
                "SELECT budget_id, snapshot_seq = sequence FROM budget_balances"
                " WHERE budget_id IN ('budget-0', 'budget-1', 'b0')"
            ).fetchall()
        )
        # Untouched since the upgrade: no snapshot (replayed); written since: a snapshot.
        assert snapshots == {"budget-0": None, "budget-1": True, "b0": True}
        keys = _keys(url)
        assert len(keys) == OLD_BUDGETS + 8
        loaded = load_states(conn, keys)
        replayed = store.load_budgets(conn, keys)
    for key in keys:
        full = replayed[key]
        assert not isinstance(full, Exception) and loaded[key] == compact(full)  # type: ignore[arg-type]
        assert full.sequence > 0  # type: ignore[union-attr]

    report = reconcile(url, ReconcileOptions(progress=False))
    assert report.drifts == [] and report.broken == []
    with psycopg.connect(url) as conn:
        conn.execute(
            "UPDATE budget_balances SET above_soft = NOT above_soft, digits = 3"
            " WHERE tenant_id = 'acme' AND budget_id = 'b0'"
        )
    report = reconcile(url, ReconcileOptions(progress=False))
    found = {(d.budget_id, d.field) for d in report.drifts if d.table == "budget_balances"}
    assert found == {("b0", "above_soft"), ("b0", "digits")}
    with psycopg.connect(url) as conn:  # the loader took b0 from its row, not from a replay
        (state,) = load_states(conn, [("acme", "b0")]).values()
        assert not isinstance(state, Exception) and state.digits == 3  # type: ignore[union-attr]

    # rebuild writes every snapshot, the one of the untouched pre-007 budget too.
    with psycopg.connect(url) as conn:
        rebuild(conn)
    assert reconcile(url, ReconcileOptions(progress=False)).drifts == []
    with psycopg.connect(url, autocommit=True) as conn:
        missing = conn.execute(
            "SELECT count(*) FROM budget_balances WHERE snapshot_seq IS DISTINCT FROM sequence"
        ).fetchone()
        assert missing == (0,)
        assert load_states(conn, keys) == {k: compact(s) for k, s in replayed.items()}  # type: ignore[arg-type]


def _generic_plans(conn: psycopg.Connection[Any], statement: str, fill: str) -> list[str]:
    """The generic plan of a once-per-batch look-up (keys as a JSON array), as the consumer's
    prepared statement keeps it: on the table never analysed, then after `fill` added 3,000
    rows to it (still not analysed)."""
    conn.execute("SET plan_cache_mode = force_generic_plan")
    conn.execute(sql.SQL("PREPARE lookup(text) AS {}").format(sql.SQL(statement)))  # type: ignore[arg-type]
    plans = []
    for rows in (0, 3000):
        conn.execute(fill, (rows,))
        plans.append("\n".join(r[0] for r in conn.execute("EXPLAIN EXECUTE lookup('[]')")))
    return plans


def test_the_settled_look_up_probes_the_primary_key_whatever_the_statistics(
    database_url: str,
) -> None:
    # The consumer's prepared statement keeps its generic plan: on a reservations table never
    # analysed (a new ledger), a join of the keys was planned as a hash join over a scan of the
    # whole table, and stayed so while the table grew (1.6 ms a call at 2,000 commands/s).
    statement = projection_queries()["select_settled_reservations"].replace("%(keys)s", "$1")
    with psycopg.connect(database_url, autocommit=True) as conn:
        fill = ("INSERT INTO reservations SELECT 't', 'b' || (i %% 500), 'r' || i, 'charged',"
                " 100, 100, NULL, 'c' || i, 1, 2 FROM generate_series(1, %s) i")  # fmt: skip
        for plan in _generic_plans(conn, statement, fill):
            assert "Seq Scan" not in plan and "reservations_pkey" in plan, plan
        keys = orjson.dumps([["t", "b7", "r7"], ["t", "b7", "r8"]]).decode()
        found = conn.execute(sql.SQL("EXECUTE lookup({})").format(sql.Literal(keys)))
        assert [r[:4] for r in found] == [("t", "b7", "r7", "charged")]


def test_the_idempotency_look_up_probes_the_guard_whatever_the_statistics(
    database_url: str,
) -> None:
    # The same for the batch's look-up of prior commands in ledger_commands.
    statement = store.queries()["select_prior_commands"].replace("%(keys)s", "$1")
    with psycopg.connect(database_url, autocommit=True) as conn:
        fill = ("INSERT INTO ledger_commands SELECT 't', 'c' || i, 'fp', 'topic', 0, i, now()"
                " FROM generate_series(1, %s) i")  # fmt: skip
        for plan in _generic_plans(conn, statement, fill):
            assert "Seq Scan on ledger_commands" not in plan, plan
            assert "ledger_tenant_id_command_id_key" in plan, plan
