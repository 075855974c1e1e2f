"""The partitioned ledger (migration 008): monthly partitions ahead, append-only on every
partition, no direct access to a partition, the global command_id guard, the DEFAULT partition,
the migration of a populated single table, and the page query (real Postgres)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import errors, sql

from budget_ledger.consumers import poison
from budget_ledger.entrypoints.cli import build_parser
from budget_ledger.ledger import store
from budget_ledger.ledger.db import connect
from budget_ledger.ledger.migrate import migrate
from budget_ledger.ledger.settings import Settings
from budget_ledger.ledger.table_partitions import (
    default_partition_rows,
    ensure_partitions,
    list_partitions,
)
from budget_ledger.projections.ledger_pages import PageCursor, ledger_page
from budget_ledger.projections.rebuild import rebuild
from tests.conftest import _drop_database, _with_database
from tests.integration.test_ledger_fixture import _INSERT, _rows

pytestmark = pytest.mark.integration

_COLUMNS = (
    "tenant_id, budget_id, sequence, type, command_id, command_fingerprint, funded, reserved,"
    " charged, available, kafka_topic, kafka_partition, kafka_offset, event, recorded_at,"
    " prev_hash, hash"
)
_offsets = iter(range(10**9))


def _month(offset: int) -> datetime:
    """The first instant of the UTC month `offset` months from now."""
    now = datetime.now(UTC)
    index = now.year * 12 + now.month - 1 + offset
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def _name(month: datetime) -> str:
    return f"ledger_y{month:%Y}m{month:%m}"


def _row(
    tenant: str, budget: str, sequence: int, at: datetime, command: str | None = None
) -> dict[str, Any]:
    return {
        "tenant_id": tenant, "budget_id": budget, "sequence": sequence, "type": "budget_funded",
        "command_id": command or f"c-{uuid.uuid4().hex[:10]}", "command_fingerprint": "fp",
        "funded": 0, "reserved": 0, "charged": 0, "available": 0, "kafka_topic": "budget.commands",
        "kafka_partition": 0, "kafka_offset": next(_offsets), "event": f'{{"n": {sequence}}}',
        "recorded_at": at, "prev_hash": "p", "hash": f"h{sequence}",
    }  # fmt: skip


def _insert(conn: psycopg.Connection, *rows: dict[str, Any]) -> None:
    values = ", ".join(f"%({c.strip()})s" for c in _COLUMNS.split(","))
    with conn.cursor() as cur:
        cur.executemany(f"INSERT INTO ledger ({_COLUMNS}) VALUES ({values})", list(rows))


def _partition_of(conn: psycopg.Connection, command_id: str) -> str:
    row = conn.execute(
        "SELECT tableoid::regclass::text FROM ledger WHERE command_id = %s", (command_id,)
    ).fetchone()
    assert row is not None
    return str(row[0])


# -- partitions ahead -------------------------------------------------------------------------


def test_migrate_creates_this_month_and_three_ahead_and_ensure_is_idempotent(
    database_url: str,
) -> None:
    with psycopg.connect(database_url) as conn:
        names = [p.name for p in list_partitions(conn)]
        assert names[-1] == "ledger_default"
        for offset in range(4):
            assert _name(_month(offset)) in names
        assert _name(_month(4)) not in names
        again = ensure_partitions(conn, 3)
        assert [m.outcome for m in again] == ["exists"] * 4
        more = ensure_partitions(conn, 5)
        assert [m.outcome for m in more] == ["exists"] * 4 + ["created"] * 2
        assert more[5].range_from == _month(5) and more[5].range_to == _month(6)
        assert all(p.has_sequence_key for p in list_partitions(conn))
        with pytest.raises(errors.InvalidParameterValue):
            ensure_partitions(conn, -1)


def test_no_partition_asks_autovacuum_for_brin_summaries(database_url: str) -> None:
    # Migration 023: autosummarize off on every partition's index of ledger_recorded_at_brin,
    # those the migration found and those created later (a new one copies the parent's "on").
    with psycopg.connect(database_url) as conn:
        assert [m.outcome for m in ensure_partitions(conn, 5)][-2:] == ["created"] * 2
        options = dict(
            conn.execute(
                "SELECT c.relname, c.reloptions FROM pg_inherits i"
                " JOIN pg_class c ON c.oid = i.inhrelid"
                " WHERE i.inhparent = 'ledger_recorded_at_brin'::regclass"
            ).fetchall()
        )
        assert len(options) == len(list_partitions(conn))  # one each, DEFAULT included
        assert all(opts == ["autosummarize=off"] for opts in options.values()), options


def test_ensure_takes_no_lock_on_partitions_that_exist(database_url: str) -> None:
    # A long reader (a full reconcile) holds the current month; a routine ensure must not queue
    # behind it (its pending lock would make every writer queue behind it in turn).
    with psycopg.connect(database_url) as reader, psycopg.connect(database_url) as other:
        reader.execute(f"LOCK TABLE {_name(_month(0))} IN ACCESS SHARE MODE")
        other.execute("SET lock_timeout = '200ms'")
        assert {m.outcome for m in ensure_partitions(other, 3)} == {"exists"}
        other.commit()
        reader.rollback()


def test_the_app_role_may_ensure_but_not_write_the_command_guard(database_url: str) -> None:
    with connect(database_url, role="ledger_app") as conn:
        assert [m.outcome for m in ensure_partitions(conn, 4)][-1] == "created"
        conn.commit()
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("INSERT INTO ledger_commands VALUES ('t', 'c', 'fp', 'x', 0, 0, now())")


def test_cli_ensure_and_list(database_url: str) -> None:
    env = {**os.environ, "LEDGER_DATABASE_URL": database_url, "LEDGER_APP_DATABASE_URL": ""}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "budget_ledger.entrypoints.cli", "ledger", "partitions", *args],
            capture_output=True, text=True, timeout=60, env=env,
        )  # fmt: skip

    ensured = cli("ensure", "--ahead", "4")
    assert ensured.returncode == 0, ensured.stderr
    assert f"{_name(_month(4))}  [" in ensured.stdout and "created" in ensured.stdout
    listed = cli("list")
    assert listed.returncode == 0, listed.stderr
    assert "ledger_default  DEFAULT" in listed.stdout
    assert "rows in ledger_default: 0" in listed.stdout
    assert cli("ensure", "--ahead", "500").returncode == 2


# -- append-only and access -------------------------------------------------------------------


def test_update_delete_truncate_are_refused_on_every_partition_even_for_the_owner(
    database_url: str,
) -> None:
    now, ahead = datetime.now(UTC), _month(2) + timedelta(days=3)
    with psycopg.connect(database_url, autocommit=True) as conn:
        _insert(conn, _row("t", "b", 1, now, "c-now"), _row("t", "b", 2, ahead, "c-ahead"))
        ensure_partitions(conn, 6)  # a partition created after the migration
        future = _month(6) + timedelta(days=1)
        _insert(conn, _row("t", "b", 3, future, "c-future"))
        assert _partition_of(conn, "c-future") == _name(_month(6))
        for target in ("ledger", _name(_month(0)), _name(_month(2)), _name(_month(6))):
            for statement in (
                f"UPDATE {target} SET amount = 1",
                f"DELETE FROM {target}",
                f"TRUNCATE {target}",
            ):
                with pytest.raises(errors.InsufficientPrivilege, match="append-only"):
                    conn.execute(statement)
        with pytest.raises(errors.InsufficientPrivilege, match="append-only"):
            conn.execute("TRUNCATE ledger_default")
        with pytest.raises(errors.InsufficientPrivilege, match="append-only"):
            conn.execute("DELETE FROM ledger_commands")
        assert conn.execute("SELECT count(*) FROM ledger").fetchone() == (3,)


def test_a_partition_is_refused_to_readers_and_the_app_but_the_parent_serves_its_tenant(
    database_url: str,
) -> None:
    now = datetime.now(UTC)
    partition = _name(_month(0))
    with psycopg.connect(database_url, autocommit=True) as conn:
        _insert(conn, _row("A", "b", 1, now), _row("B", "b", 1, now))
        for role in ("ledger_reader", "ledger_tenant_reader", "ledger_app"):
            conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
            for target in (partition, "ledger_default"):
                with pytest.raises(errors.InsufficientPrivilege):
                    conn.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(target)))
            conn.execute("RESET ROLE")
        conn.execute("SET ROLE ledger_reader")
        conn.execute("SET ledger.tenant_id = 'B'")
        seen = conn.execute("SELECT tenant_id FROM ledger").fetchall()
        assert seen == [("B",)]


# -- the global command_id guard --------------------------------------------------------------


def test_a_command_id_reused_for_another_budget_in_another_month_is_refused(
    database_url: str,
) -> None:
    with psycopg.connect(database_url) as conn:
        _insert(conn, _row("t", "b1", 1, datetime.now(UTC), "same"))
        conn.commit()
        with pytest.raises(errors.UniqueViolation) as refused:
            _insert(conn, _row("t", "b2", 1, _month(2) + timedelta(days=1), "same"))
        conn.rollback()
        # The consumer reads this as "another partition's consumer took it": rewind and retry,
        # after which the prior outcome is found through ledger_commands.
        assert poison.is_race(refused.value)
        assert refused.value.diag.constraint_name == "ledger_tenant_id_command_id_key"
        # Another tenant may use the same id.
        _insert(conn, _row("u", "b2", 1, _month(2) + timedelta(days=1), "same"))
        conn.commit()
        prior = store.lookup_prior(conn, [("t", "same"), ("u", "same"), ("t", "none")])
    assert prior == {("t", "same"): ("fp", '{"n": 1}'), ("u", "same"): ("fp", '{"n": 1}')}


def test_a_partition_key_violation_is_read_like_the_old_keys(database_url: str) -> None:
    at = datetime.now(UTC)
    with psycopg.connect(database_url) as conn:
        first = _row("t", "b", 1, at)
        _insert(conn, first)
        conn.commit()
        with pytest.raises(errors.UniqueViolation) as position:
            _insert(conn, {**first, "command_id": "other", "sequence": 2})
        conn.rollback()
        with pytest.raises(errors.UniqueViolation) as sequence:
            _insert(conn, _row("t", "b", 1, at + timedelta(seconds=1)))
        conn.rollback()
    assert position.value.diag.constraint_name == f"{_name(_month(0))}_pkey"
    assert poison.is_position_conflict(position.value) and not poison.is_race(position.value)
    assert sequence.value.diag.constraint_name == f"{_name(_month(0))}_sequence_key"
    assert poison.is_race(sequence.value)


# -- the DEFAULT partition --------------------------------------------------------------------


def test_a_row_without_its_month_lands_in_default_and_ensure_skips_that_month(
    database_url: str,
) -> None:
    late, old = _month(5) + timedelta(days=2), datetime(2020, 5, 17, tzinfo=UTC)
    with psycopg.connect(database_url, autocommit=True) as conn:
        _insert(conn, _row("t", "b", 1, old, "c-old"), _row("t", "b", 2, late, "c-late"))
        assert _partition_of(conn, "c-old") == "ledger_default"
        assert _partition_of(conn, "c-late") == "ledger_default"
        months = {m.name: m.outcome for m in ensure_partitions(conn, 6)}
        assert months[_name(_month(4))] == "created"
        assert months[_name(_month(5))].startswith("skipped: 1 row(s)")
        assert months[_name(_month(6))] == "created"
        assert default_partition_rows(conn) == 2
        _insert(conn, _row("t", "b", 3, _month(6) + timedelta(days=1), "c-later"))
        assert _partition_of(conn, "c-later") == _name(_month(6))


# -- migration of a populated single table ----------------------------------------------------


@pytest.fixture
def v006_url(pg_admin_dsn: str) -> Iterator[str]:
    """An empty database migrated to 006 (the last single-table ledger)."""
    name = f"ledger_p_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = _with_database(pg_admin_dsn, name)
    migrate(url, target="006_reconcile_checkpoints")
    yield url
    _drop_database(pg_admin_dsn, name)  # waits out an autovacuum worker FORCE cannot stop


def _ledger_snapshot(url: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT position, tenant_id, budget_id, sequence, command_id, kafka_topic,"
            " kafka_partition, kafka_offset, event::text, recorded_at, prev_hash, hash"
            " FROM ledger ORDER BY position"
        ).fetchall()


def test_migration_attaches_the_old_rows_and_reconcile_full_is_clean(v006_url: str) -> None:
    rows = _rows()  # the v1 fixture: 92 rows recorded from September to November 2026
    with psycopg.connect(v006_url) as conn:
        with conn.cursor() as cur:
            cur.executemany(_INSERT, rows)
        conn.execute(
            "INSERT INTO relay_cursors (topic, partition, last_offset)"
            " SELECT kafka_topic, kafka_partition, max(kafka_offset) FROM ledger GROUP BY 1, 2"
            " ON CONFLICT (topic, partition) DO UPDATE SET last_offset = EXCLUDED.last_offset"
        )
    before = _ledger_snapshot(v006_url)
    months = {r["recorded_at"][:7] for r in rows}
    assert len(before) == len(rows) == 92 and len(months) >= 3

    assert "008_partitioned_ledger" in migrate(v006_url)

    assert _ledger_snapshot(v006_url) == before
    with connect(v006_url) as conn:  # projections in today's schema (as `budget-ledger rebuild`)
        rebuild(conn)
    args: argparse.Namespace = build_parser().parse_args(["reconcile", "--full", "--no-alerts"])
    assert int(args.handler(args, Settings(database_url=v006_url))) == 0
    with psycopg.connect(v006_url, autocommit=True) as conn:
        where = conn.execute("SELECT DISTINCT tableoid::regclass::text FROM ledger").fetchall()
        assert where == [("ledger_legacy",)]
        bound = conn.execute(
            "SELECT pg_get_expr(relpartbound, oid) FROM pg_class WHERE relname = 'ledger_legacy'"
        ).fetchone()
        assert bound == ("FOR VALUES FROM (MINVALUE) TO ('2026-12-01 00:00:00+00')",)
        guard = conn.execute("SELECT count(*) FROM ledger_commands").fetchone()
        assert guard == (92,)
        # The legacy partition is append-only and closed to the app like every other one.
        with pytest.raises(errors.InsufficientPrivilege, match="append-only"):
            conn.execute("DELETE FROM ledger_legacy")
        with pytest.raises(errors.InsufficientPrivilege, match="append-only"):
            conn.execute("TRUNCATE ledger_legacy")
        conn.execute("SET ROLE ledger_app")
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM ledger_legacy")
        conn.execute("RESET ROLE")
        # A retried old command is still recognised; new rows get later positions.
        known = rows[0]
        with pytest.raises(errors.UniqueViolation):
            _insert(
                conn,
                _row(known["tenant_id"], "elsewhere", 1, datetime.now(UTC), known["command_id"]),
            )
        _insert(conn, _row("t-new", "b", 1, datetime.now(UTC), "c-new"))
        position = conn.execute("SELECT position FROM ledger WHERE command_id = 'c-new'").fetchone()
        assert position is not None and position[0] > max(r[0] for r in before)  # type: ignore[operator]


def test_migration_of_an_empty_ledger_keeps_no_legacy_partition(v006_url: str) -> None:
    migrate(v006_url)
    with psycopg.connect(v006_url) as conn:
        names = [p.name for p in list_partitions(conn)]
    assert "ledger_legacy" not in names and names[0] == _name(_month(0))


# -- the page query ---------------------------------------------------------------------------


def test_pages_walk_a_budget_newest_first_across_a_month_boundary(database_url: str) -> None:
    boundary = _month(1)
    times = [boundary + timedelta(hours=h) for h in (-3, -2, -1, 0, 1, 2)]
    with psycopg.connect(database_url, autocommit=True) as conn:
        _insert(conn, *[_row("t", "b", i + 1, at) for i, at in enumerate(times)])
        _insert(conn, _row("t", "other", 1, times[2]), _row("u", "b", 1, times[2]))
        # Two rows at the same instant: the sequence breaks the tie.
        _insert(conn, _row("t", "b", 7, times[5]))
        seen: list[int] = []
        cursor: PageCursor | None = None
        pages = 0
        while True:
            page = ledger_page(
                conn, "t", "b", times[1], times[5] + timedelta(seconds=1), after=cursor, limit=2
            )
            seen += [e.sequence for e in page.entries]
            pages += 1
            if page.next is None:
                break
            cursor = PageCursor.from_token(page.next.token())
        assert seen == [7, 6, 5, 4, 3, 2] and pages == 3
        # [since, until) is half-open.
        window = ledger_page(conn, "t", "b", times[1], times[3])
        assert [e.sequence for e in window.entries] == [3, 2] and window.next is None

        explain = "\n".join(
            r[0]
            for r in conn.execute(
                "EXPLAIN " + store.queries()["ledger_page"],
                {
                    "tenant": "t",
                    "budget": "b",
                    "since": times[1],
                    "before_at": times[4],
                    "before_seq": 0,
                    "limit": 3,
                },
            )
        )
    assert _name(_month(0)) in explain and _name(_month(1)) in explain
    for pruned in (_name(_month(2)), _name(_month(3)), "ledger_default"):
        assert pruned not in explain, explain
    # The partitions' indexes of ledger_budget_pages (migration 014: with its INCLUDE columns).
    assert "ledger_budget_pages" in explain or "recorded_at_sequence_ty_idx" in explain, explain


def test_page_arguments_are_checked() -> None:
    with pytest.raises(ValueError):
        PageCursor.from_token("not-a-cursor")
    at = datetime(2026, 11, 2, 3, 4, 5, tzinfo=UTC)
    assert PageCursor.from_token(PageCursor(at, 12).token()) == PageCursor(at, 12)
