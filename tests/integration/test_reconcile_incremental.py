"""Incremental reconcile against a real Postgres: per-budget checkpoints with the verified state
there, what an incremental run reads (only the new events of the budgets written since the last
run) and finds, what only `--full` finds, and who may write a checkpoint.

Ledgers are filled by the consumer's own batch logic (the benchmark's filler, then
`process_batch` for the appended events); tampering is done as the owner role.
"""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any

import orjson
import psycopg
import pytest

from bench.replay_bench import fill
from budget_ledger.consumers.processor import BatchContext, Incoming, PartitionState, process_batch
from budget_ledger.entrypoints.cli import build_parser
from budget_ledger.entrypoints.errors import CliError
from budget_ledger.ledger import store
from budget_ledger.ledger.chain_mac import ChainKey, ChainKeyring
from budget_ledger.ledger.db import connect
from budget_ledger.ledger.settings import Settings
from budget_ledger.ledger.state import compact
from budget_ledger.ledger.store import load_budgets
from budget_ledger.projections.chain_seal import seal_legacy
from budget_ledger.projections.checkpoint_state import decode_state
from budget_ledger.projections.reconcile import ReconcileOptions, ReconcileReport, reconcile
from budget_ledger.projections.store import upsert_projections
from tests.conftest import CHAIN_KEYS, as_login

pytestmark = pytest.mark.integration

KEY = ChainKey("dev-chain-1", CHAIN_KEYS["chain_keys"]["dev-chain-1"].encode())
RING = ChainKeyring({KEY.key_id: KEY.secret})
EVENTS, BUDGETS = 1200, 12
HOT = ("tenant-1", "budget-1")  # the budget that gets new events
COLD = ("tenant-2", "budget-5")  # a budget left alone after the checkpoint


def _run(url: str, full: bool = False, keys: ChainKeyring | None = None) -> ReconcileReport:
    opts = ReconcileOptions(progress=False, incremental=not full, chain_keys=keys)
    return reconcile(url, opts, checkpoint_dsn=url)


def _cli(settings: Settings, capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    args: argparse.Namespace = build_parser().parse_args(["reconcile", "--json", *argv])
    code = int(args.handler(args, settings))
    lines = capsys.readouterr().out.splitlines()  # the log line goes to stdout too
    out: dict[str, Any] = orjson.loads(next(x for x in lines if x.startswith('{"clean"')))
    assert code == (0 if out["clean"] else 1)
    return out


def _events_of(url: str, key: tuple[str, str]) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM ledger WHERE tenant_id = %s AND budget_id = %s", key
        ).fetchone()
    return int(row[0]) if row else 0


def _checkpoint(url: str, key: tuple[str, str]) -> int | None:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT sequence FROM reconcile_checkpoints WHERE tenant_id = %s AND budget_id = %s",
            key,
        ).fetchone()
    return int(row[0]) if row else None


def _append(
    url: str,
    key: tuple[str, str],
    n: int,
    offset: int,
    chain_key: ChainKey | None = None,
    now: datetime | None = None,
) -> None:
    """`n` fund commands for one budget through the consumer's own batch logic, written with
    the credentials of `url` (keyed rows when `chain_key` is given; the consumer's clock `now`
    when given)."""
    ctx = BatchContext("x.commands", "x.events", "x.alerts", "x.dlq", {"USD": 2, "ZWG": 2},
                       chain_key=chain_key)  # fmt: skip
    with connect(url) as conn:
        currency = conn.execute(
            "SELECT currency FROM budget_balances WHERE tenant_id = %s AND budget_id = %s", key
        ).fetchone()
        assert currency is not None
        commands = [
            {"tenant_id": key[0], "budget_id": key[1], "command_id": f"new-{offset + i}",
             "type": "fund", "amount": "1.00", "currency": currency[0]}
            for i in range(n)
        ]  # fmt: skip
        msgs = [
            Incoming(99, offset + i, f"{key[0]}:{key[1]}".encode(), orjson.dumps(c))
            for i, c in enumerate(commands)
        ]
        out = process_batch(
            msgs,
            {99: PartitionState(next_offset=offset)},
            ctx,
            lookup_prior=lambda keys: {},
            load_budgets=lambda keys: load_budgets(conn, keys),
            now=now,
        )
        assert len(out.ledger_rows) == n and not out.dead_letters
        with conn.transaction():
            store.append_ledger_rows(conn, out.ledger_rows, keyed=chain_key is not None)
            upsert_projections(conn, out.balance_rows, out.reservation_rows)


