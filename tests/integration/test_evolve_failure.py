"""An evolver that raises during live consumption dead-letters the command; nothing stale is kept.

`evolve` no longer swallows exceptions: the consumer's guard around `record` dead-letters the
command (`internal_error`), the budget keeps the state from before it, and its later commands
see the right balances with gap-free sequences. A budget whose stored history fails to replay
when first loaded by replay (a balance row without a usable state snapshot) has its commands
dead-lettered, while other budgets carry on.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

import budget_ledger.ledger.evolve as evolve_mod
from budget_ledger.ledger.budget import BudgetState
from budget_ledger.ledger.settings import Settings
from budget_ledger.projections.rebuild import RebuildFailed, rebuild
from tests.integration.support import (
    dead_letters,
    fund,
    ledger_count,
    open_budget,
    produce,
    running_consumer,
    topics_ready,
    wait_for,
)

pytestmark = pytest.mark.integration

MARKER = 777  # minor units of the fund whose evolver "has a bug"


def _rows(settings: Settings, budget_id: str) -> list[tuple[int, str, int]]:
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT sequence, command_id, funded FROM ledger WHERE budget_id = %s"
            " ORDER BY sequence",
            (budget_id,),
        ).fetchall()
    return [(int(s), str(c), int(f)) for s, c, f in rows]


def _balance(settings: Settings, budget_id: str) -> tuple[int, int]:
    """(funded, sequence) of a budget's projection row."""
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT funded, sequence FROM budget_balances WHERE budget_id = %s", (budget_id,)
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def _buggy_funded(monkeypatch: pytest.MonkeyPatch, amount: int) -> None:
    real = evolve_mod._EVOLVERS["budget_funded"]

    def evolver(s: BudgetState, e: Any) -> BudgetState:
        if e.amount == amount:
            raise RuntimeError("a bug in the budget_funded evolver")
        return real(s, e)

    monkeypatch.setitem(evolve_mod._EVOLVERS, "budget_funded", evolver)


def _settled(settings: Settings, expected: int) -> None:
    wait_for(
        lambda: ledger_count(settings.database_url) + len(dead_letters(settings)) == expected,
        timeout=90,
        what=f"{expected} commands decided",
    )


def test_an_evolver_exception_dead_letters_the_command_and_commits_nothing_stale(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    _buggy_funded(monkeypatch, MARKER)
    topics_ready(settings)
    commands = [
        open_budget("acme", "b1", "open-1"),
        fund("acme", "b1", "fund-1", "10.00"),
        fund("acme", "b1", "fund-bug", "7.77"),
        fund("acme", "b1", "fund-2", "1.00"),
    ]
    with running_consumer(settings, relay=False):
        produce(settings, commands)
        _settled(settings, len(commands))
    letters = list(dead_letters(settings).values())
    assert len(letters) == 1, letters
    assert letters[0]["command_id"] == "fund-bug"
    assert letters[0]["error_class"] == "internal_error"
    assert "a bug in the budget_funded evolver" in letters[0]["reason"]
    # The later command saw the state from before the failed one: no gap, no lost or doubled 7.77.
    assert _rows(settings, "b1") == [(1, "open-1", 0), (2, "fund-1", 1000), (3, "fund-2", 1100)]
    assert _balance(settings, "b1") == (1100, 3)


def test_a_history_that_does_not_replay_dead_letters_that_budget_only(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    topics_ready(settings)
    first = [
        open_budget("acme", "b1", "open-1"),
        fund("acme", "b1", "fund-1", "7.77"),
        open_budget("acme", "b2", "open-2"),
    ]
    with running_consumer(settings, relay=False):
        produce(settings, first)
        _settled(settings, len(first))
    # A new consumer replays b1's history from the ledger (its balance row has no usable state
    # snapshot, as one written before migration 007; with one, b1 would load from the
    # projections and only reconcile/rebuild would replay it): its stored fund now "fails to
    # evolve".
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute("UPDATE budget_balances SET snapshot_seq = NULL WHERE budget_id = 'b1'")
    _buggy_funded(monkeypatch, MARKER)
    later = [fund("acme", "b1", "fund-2", "1.00"), fund("acme", "b2", "fund-3", "2.00")]
    with running_consumer(settings, relay=False):
        produce(settings, later)
        _settled(settings, len(first) + len(later))
    letters = list(dead_letters(settings).values())
    assert [h["command_id"] for h in letters] == ["fund-2"], letters
    assert letters[0]["error_class"] == "internal_error"
    assert "acme:b1 cannot be loaded" in letters[0]["reason"]
    assert "event 2" in letters[0]["reason"]
    assert _rows(settings, "b1") == [(1, "open-1", 0), (2, "fund-1", 777)]
    assert _rows(settings, "b2") == [(1, "open-2", 0), (2, "fund-3", 200)]
    assert _balance(settings, "b1") == (777, 2)  # untouched, not rewritten from a stale state
    # rebuild stops with a clear error and writes nothing.
    with psycopg.connect(settings.database_url) as conn:
        with pytest.raises(RebuildFailed, match="acme:b1: event 2 does not replay"):
            rebuild(conn)
        # It stopped in the middle of its streamed read: the connection is usable again.
        row = conn.execute("SELECT funded FROM budget_balances WHERE budget_id = 'b1'").fetchone()
        assert row == (777,)
    assert _balance(settings, "b1") == (777, 2)
    assert _balance(settings, "b2") == (200, 2)
