"""The reconciler against a real Postgres (and Kafka for --source kafka); no mocks.

Ledgers are filled by the consumer's own batch logic (`process_batch`, via the benchmark's
filler) so rows have exactly the consumer's layout; tampering is done as the owner role.
"""

from __future__ import annotations

import argparse
import re

import orjson
import psycopg
import pytest
from confluent_kafka import Consumer, Producer

from bench.replay_bench import build_rows, command_stream, fill
from budget_ledger.entrypoints.cli import build_parser
from budget_ledger.ledger.budget import BudgetState, evolve, initial_state
from budget_ledger.ledger.settings import Settings
from budget_ledger.projections.reconcile import ReconcileOptions, reconcile
from budget_ledger.projections.store import queries
from budget_ledger.schemas.codec import event_from_wire, event_to_wire
from tests.unfoldable import GHOST_REF, UNFOLDABLE_TYPE, unfoldable

pytestmark = pytest.mark.integration


def _run(settings: Settings, *argv: str) -> int:
    args: argparse.Namespace = build_parser().parse_args(list(argv))
    return int(args.handler(args, settings))


def _mark_published(url: str) -> None:
    # No relay ran in these tests: say the relay is caught up, so only real findings count.
    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO relay_cursors (topic, partition, last_offset) "
            "SELECT kafka_topic, kafka_partition, max(kafka_offset) FROM ledger GROUP BY 1, 2 "
            "ON CONFLICT (topic, partition) DO UPDATE SET last_offset = EXCLUDED.last_offset"
        )


def _alerts(url: str) -> list[dict]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT payload FROM outbox ORDER BY id").fetchall()
    return [orjson.loads(bytes(r[0])) for r in rows]


def _history(url: str) -> list[tuple[str, str, str, dict]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT type, tenant_id, budget_id, payload FROM alerts ORDER BY recorded_at"
        ).fetchall()
    return [(t, tenant, budget, payload) for t, tenant, budget, payload in rows]


@pytest.fixture
def filled(settings: Settings) -> Settings:
    fill(settings.database_url, 3000, 40, seed=11)
    _mark_published(settings.database_url)
    return settings


