"""A budget's minor digits come from its own `budget_opened`, never from today's currency table.

Budgets are written under `LEDGER_CURRENCIES` = USD 2; then the table says USD 3 (or drops USD).
The consumer (which replays history when it first meets a budget), `load_budgets`, `rebuild` and
`reconcile` still read and write USD amounts with the 2 digits the budget recorded.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from budget_ledger.ledger import store
from budget_ledger.ledger.budget import BudgetState
from budget_ledger.ledger.settings import Settings
from budget_ledger.projections.rebuild import rebuild
from budget_ledger.projections.reconcile import ReconcileOptions, iter_lines, reconcile
from tests.integration.support import (
    dead_letters,
    fund,
    ledger_count,
    open_budget,
    produce,
    release,
    reserve,
    running_consumer,
    topics_ready,
    wait_for,
)

pytestmark = pytest.mark.integration


def _settled(settings: Settings, expected: int) -> None:
    wait_for(
        lambda: ledger_count(settings.database_url) + len(dead_letters(settings)) == expected,
        timeout=90,
        what=f"{expected} commands decided",
    )


def _events(settings: Settings, budget_id: str) -> list[tuple[str, int, dict[str, Any]]]:
    """(command_id, funded column, event JSON) of a budget's ledger rows, in sequence order."""
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT command_id, funded, event FROM ledger WHERE budget_id = %s ORDER BY sequence",
            (budget_id,),
        ).fetchall()
    return [(str(c), int(f), dict(e)) for c, f, e in rows]


def _balance(settings: Settings, budget_id: str) -> tuple[int, int, int]:
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT funded, reserved, sequence FROM budget_balances WHERE budget_id = %s",
            (budget_id,),
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


def _assert_reconciles(settings: Settings) -> None:
    """The reconciler replays with the recorded digits too: no drift, no broken link."""
    report = reconcile(
        settings.database_url,
        ReconcileOptions(
            progress=False, role=settings.database_role, unpublished_grace_seconds=1e9
        ),
    )
    assert report.clean, list(iter_lines(report))


def _write_history(settings: Settings) -> list[dict[str, Any]]:
    two = settings.model_copy(update={"currencies": {"USD": 2, "ZWG": 2}})
    topics_ready(two)
    first = [
        open_budget("acme", "b1", "open-1"),
        fund("acme", "b1", "fund-1", "10.50"),
        reserve("acme", "b1", "res-1", "2.25", "r1"),
    ]
    with running_consumer(two, relay=False):
        produce(two, first)
        _settled(two, len(first))
    return first


def test_a_wider_table_does_not_rescale_history(settings: Settings) -> None:
    first = _write_history(settings)
    three = settings.model_copy(update={"currencies": {"USD": 3, "ZWG": 2}})

    with psycopg.connect(three.database_url, autocommit=True) as conn:
        loaded = store.load_budgets(conn, [("acme", "b1")])[("acme", "b1")]
    assert isinstance(loaded, BudgetState)
    assert (loaded.digits, loaded.funded_in_period, loaded.reserved_total) == (2, 1050, 225)

    later = [
        fund("acme", "b1", "fund-2", "1.25"),
        fund("acme", "b1", "fund-3", "0.125"),  # fine for the table, too precise for the budget
    ]
    with running_consumer(three, relay=False):  # a fresh consumer: replays b1 from the ledger
        produce(three, later)
        _settled(three, len(first) + len(later))
    assert dead_letters(three) == {}
    events = _events(three, "b1")
    assert [(c, f) for c, f, _ in events] == [
        ("open-1", 0),
        ("fund-1", 1050),
        ("res-1", 1050),
        ("fund-2", 1175),
        ("fund-3", 1175),
    ]
    fund_2, fund_3 = events[3][2], events[4][2]
    assert (fund_2["amount"], fund_2["funded"], fund_2["reserved"]) == ("1.25", "11.75", "2.25")
    assert (fund_3["type"], fund_3["reason"]) == ("command_rejected", "invalid_amount")
    assert _balance(three, "b1") == (1175, 225, 5)

    with psycopg.connect(three.database_url) as conn:
        assert rebuild(conn) == (1, 1)
    assert _balance(three, "b1") == (1175, 225, 5)
    _assert_reconciles(three)


def test_a_budget_whose_currency_left_the_table_is_refused_clearly(settings: Settings) -> None:
    first = _write_history(settings)
    no_usd = settings.model_copy(update={"currencies": {"ZWG": 2}})
    later = [release("acme", "b1", "rel-1", "r1")]
    with running_consumer(no_usd, relay=False):
        produce(no_usd, later)
        _settled(no_usd, len(first) + len(later))
    letters = list(dead_letters(no_usd).values())
    assert [(h["command_id"], h["error_class"]) for h in letters] == [("rel-1", "unknown_currency")]
    assert "USD, which is not in the currency table" in letters[0]["reason"]
    assert "opened with 2 digits" in letters[0]["reason"]
    # Reading history needs no table: rebuild still gives the recorded amounts.
    with psycopg.connect(no_usd.database_url) as conn:
        assert rebuild(conn) == (1, 1)
    assert _balance(no_usd, "b1") == (1050, 225, 3)
    _assert_reconciles(no_usd)