def _tamper(url: str, key: tuple[str, str], sequence: int) -> None:
    with psycopg.connect(url) as conn:
        conn.execute("ALTER TABLE ledger DISABLE TRIGGER ledger_append_only")
        conn.execute(
            "UPDATE ledger SET event = jsonb_set(event::jsonb, '{command_id}', '\"forged\"')::json "
            "WHERE tenant_id = %s AND budget_id = %s AND sequence = %s",
            (*key, sequence),
        )
        conn.execute("ALTER TABLE ledger ENABLE TRIGGER ledger_append_only")


@pytest.fixture
def checkpointed(settings: Settings) -> str:
    """A ledger of EVENTS events over BUDGETS budgets, reconciled once: all checkpointed."""
    url = settings.database_url
    fill(url, EVENTS, BUDGETS, seed=5)
    first = _run(url)
    assert first.clean and first.mode == "incremental"
    assert (first.events, first.skipped_events, first.checkpoints_advanced) == (EVENTS, 0, BUDGETS)
    return url


def _state(url: str, key: tuple[str, str]) -> str | None:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT state::text FROM reconcile_checkpoints WHERE tenant_id = %s AND budget_id = %s",
            key,
        ).fetchone()
    return None if row is None else row[0]


def _sql(url: str, statement: str, *params: object) -> None:
    """One statement as the owner, with the ledger's append-only trigger off (tampering)."""
    with psycopg.connect(url) as conn:
        conn.execute("ALTER TABLE ledger DISABLE TRIGGER ledger_append_only")
        conn.execute(statement, params)
        conn.execute("ALTER TABLE ledger ENABLE TRIGGER ledger_append_only")


