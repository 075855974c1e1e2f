"""The reconciler's per-budget replay without a database: rows made by the consumer's own batch
logic (the benchmark's `build_rows`), fed to `BudgetReplay` as the ledger scan would."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from bench.replay_bench import build_rows, command_stream
from budget_ledger.projections.reconcile_report import ReconcileReport, iter_lines
from budget_ledger.projections.replay import BudgetReplay
from tests.unfoldable import GHOST_REF, UNFOLDABLE_TYPE, unfoldable

CURRENCIES = {"USD": 2, "ZWG": 2}
Key = tuple[str, str]


def _scan_rows() -> list[tuple[Any, ...]]:
    """Ledger rows in the layout of `reconcile_ledger_scan` (COPY layout: see copy_ledger)."""
    rows = []
    for out in build_rows(command_stream(1500, 8, seed=21)):
        for r in out.ledger_rows:
            rows.append(
                (r[0], r[1], r[2], r[3], r[9], r[10], r[11], r[12], r[16], None, None, r[20], r[21])
            )
    return rows


def _replay(rows: list[tuple[Any, ...]]) -> dict[Key, BudgetReplay]:
    budgets: dict[Key, BudgetReplay] = {}
    for row in rows:
        key = (row[0], row[1])
        budget = budgets.get(key)
        if budget is None:
            budget = budgets[key] = BudgetReplay(*key)
        budget.feed(row)
    for budget in budgets.values():
        budget.end_of_scan()
    return budgets


@pytest.fixture(scope="module")
def rows() -> list[tuple[Any, ...]]:
    return _scan_rows()


def _first(rows: list[tuple[Any, ...]], event_type: str) -> tuple[Key, int]:
    """A budget and the sequence of its first event of `event_type` past the opening."""
    row = next(r for r in rows if r[3] == event_type and r[2] > 2)
    return (row[0], row[1]), row[2]


def test_consumer_rows_replay_clean(rows: list[tuple[Any, ...]]) -> None:
    budgets = _replay(rows)
    assert len(budgets) == 8
    assert all(b.broken is None for b in budgets.values())
    assert sum(b.events for b in budgets.values()) == len(rows)


def test_an_evolve_exception_is_a_broken_link_and_the_other_budgets_still_verify(
    rows: list[tuple[Any, ...]],
) -> None:
    clean = _replay(rows)
    victim, seq = _first(rows, "budget_funded")

    # That row re-sealed so that it verifies and only the fold fails, its type column matching
    # (tests/unfoldable.py).
    def resealed(r: tuple[Any, ...]) -> tuple[Any, ...]:
        _, text = unfoldable(r[8])
        return (*r[:3], UNFOLDABLE_TYPE, *r[4:8], text, *r[9:])

    budgets = _replay([resealed(r) if (r[0], r[1]) == victim and r[2] == seq else r for r in rows])

    broken = {k: b.broken for k, b in budgets.items() if b.broken is not None}
    assert list(broken) == [victim]
    link = broken[victim]
    assert link is not None and link.sequence == seq
    assert link.problem == f"event does not replay: KeyError: '{GHOST_REF}'"
    # The replay went on: every row was read, every other budget replayed to the same state.
    assert sum(b.events for b in budgets.values()) == len(rows)
    for key, budget in budgets.items():
        if key != victim:
            assert budget.state == clean[key].state
    # The run names the budget and is not clean (the CLI exits 1 on it).
    report = ReconcileReport(events=len(rows), budgets=len(budgets), broken=[link])
    assert not report.clean
    assert (
        f"BROKEN LINK {victim[0]}:{victim[1]} sequence {seq}: event does not replay"
        in "\n".join(iter_lines(report))
    )


def test_a_tampered_event_breaks_the_chain_at_its_sequence(rows: list[tuple[Any, ...]]) -> None:
    victim, seq = _first(rows, "funds_reserved")

    def tampered() -> Iterator[tuple[Any, ...]]:
        for r in rows:
            if (r[0], r[1]) == victim and r[2] == seq:
                body = r[8] if isinstance(r[8], str) else r[8].decode()
                r = (*r[:8], body.replace('"command_id":"', '"command_id":"x', 1), *r[9:])
            yield r

    budgets = _replay(list(tampered()))
    link = budgets[victim].broken
    assert link is not None and link.sequence == seq and "hash mismatch" in link.problem
    assert all(b.broken is None for k, b in budgets.items() if k != victim)


@pytest.mark.parametrize(
    ("event_type", "column", "value", "problem"),
    [
        ("funds_reserved", 11, "insufficient_funds", "column reason differs"),
        ("reservation_rejected", 11, None, "column reason differs"),
        ("reservation_rejected", 11, "negative_funds", "column reason differs"),
        ("funds_reserved", 12, 99999, "column utilization_bp differs"),
        ("reservation_rejected", 12, None, "column utilization_bp differs"),
    ],
)
def test_a_report_column_that_differs_from_its_event_is_a_broken_link(
    rows: list[tuple[Any, ...]], event_type: str, column: int, value: object, problem: str
) -> None:
    victim, seq = _first(rows, event_type)
    tampered = [
        (*r[:column], value, *r[column + 1 :]) if (r[0], r[1]) == victim and r[2] == seq else r
        for r in rows
    ]
    budgets = _replay(tampered)
    link = budgets[victim].broken
    assert link is not None and link.sequence == seq and problem in link.problem
    assert all(b.broken is None for k, b in budgets.items() if k != victim)


def test_rows_without_the_report_columns_replay_clean(rows: list[tuple[Any, ...]]) -> None:
    # Written before migration 014: both columns NULL, the event alone is checked.
    budgets = _replay([(*r[:11], None, None) for r in rows])
    assert all(b.broken is None for b in budgets.values())


@pytest.mark.parametrize("base_hash_kept", [True, False])
def test_a_checkpointed_row_that_comes_after_its_successors_is_still_checked(
    rows: list[tuple[Any, ...]], base_hash_kept: bool
) -> None:
    # A join's rows need not come in sequence order: the checkpointed row may arrive after the
    # rows that follow it, when the state has already moved past the checkpoint.
    key = (rows[0][0], rows[0][1])
    history = [r for r in rows if (r[0], r[1]) == key]
    base = len(history) // 2
    head = _replay(history[:base])[key]
    replay = BudgetReplay(*key)
    replay.start_at_checkpoint(head.state)
    checkpointed = history[base - 1]
    if not base_hash_kept:  # the row changed since it was verified
        body = checkpointed[8].replace('"hash":"', '"hash":"0')
        checkpointed = (*checkpointed[:8], body, *checkpointed[9:])
    for row in [*reversed(history[base:]), checkpointed]:
        replay.feed(row)
    replay.end_of_scan()
    if base_hash_kept:
        assert replay.base_seen and not replay.reread and replay.broken is None
        assert replay.state == _replay(history)[key].state
        assert replay.events == len(history) - base
    else:
        assert replay.reread and not replay.base_seen
