"""The ledger's report columns (migration 014): `reason` and `utilization_bp` on every partition,
in the covering index ledger_budget_pages; written by the consumer's COPY, vouched for by the
reconciler, read by the range report, with the event JSON as the fallback for rows written
before the migration (both columns NULL). Real Postgres; rows made by the consumer's own batch
logic (`process_batch`, via the benchmark's filler)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from bench.replay_bench import START, build_rows, command_stream, write_batches
from budget_ledger.ledger import store
from budget_ledger.ledger.db import connect, copy_rows
from budget_ledger.ledger.table_partitions import ensure_partitions, list_partitions
from budget_ledger.projections.reconcile import ReconcileOptions, reconcile
from budget_ledger.projections.reports import BudgetReport, queries, tenant_reports
from budget_ledger.projections.store import upsert_projections
from tests.conftest import cloned_database

pytestmark = pytest.mark.integration

# The COPY of a writer from before migration 014: the report columns stay NULL.
_COPY_LEGACY = (
    "COPY ledger (tenant_id, budget_id, sequence, type, command_id, command_fingerprint, ref_id,"
    " currency, amount, funded, reserved, charged, available, kafka_topic, kafka_partition,"
    " kafka_offset, event, recorded_at, prev_hash, hash) FROM STDIN"
)
_COVERING = "INCLUDE (type, amount, reason, utilization_bp)"
_DIFFERS = (
    "SELECT count(*) FROM ledger WHERE reason IS DISTINCT FROM event ->> 'reason'"
    " OR utilization_bp IS DISTINCT FROM (event ->> 'utilization_pct')::numeric * 100"
)


def _commands() -> Any:
    return command_stream(3000, 24, seed=13)


def test_every_partition_has_the_columns_and_the_covering_index(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        types = dict(
            conn.execute(
                "SELECT column_name, data_type FROM information_schema.columns"
                " WHERE table_name = 'ledger' AND column_name IN ('reason', 'utilization_bp')"
            ).fetchall()
        )
        assert types == {"reason": "text", "utilization_bp": "numeric"}
        ensure_partitions(conn, 6)  # months created after the migration inherit the index
        conn.commit()
        partitions = {p.name for p in list_partitions(conn)}
        indexed = conn.execute(
            "SELECT c.relname, pg_get_indexdef(c.oid), x.indrelid::regclass::text"
            " FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " JOIN pg_index x ON x.indexrelid = c.oid"
            " WHERE i.inhparent = 'ledger_budget_pages'::regclass"
        ).fetchall()
        parent = conn.execute("SELECT pg_get_indexdef('ledger_budget_pages'::regclass)").fetchone()
        # One index on that key (the covering one), not a second one beside it.
        on_key = conn.execute(
            "SELECT count(*) FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid"
            " WHERE x.indrelid = 'ledger'::regclass AND x.indpred IS NULL"
            " AND pg_get_indexdef(c.oid) LIKE '%%(tenant_id, budget_id, recorded_at DESC%%'"
        ).fetchone()
    assert parent is not None and _COVERING in parent[0]
    assert on_key == (1,)
    assert {table for _, _, table in indexed} == partitions
    assert len(partitions) >= 8  # this month, six ahead, the DEFAULT partition
    assert all(_COVERING in definition for _, definition, _ in indexed)


def test_consumer_rows_carry_the_columns_of_their_event(database_url: str) -> None:
    write_batches(database_url, build_rows(_commands()))
    with psycopg.connect(database_url) as conn:
        assert conn.execute(_DIFFERS).fetchone() == (0,)
        refusals = conn.execute(
            "SELECT count(*) FROM ledger WHERE reason IS NOT NULL"
            " AND type IN ('reservation_rejected', 'command_rejected')"
        ).fetchone()
        used = conn.execute("SELECT count(*) FROM ledger WHERE utilization_bp > 0").fetchone()
        nulls = conn.execute("SELECT count(*) FROM ledger WHERE utilization_bp IS NULL").fetchone()
    assert refusals is not None and refusals[0] > 0
    assert used is not None and used[0] > 0
    assert nulls == (0,)


def _write_mixed(url: str) -> None:
    """The same history with every other batch COPYed as a pre-014 writer did (columns NULL)."""
    with connect(url) as conn:
        for i, out in enumerate(build_rows(_commands(), batch=500)):
            with conn.transaction():
                if i % 2:
                    copy_rows(conn, _COPY_LEGACY, [r[:20] for r in out.ledger_rows])
                else:
                    store.append_ledger_rows(conn, out.ledger_rows)
                upsert_projections(conn, out.balance_rows, out.reservation_rows)
        conn.commit()


def _reports(url: str, since: datetime, until: datetime) -> list[BudgetReport]:
    out = []
    with psycopg.connect(url) as conn:
        for tenant in ("tenant-0", "tenant-1", "tenant-2"):
            out += list(tenant_reports(conn, tenant, lambda b: (since, until), chunk=5))
    return out


def test_reports_over_rows_without_the_columns_equal_reports_over_rows_with_them(
    database_url: str, pg_admin_dsn: str, template_database: str
) -> None:
    write_batches(database_url, build_rows(_commands(), batch=500))
    # Ranges: the whole history, and one that starts and ends inside it.
    ranges = [
        (START - timedelta(days=1), START + timedelta(days=1)),
        (START + timedelta(seconds=1), START + timedelta(seconds=4)),
    ]
    with cloned_database(pg_admin_dsn, template_database) as mixed:
        _write_mixed(mixed)
        with psycopg.connect(mixed) as conn:
            null_rows = conn.execute(
                "SELECT count(*) FILTER (WHERE utilization_bp IS NULL),"
                " count(*) FILTER (WHERE utilization_bp IS NOT NULL) FROM ledger"
            ).fetchone()
        assert null_rows is not None and min(null_rows) > 0
        for since, until in ranges:
            expected = _reports(database_url, since, until)
            got = _reports(mixed, since, until)
            assert len(expected) == 24 and got == expected
            assert sum(r.event_count for r in got) > 0
            assert any(r.peak_utilization_pct not in (None, "0.00") for r in got)
            assert sum(sum(r.refusals.values()) for r in got) > 0


def test_the_reconciler_flags_a_report_column_that_differs_from_its_event(
    database_url: str,
) -> None:
    write_batches(database_url, build_rows(_commands()))
    with psycopg.connect(database_url) as conn:
        victims = conn.execute(
            "SELECT DISTINCT ON (tenant_id, budget_id) tenant_id, budget_id, sequence FROM ledger"
            " WHERE type = 'reservation_rejected' ORDER BY tenant_id, budget_id, sequence LIMIT 2"
        ).fetchall()
        assert len(victims) == 2
        (t1, b1, s1), (t2, b2, s2) = victims
        conn.execute("ALTER TABLE ledger DISABLE TRIGGER ledger_append_only")
        conn.execute(
            "UPDATE ledger SET reason = 'negative_funds'"
            " WHERE tenant_id = %s AND budget_id = %s AND sequence = %s",
            (t1, b1, s1),
        )
        conn.execute(
            "UPDATE ledger SET utilization_bp = utilization_bp + 1"
            " WHERE tenant_id = %s AND budget_id = %s AND sequence = %s",
            (t2, b2, s2),
        )
        conn.execute("ALTER TABLE ledger ENABLE TRIGGER ledger_append_only")
    report = reconcile(database_url, ReconcileOptions(progress=False))
    broken = {(b.tenant_id, b.budget_id): (b.sequence, b.problem) for b in report.broken}
    assert set(broken) == {(t1, b1), (t2, b2)}
    assert broken[(t1, b1)][0] == s1 and "column reason differs" in broken[(t1, b1)][1]
    assert broken[(t2, b2)][0] == s2 and "column utilization_bp differs" in broken[(t2, b2)][1]
    assert not report.clean


def test_the_report_reads_new_rows_by_an_index_only_scan(database_url: str) -> None:
    write_batches(database_url, build_rows(_commands()))
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("VACUUM ledger")  # the visibility map: autovacuum's job in production
        budget = conn.execute(
            "SELECT budget_id FROM ledger WHERE tenant_id = 'tenant-0'"
        ).fetchone()
        assert budget is not None
        params = {
            "tenant": "tenant-0",
            "budgets": [budget[0]],
            "since": START - timedelta(days=1),
            "until": datetime.now(UTC) + timedelta(days=1),
        }
        conn.execute("SET enable_seqscan = off")  # a few thousand rows: make the choice visible
        plan = "\n".join(
            r[0] for r in conn.execute("EXPLAIN (ANALYZE) " + queries()["report_events"], params)
        )
    assert "Index Only Scan" in plan and "Heap Fetches: 0" in plan, plan