def test_a_second_run_replays_only_the_new_events(
    checkpointed: str, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    url = checkpointed
    # Every checkpoint carries the budget's verified state there: the consumer's own state,
    # open reservations only.
    with connect(url) as conn:
        loaded = load_budgets(conn, [HOT])[HOT]
    stored = _state(url, HOT)
    assert stored is not None and decode_state(stored) == compact(loaded)

    again = _run(url)
    assert again.clean and (again.events, again.budgets) == (0, 0)
    assert (again.skipped_events, again.skipped_budgets) == (EVENTS, BUDGETS)

    before = _events_of(url, HOT)
    _append(url, HOT, 5, offset=10_000)
    out = _cli(settings, capsys)
    # Only the changed budget is read, and only its new events are replayed: from the state
    # stored at its checkpoint.
    assert out["clean"] and out["mode"] == "incremental"
    assert (out["events"], out["budgets"]) == (5, 1)
    assert (out["skipped_events"], out["skipped_budgets"]) == (EVENTS, BUDGETS - 1)
    assert _checkpoint(url, HOT) == before + 5
    with connect(url) as conn:
        loaded = load_budgets(conn, [HOT])[HOT]
    stored = _state(url, HOT)
    assert stored is not None and decode_state(stored) == compact(loaded)

    full = _cli(settings, capsys, "--full")
    assert full["clean"] and full["mode"] == "full"
    assert (full["events"], full["skipped_events"]) == (EVENTS + 5, 0)


def test_a_row_tampered_after_the_checkpoint_is_found_and_holds_the_checkpoint(
    checkpointed: str,
) -> None:
    url = checkpointed
    before = _events_of(url, HOT)
    _append(url, HOT, 3, offset=10_000)
    _tamper(url, HOT, before + 2)
    for _ in range(2):  # the checkpoint did not move past it: the next run finds it again
        report = _run(url)
        assert [(b.tenant_id, b.budget_id, b.sequence) for b in report.broken] == [
            (*HOT, before + 2)
        ]
        assert "hash mismatch" in report.broken[0].problem and not report.clean
        assert _checkpoint(url, HOT) == before


def test_a_row_tampered_before_the_checkpoint_is_found_only_by_full(
    checkpointed: str, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    url = checkpointed
    cold_seq = _checkpoint(url, COLD)
    assert cold_seq is not None and cold_seq > 3
    _tamper(url, COLD, 3)
    incremental = _cli(settings, capsys)
    assert incremental["clean"] and incremental["budgets"] == 0  # the documented blind spot

    full = _cli(settings, capsys, "--full")
    assert not full["clean"]
    assert [(b["tenant_id"], b["budget_id"], b["sequence"]) for b in full["broken_links"]] == [
        (*COLD, 3)
    ]
    assert _checkpoint(url, COLD) == cold_seq  # a budget that did not verify keeps its old one


def test_an_untouched_budget_is_not_even_read(checkpointed: str) -> None:
    url = checkpointed
    seq = _checkpoint(url, COLD)
    # The owner deletes the budget's last (checkpointed) row: no new row was recorded, so an
    # incremental run does not look at the budget at all (the first run, which probes every
    # budget's last row, would: next test); --full finds it.
    _sql(url, "DELETE FROM ledger WHERE tenant_id = %s AND budget_id = %s AND sequence = %s",
         *COLD, seq)  # fmt: skip
    report = _run(url)
    assert report.clean and (report.events, report.budgets) == (0, 0)
    full = _run(url, full=True)
    assert [(b.budget_id, b.sequence) for b in full.broken] == [(COLD[1], seq)]
    assert "checkpointed rows missing" in full.broken[0].problem


def test_a_vanished_checkpointed_row_falls_back_to_a_whole_replay(checkpointed: str) -> None:
    url = checkpointed
    seq = _checkpoint(url, COLD)
    assert seq is not None
    _sql(url, "DELETE FROM ledger WHERE tenant_id = %s AND budget_id = %s AND sequence = %s",
         *COLD, seq)  # fmt: skip
    # A row recorded since the last run (its recorded_at moved to now): a candidate again.
    _sql(url, "UPDATE ledger SET recorded_at = now() WHERE tenant_id = %s AND budget_id = %s"
         " AND sequence = %s", *COLD, seq - 1)  # fmt: skip
    report = _run(url)
    # The checkpointed row is gone, so the replay cannot start from its state: the budget is
    # replayed from its first event, and the lost row is named as a full run names it.
    assert report.budgets == 1 and report.events == seq - 1 and not report.clean
    assert [(b.budget_id, b.sequence) for b in report.broken] == [(COLD[1], seq)]
    assert "checkpointed rows missing" in report.broken[0].problem
    assert _checkpoint(url, COLD) == seq


def test_the_first_run_probes_every_budget_and_finds_lost_rows(checkpointed: str) -> None:
    url = checkpointed
    seq = _checkpoint(url, COLD)
    _sql(url, "DELETE FROM ledger WHERE tenant_id = %s AND budget_id = %s AND sequence = %s",
         *COLD, seq)  # fmt: skip
    _sql(url, "DELETE FROM reconcile_runs")  # as if no run had been recorded yet
    report = _run(url)
    assert report.budgets == 1 and not report.clean
    assert [(b.budget_id, b.sequence) for b in report.broken] == [(COLD[1], seq)]
    assert "checkpointed rows missing" in report.broken[0].problem


def test_a_checkpoint_without_state_falls_back_to_a_whole_replay(checkpointed: str) -> None:
    url = checkpointed
    before = _events_of(url, HOT)
    _sql(url, "UPDATE reconcile_checkpoints SET state = NULL WHERE tenant_id = %s"
         " AND budget_id = %s", *HOT)  # fmt: skip
    _append(url, HOT, 3, offset=10_000)
    report = _run(url)
    assert report.clean and (report.events, report.budgets) == (before + 3, 1)
    assert _state(url, HOT) is not None  # written by that clean run
    _append(url, HOT, 2, offset=20_000)
    report = _run(url)
    assert report.clean and (report.events, report.budgets) == (2, 1)


def test_projection_drift_after_the_checkpoint_is_found_until_fixed(checkpointed: str) -> None:
    url = checkpointed
    before = _events_of(url, HOT)
    _append(url, HOT, 2, offset=10_000)
    _sql(url, "UPDATE budget_balances SET funded = funded + 1 WHERE tenant_id = %s"
         " AND budget_id = %s", *HOT)  # fmt: skip
    for _ in range(2):  # no new event before the second: HOT is replayed as last run's finding
        report = _run(url)
        assert [(d.budget_id, d.field, d.difference) for d in report.drifts] == [
            (HOT[1], "funded", 1)
        ]
        assert report.events == 2 and _checkpoint(url, HOT) == before
    _sql(url, "UPDATE budget_balances SET funded = funded - 1 WHERE tenant_id = %s"
         " AND budget_id = %s", *HOT)  # fmt: skip
    report = _run(url)
    assert report.clean and _checkpoint(url, HOT) == before + 2
    assert _run(url).budgets == 0  # fixed: no longer a finding to look at


def test_reservation_drift_open_is_found_settled_before_the_checkpoint_only_by_full(
    checkpointed: str,
) -> None:
    url = checkpointed
    with psycopg.connect(url) as conn:
        cp = _checkpoint(url, HOT)
        open_ref, settled_ref = (
            conn.execute(
                "SELECT ref_id FROM reservations WHERE tenant_id = %s AND budget_id = %s"
                f" AND status {op} 'reserved' AND updated_seq <= %s ORDER BY ref_id LIMIT 1",
                (*HOT, cp),
            ).fetchone()
            or ("",)
            for op in ("=", "<>")
        )
    assert open_ref[0] and settled_ref[0]
    _append(url, HOT, 1, offset=10_000)
    for ref in (open_ref[0], settled_ref[0]):
        _sql(url, "UPDATE reservations SET amount = amount + 7 WHERE tenant_id = %s"
             " AND budget_id = %s AND ref_id = %s", *HOT, ref)  # fmt: skip
    report = _run(url)
    assert report.events == 1
    assert [(d.key, d.field, d.difference) for d in report.drifts] == [(open_ref[0], "amount", 7)]
    full = _run(url, full=True)
    assert sorted((d.key, d.field, d.difference) for d in full.drifts) == sorted(
        [(open_ref[0], "amount", 7), (settled_ref[0], "amount", 7)]
    )


def test_the_candidate_query_reads_the_brin_index(checkpointed: str) -> None:
    from budget_ledger.projections.store import queries

    with psycopg.connect(checkpointed) as conn:
        conn.execute("SET enable_seqscan = off")  # a 1,200-row table: the planner would scan
        params = {"tenant": None, "budget": None, "shard": 0, "shards": 1,
                  "since": "2026-01-01T00:00:00Z", "drifting_tenants": [],
                  "drifting_budgets": []}  # fmt: skip
        plan = "\n".join(
            r[0]
            for r in conn.execute(
                "EXPLAIN " + queries()["reconcile_touched_since"], params
            ).fetchall()
        )
        used = {line.split(" on ")[1].split()[0] for line in plan.splitlines()
                if "Bitmap Index Scan on" in line}  # fmt: skip
        assert used, plan
        kinds = {
            r[0]
            for r in conn.execute(
                "SELECT a.amname FROM pg_class c JOIN pg_am a ON a.oid = c.relam"
                " WHERE c.relname = ANY(%s)",
                (list(used),),
            )
        }
        assert kinds == {"brin"}, plan


def _blocks_read_for_future_rows(url: str) -> int:
    """Heap blocks a BRIN scan for rows recorded after tomorrow reads (there are none): 0 when
    every block range holding rows is summarised, every such block otherwise."""
    with psycopg.connect(url) as conn:
        conn.execute("SET enable_seqscan = off")
        plan = [r[0] for r in conn.execute(
            "EXPLAIN (ANALYZE) SELECT count(*) FROM ledger"
            " WHERE recorded_at >= now() + interval '1 day'")]  # fmt: skip
    return sum(int(part.split("=")[1]) for line in plan if "Heap Blocks:" in line
               for part in line.split() if "=" in part)  # fmt: skip


def test_an_incremental_run_first_summarizes_the_ranges_autovacuum_left(checkpointed: str) -> None:
    # A busy day overflows autosummarize's queue (migration 019): every range of the ledger
    # unsummarised, as PostgreSQL leaves them when it drops the requests.
    with psycopg.connect(checkpointed, autocommit=True) as conn:
        ranges = conn.execute(
            "SELECT DISTINCT i.indexrelid::regclass::text, (l.ctid::text::point)[0]::bigint"
            " / 128 * 128 FROM ledger l JOIN pg_index i ON i.indrelid = l.tableoid"
            " JOIN pg_inherits h ON h.inhrelid = i.indexrelid"
            " AND h.inhparent = 'ledger_recorded_at_brin'::regclass"
        ).fetchall()
        assert ranges
        for index, block in ranges:
            conn.execute("SELECT brin_desummarize_range(%s::regclass, %s)", (index, block))
    before = _blocks_read_for_future_rows(checkpointed)
    assert before > 0  # every block of the ledger, for a query that matches no row
    report = _run(checkpointed)
    assert report.clean and report.events == 0
    assert _blocks_read_for_future_rows(checkpointed) == 0
    with psycopg.connect(checkpointed) as conn:  # nothing left for the owner to summarise
        left = conn.execute(
            "SELECT sum(brin_summarize_new_values(inhrelid)) FROM pg_inherits"
            " WHERE inhparent = 'ledger_recorded_at_brin'::regclass"
        ).fetchone()
    assert left is not None and left[0] == 0


def test_every_reconciling_role_may_summarize_but_not_the_tenant_reader(
    checkpointed: str,
) -> None:
    with psycopg.connect(checkpointed, autocommit=True) as conn:
        for role in ("ledger_app", "ledger_reconciler", "ledger_reader"):
            conn.execute(f"SET ROLE {role}")
            row = conn.execute("SELECT ledger_summarize_new_ranges()").fetchone()
            assert row is not None and row[0] >= 0
            conn.execute("RESET ROLE")
        conn.execute("SET ROLE ledger_tenant_reader")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT ledger_summarize_new_ranges()")


def test_a_row_forged_with_the_app_credentials_is_reported_by_an_incremental_run(
    settings: Settings, app_login: tuple[str, str]
) -> None:
    url = settings.database_url
    app_url = as_login(url, *app_login)
    fill(url, EVENTS, BUDGETS, seed=5)
    with connect(url) as conn:  # the owner vouches for the rows written before the key
        assert seal_legacy(conn, KEY) == BUDGETS
    assert _run(url, keys=RING).clean
    before = _events_of(url, HOT)
    _append(app_url, HOT, 2, offset=10_000, chain_key=KEY)  # the consumer, holding the key
    _append(app_url, HOT, 1, offset=20_000)  # ledger_app credentials alone: no MAC
    report = _run(url, keys=RING)
    assert [(b.budget_id, b.sequence, b.problem) for b in report.broken] == [
        (HOT[1], before + 3, "mac missing: the row was not written by a holder of the chain key")
    ]
    assert _checkpoint(url, HOT) == before
    assert report.skipped_budgets == BUDGETS - 1


def _totals(url: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """The kept totals of the checkpoints (migration 021), and the same counted."""
    with psycopg.connect(url) as conn:
        kept = conn.execute("SELECT budgets, events FROM reconcile_checkpoint_totals").fetchall()
        counted = conn.execute(
            "SELECT count(*), coalesce(sum(sequence), 0) FROM reconcile_checkpoints"
        ).fetchone()
    assert len(kept) == 1 and counted is not None
    return kept[0], counted


def test_the_checkpoint_totals_follow_every_write_of_the_checkpoints(
    checkpointed: str, app_login: tuple[str, str]
) -> None:
    url = checkpointed
    assert _totals(url) == ((BUDGETS, EVENTS), (BUDGETS, EVENTS))
    _append(url, HOT, 5, offset=10_000)
    assert _run(url).checkpoints_advanced == 1  # an upsert that updates
    assert _totals(url)[0] == (BUDGETS, EVENTS + 5) == _totals(url)[1]
    for statement in (
        "UPDATE reconcile_checkpoints SET sequence = sequence - 1 WHERE sequence > 3",
        "INSERT INTO reconcile_checkpoints (tenant_id, budget_id, sequence, hash)"
        " VALUES ('t', 'b', 7, 'h'), ('t', 'c', 9, 'h')",
        "DELETE FROM reconcile_checkpoints WHERE budget_id IN ('b', 'c')",
        "DELETE FROM reconcile_checkpoints WHERE tenant_id = 'nobody'",
    ):
        _sql(url, statement)
        kept, counted = _totals(url)
        assert kept == counted, statement
    _sql(url, "TRUNCATE reconcile_checkpoints")
    assert _totals(url) == ((0, 0), (0, 0))
    # The totals move only with the checkpoints: no role writes them directly.
    for role_url, role in ((as_login(url, *app_login), None), (url, "ledger_reconciler")):
        with (
            connect(role_url, role=role) as conn,
            pytest.raises(psycopg.errors.InsufficientPrivilege),
        ):
            conn.execute("UPDATE reconcile_checkpoint_totals SET events = 1")


def test_ledger_app_cannot_write_or_become_the_checkpoint_writer(
    checkpointed: str, app_login: tuple[str, str]
) -> None:
    app_url = as_login(checkpointed, *app_login)
    statements = (
        "UPDATE reconcile_checkpoints SET sequence = sequence + 1000",
        "DELETE FROM reconcile_checkpoints",
        "INSERT INTO reconcile_checkpoints (tenant_id, budget_id, sequence, hash)"
        " VALUES ('t', 'b', 1, 'h')",
        "SET ROLE ledger_reconciler",
        "TRUNCATE reconcile_checkpoints",
    )
    for statement in statements:
        with psycopg.connect(app_url) as conn:
            assert conn.execute("SELECT count(*) FROM reconcile_checkpoints").fetchone() == (
                BUDGETS,
            )
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
    # And the reconciler's own role holds nothing but the checkpoints.
    with (
        connect(checkpointed, role="ledger_reconciler") as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute("SELECT 1 FROM ledger LIMIT 1")


def test_a_login_that_cannot_write_checkpoints_is_a_one_line_error(
    checkpointed: str, settings: Settings, app_login: tuple[str, str]
) -> None:
    as_app = settings.model_copy(update={"database_url": as_login(checkpointed, *app_login)})
    args = build_parser().parse_args(["reconcile", "--full"])
    with pytest.raises(CliError, match="cannot SET ROLE ledger_reconciler"):
        args.handler(args, as_app)
    args = build_parser().parse_args(["reconcile", "--full", "--no-checkpoints"])
    assert args.handler(args, as_app) == 0


def test_a_forged_checkpoint_state_is_found_by_full(checkpointed: str) -> None:
    url = checkpointed
    seq = _checkpoint(url, COLD)
    _sql(url, "UPDATE reconcile_checkpoints SET state = jsonb_set(state::jsonb,"  # funded
         " '{6}', to_jsonb((state::jsonb->>6)::bigint + 100))"
         " WHERE tenant_id = %s"
         " AND budget_id = %s", *COLD)  # fmt: skip
    full = _run(url, full=True)
    assert [(b.budget_id, b.sequence, b.problem) for b in full.broken] == [
        (COLD[1], seq, "checkpoint state differs from the replay")
    ]