def test_clean_ledger_exits_0_without_alerts(
    filled: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(filled, "reconcile") == 0
    assert "clean" in capsys.readouterr().out
    assert _alerts(filled.database_url) == []


def test_altered_projection_is_drift_with_alert_then_rebuild_fixes_it(
    filled: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    with psycopg.connect(filled.database_url) as conn:
        funded = conn.execute(
            "SELECT funded FROM budget_balances WHERE tenant_id = 'tenant-1' "
            "AND budget_id = 'budget-1'"
        ).fetchone()[0]
        conn.execute(
            "UPDATE budget_balances SET funded = funded + 700 "
            "WHERE tenant_id = 'tenant-1' AND budget_id = 'budget-1'"
        )
    assert _run(filled, "reconcile", "--json") == 1
    report = orjson.loads(capsys.readouterr().out.strip().splitlines()[-1])
    drift = [d for d in report["drifts"] if d["field"] == "funded"]
    assert drift == [
        {
            "tenant_id": "tenant-1",
            "budget_id": "budget-1",
            "table": "budget_balances",
            "key": "budget-1",
            "field": "funded",
            "expected": funded,
            "actual": funded + 700,
            "difference": 700,
        }
    ]
    alerts = _alerts(filled.database_url)
    assert [(a["type"], a["tenant_id"], a["budget_id"]) for a in alerts] == [
        ("drift_detected", "tenant-1", "budget-1")
    ]
    # The alert history has it too (GET .../alerts): once, though the next run publishes it again.
    assert _history(filled.database_url) == [("drift_detected", "tenant-1", "budget-1", alerts[0])]
    assert _run(filled, "reconcile") == 1
    assert len(_alerts(filled.database_url)) == 2
    assert _history(filled.database_url) == [("drift_detected", "tenant-1", "budget-1", alerts[0])]
    assert _run(filled, "rebuild") == 0
    assert _run(filled, "reconcile", "--no-alerts") == 0


def test_altered_and_deleted_ledger_rows_name_the_first_broken_link(filled: Settings) -> None:
    with psycopg.connect(filled.database_url) as conn:
        # Every event is stored as its hashed bytes with the hash appended (migration 024).
        assert conn.execute(
            'SELECT count(*) FROM ledger WHERE event::text NOT LIKE \'{"amount":%,"hash":"%"}\''
        ).fetchone() == (0,)
        conn.execute("ALTER TABLE ledger DISABLE TRIGGER ledger_append_only")
        # Re-rendered by JSONB (the layout of rows written before migration 024) ...
        conn.execute(
            "UPDATE ledger SET event = jsonb_set(event::jsonb, '{command_id}', '\"forged\"')::json "
            "WHERE tenant_id = 'tenant-2' AND budget_id = 'budget-2' AND sequence = 5"
        )
        # ... and edited in place, keeping the stored layout.
        conn.execute(
            'UPDATE ledger SET event = replace(event::text, \'"command_id":"\', '
            '\'"command_id":"x\')::json '
            "WHERE tenant_id = 'tenant-1' AND budget_id = 'budget-7' AND sequence = 3"
        )
        conn.execute(
            "DELETE FROM ledger WHERE tenant_id = 'tenant-0' AND budget_id = 'budget-3' "
            "AND sequence = 7"
        )
        conn.execute("ALTER TABLE ledger ENABLE TRIGGER ledger_append_only")
    report = reconcile(filled.database_url, ReconcileOptions(progress=False))
    broken = {(b.tenant_id, b.budget_id): b for b in report.broken}
    assert set(broken) == {
        ("tenant-2", "budget-2"),
        ("tenant-1", "budget-7"),
        ("tenant-0", "budget-3"),
    }
    assert broken[("tenant-2", "budget-2")].sequence == 5
    assert "hash mismatch" in broken[("tenant-2", "budget-2")].problem
    assert broken[("tenant-1", "budget-7")].sequence == 3
    assert "hash mismatch" in broken[("tenant-1", "budget-7")].problem
    assert broken[("tenant-0", "budget-3")].sequence == 8
    assert "gap" in broken[("tenant-0", "budget-3")].problem
    assert not report.clean


def test_an_evolve_exception_is_a_broken_link_and_the_replay_goes_on(filled: Settings) -> None:
    victim = ("tenant-1", "budget-4")
    # Its sixth event re-sealed so that it verifies and only the fold fails, its columns
    # matching (tests/unfoldable.py).
    with psycopg.connect(filled.database_url) as conn:
        where = "WHERE tenant_id = %s AND budget_id = %s AND sequence = 6"
        (text,) = conn.execute(f"SELECT event::text FROM ledger {where}", victim).fetchone()
        digest, sealed = unfoldable(text)
        conn.execute("ALTER TABLE ledger DISABLE TRIGGER ledger_append_only")
        conn.execute(
            f"UPDATE ledger SET event = %s::json, type = %s, ref_id = %s, hash = %s {where}",
            (sealed, UNFOLDABLE_TYPE, GHOST_REF, digest, *victim),
        )
        conn.execute("ALTER TABLE ledger ENABLE TRIGGER ledger_append_only")
    for workers in (1, 2):
        report = reconcile(filled.database_url, ReconcileOptions(workers=workers, progress=False))
        assert report.events == 3000 and report.budgets == 40
        assert [(b.tenant_id, b.budget_id, b.sequence, b.problem) for b in report.broken] == [
            (*victim, 6, f"event does not replay: KeyError: '{GHOST_REF}'")
        ]
        # Drift is found for that budget only (its replay stopped short); the others verify.
        assert {(d.tenant_id, d.budget_id) for d in report.drifts} <= {victim}
        assert set(report.drifting) == {victim} and not report.clean


def _physical_sequences(url: str, tenant: str, budget: str) -> list[int]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT sequence FROM ledger WHERE tenant_id = %s AND budget_id = %s ORDER BY ctid",
            (tenant, budget),
        ).fetchall()
    return [r[0] for r in rows]


def _rewrite_rows(url: str, where: str) -> None:
    # A no-op UPDATE writes new row versions at the end of the heap: physical order != sequence.
    with psycopg.connect(url) as conn:
        conn.execute("ALTER TABLE ledger DISABLE TRIGGER ledger_append_only")
        conn.execute(f"UPDATE ledger SET event = event WHERE {where}")
        conn.execute("ALTER TABLE ledger ENABLE TRIGGER ledger_append_only")


@pytest.mark.parametrize("sort_off", [True, False])
def test_rebuilds_streamed_read_walks_the_index_where_a_sort_looks_cheaper(
    filled: Settings, sort_off: bool
) -> None:
    # Index reads made to look dear, as on a large ledger whose budgets interleave: planned as
    # a plain statement (it streams), the read would sort every row before sending the first.
    with psycopg.connect(filled.database_url) as conn, conn.transaction():
        conn.execute("SET LOCAL random_page_cost = 1000000")
        if sort_off:
            conn.execute(queries()["rebuild_in_index_order"])  # what rebuild sets
        plan = conn.execute(
            "EXPLAIN " + queries()["rebuild_stream"], {"tenant": None, "budget": None}
        ).fetchall()
    sorts = [line for (line,) in plan if re.search(r"\bSort\s+\(cost", line)]
    assert (sorts == []) is sort_off, plan


@pytest.mark.parametrize("chunked", [True, False], ids=["streamed", "fetched"])
@pytest.mark.parametrize("max_pending", [10_000, 2])
def test_rows_out_of_physical_order_are_replayed_in_sequence_order(
    filled: Settings, monkeypatch: pytest.MonkeyPatch, max_pending: int, chunked: bool
) -> None:
    # max_pending=2 forces the ordered per-budget re-read instead of buffering; the scan is
    # streamed (libpq 17 or later) or fetched from a server-side cursor (older libpq).
    import budget_ledger.ledger.db as db
    import budget_ledger.projections.replay as replay

    monkeypatch.setattr(replay, "MAX_PENDING", max_pending)
    monkeypatch.setattr(db, "CHUNKED", chunked)
    url = filled.database_url
    _rewrite_rows(
        url, "tenant_id = 'tenant-1' AND budget_id = 'budget-1' AND sequence IN (2, 3, 9)"
    )
    _rewrite_rows(url, "tenant_id = 'tenant-2' AND budget_id = 'budget-5' AND sequence = 1")
    seqs = _physical_sequences(url, "tenant-1", "budget-1")
    assert seqs != sorted(seqs)
    assert _physical_sequences(url, "tenant-2", "budget-5")[-1] == 1
    for workers in (1, 2):
        ticks: list[int] = []
        report = reconcile(url, ReconcileOptions(workers=workers, progress=False), ticks.append)
        assert report.events == 3000 and report.budgets == 40
        assert report.drifts == [] and report.broken == [] and report.clean
        assert sum(ticks) == 3000  # every scanned row reported once as progress


@pytest.mark.parametrize("chunked", [True, False], ids=["streamed", "fetched"])
@pytest.mark.parametrize("max_pending", [10_000, 2])
def test_gap_and_duplicate_are_found_whatever_the_physical_order(
    filled: Settings, monkeypatch: pytest.MonkeyPatch, max_pending: int, chunked: bool
) -> None:
    import budget_ledger.ledger.db as db
    import budget_ledger.projections.replay as replay

    monkeypatch.setattr(replay, "MAX_PENDING", max_pending)
    monkeypatch.setattr(db, "CHUNKED", chunked)
    url = filled.database_url
    with psycopg.connect(url) as conn:
        conn.execute("ALTER TABLE ledger DISABLE TRIGGER ledger_append_only")
        # budget-3: sequence 4 deleted and 6.. moved behind everything else (a gap, out of order).
        conn.execute(
            "DELETE FROM ledger WHERE tenant_id = 'tenant-0' AND budget_id = 'budget-3' "
            "AND sequence = 4"
        )
        conn.execute(
            "UPDATE ledger SET event = event WHERE tenant_id = 'tenant-0' "
            "AND budget_id = 'budget-3' AND sequence >= 6"
        )
        # budget-2: sequence 5 appears twice (only possible without the unique constraint, which
        # each partition of the ledger holds as its own <partition>_sequence_key).
        conn.execute(
            "DO $$ DECLARE k record; BEGIN"
            " FOR k IN SELECT conrelid::regclass AS rel, conname FROM pg_constraint"
            "  WHERE contype = 'u' AND conname LIKE 'ledger%sequence_key' LOOP"
            "  EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', k.rel, k.conname);"
            " END LOOP; END $$"
        )
        conn.execute(
            "INSERT INTO ledger (tenant_id, budget_id, sequence, type, command_id, "
            "command_fingerprint, ref_id, currency, amount, funded, reserved, charged, available, "
            "kafka_topic, kafka_partition, kafka_offset, event, recorded_at, prev_hash, hash) "
            "SELECT tenant_id, budget_id, sequence, type, command_id || '-again', "
            "command_fingerprint, ref_id, currency, amount, funded, reserved, charged, available, "
            "kafka_topic, kafka_partition, kafka_offset + 1000000, event, recorded_at, "
            "prev_hash, hash FROM ledger "
            "WHERE tenant_id = 'tenant-2' AND budget_id = 'budget-2' AND sequence = 5"
        )
        conn.execute("ALTER TABLE ledger ENABLE TRIGGER ledger_append_only")
    report = reconcile(url, ReconcileOptions(workers=2, progress=False))
    broken = {(b.tenant_id, b.budget_id): b for b in report.broken}
    assert set(broken) == {("tenant-0", "budget-3"), ("tenant-2", "budget-2")}
    assert broken[("tenant-0", "budget-3")].sequence == 5
    assert "gap: expected 4, found 5" in broken[("tenant-0", "budget-3")].problem
    assert broken[("tenant-2", "budget-2")].sequence == 5
    assert "duplicate: expected 6, found 5" in broken[("tenant-2", "budget-2")].problem
    assert report.events == 3000 and not report.clean


def test_replay_of_a_long_random_stream_equals_the_live_projections(settings: Settings) -> None:
    events = fill(settings.database_url, 20_000, 150, seed=99)
    _mark_published(settings.database_url)
    for workers in (1, 2):
        report = reconcile(settings.database_url, ReconcileOptions(workers=workers, progress=False))
        assert report.events == events and report.budgets == 150
        assert report.drifts == [] and report.broken == [] and report.clean


def test_what_the_consumer_writes_decodes_and_reencodes_to_the_same_wire() -> None:
    # The one codec both ways: a written event read back folds to the writer's state and
    # re-encodes to the very dict whose bytes were hashed.
    states: dict[tuple[str, str], BudgetState] = {}
    for out in build_rows(command_stream(5000, 30, seed=5)):
        for row in out.ledger_rows:
            wire = orjson.loads(row[16])
            digits = 0 if wire["currency"] is None else 2
            event = event_from_wire(wire, digits)
            assert event_to_wire(event, digits) == wire
            key = (event.tenant_id, event.budget_id)
            states[key] = evolve(states.get(key) or initial_state(*key), event)
        for partition_states in out.new_states.values():
            for key, live in partition_states.items():
                assert states[key] == live


def test_event_missing_from_the_topic_is_reported(settings: Settings) -> None:
    from budget_ledger.consumers.kafka_config import producer_config
    from budget_ledger.consumers.topics import create_topics

    fill(settings.database_url, 400, 5, seed=3)
    _mark_published(settings.database_url)
    create_topics(settings)
    producer = Producer(producer_config(settings))
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute(
            "SELECT tenant_id, budget_id, sequence, event::text FROM ledger "
            "ORDER BY kafka_partition, kafka_offset"
        ).fetchall()
    skipped = next(r for r in rows if r[1] == "budget-2" and r[2] == 10)
    for t, b, _seq, text in rows:
        if (t, b, _seq) != skipped[:3]:
            producer.produce(settings.topic_events, key=f"{t}:{b}".encode(), value=text.encode())
    assert producer.flush(30) == 0
    assert _run(settings, "reconcile", "--source", "kafka", "--no-alerts") == 1
    from budget_ledger.projections.kafka_check import compare

    with psycopg.connect(settings.database_url) as conn:
        found = compare(conn, settings)
        checkpointed = set(
            conn.execute("SELECT tenant_id, budget_id FROM reconcile_checkpoints").fetchall()
        )
    assert found.missing == [(skipped[0], "budget-2", 10)]
    assert not (found.extra or found.differing or found.reordered)
    # The ledger verified clean, but a budget with a Kafka finding does not advance.
    budgets = {(t, b) for t, b, _seq, _text in rows}
    assert checkpointed == budgets - {(skipped[0], "budget-2")}


def test_events_past_the_topics_retention_are_not_reported_missing(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]

    from budget_ledger.consumers.kafka_config import admin_config, producer_config
    from budget_ledger.consumers.topics import create_topics

    fill(settings.database_url, 400, 5, seed=3)
    _mark_published(settings.database_url)
    create_topics(settings)
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute(
            "SELECT tenant_id, budget_id, sequence, event::text FROM ledger "
            "ORDER BY kafka_partition, kafka_offset"
        ).fetchall()
    old, new = rows[: len(rows) // 2], rows[len(rows) // 2 :]
    # One event really lost after the retention boundary: the second retained one of a budget.
    firsts: set[tuple[str, str]] = set()
    lost = None
    for t, b, seq, _text in new:
        if (t, b) in firsts:
            lost = (t, b, seq)
            break
        firsts.add((t, b))
    assert lost is not None

    producer = Producer(producer_config(settings))

    def publish(batch: list[tuple[str, str, int, str]]) -> None:
        for t, b, seq, text in batch:
            if (t, b, seq) != lost:
                producer.produce(
                    settings.topic_events, key=f"{t}:{b}".encode(), value=text.encode()
                )
        assert producer.flush(30) == 0

    publish(old)
    # Retention deletes the oldest segments: the log start offset moves past every old event.
    admin = AdminClient(admin_config(settings))
    probe = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": "probe"})
    ends = [
        TopicPartition(settings.topic_events, p, probe.get_watermark_offsets(
            TopicPartition(settings.topic_events, p), timeout=10)[1])
        for p in range(settings.topic_partitions)
    ]  # fmt: skip
    probe.close()
    for future in admin.delete_records(ends, operation_timeout=30).values():
        future.result(timeout=60)
    publish(new)

    from budget_ledger.projections.kafka_check import compare

    with psycopg.connect(settings.database_url) as conn:
        found = compare(conn, settings)
    assert found.missing == [lost]
    assert found.past_retention == len(old)
    assert not (found.extra or found.differing or found.reordered)

    assert _run(settings, "reconcile", "--source", "kafka", "--no-alerts", "--json") == 1
    kafka = orjson.loads(capsys.readouterr().out.strip().splitlines()[-1])["kafka"]
    assert kafka["past_retention"] == len(old)
    assert kafka["missing"] == [{"tenant_id": lost[0], "budget_id": lost[1], "sequence": lost[2]}]
