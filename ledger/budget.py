"""The budget rules, in one place to import from: ``decide`` (command -> exactly one event),
``evolve`` (event -> state), ``alerts_for`` (transition -> alerts) and ``apply`` (all three).

Pure: no I/O, no clock (``now`` is passed in), integers only. Reading order: `ledger/state.py`
(the state and its arithmetic), `ledger/decide.py`, `ledger/evolve.py`, `ledger/alerts.py`;
docs/domain.md has the prose.
"""

from __future__ import annotations

from datetime import datetime

from budget_ledger.ledger.alerts import ALERT_SEVERITY, alerts_for, drift_alert
from budget_ledger.ledger.commands import Command
from budget_ledger.ledger.decide import CLOCK_SKEW, decide
from budget_ledger.ledger.events import GENESIS_HASH, Alert, LedgerEvent
from budget_ledger.ledger.evolve import evolve
from budget_ledger.ledger.state import (
    RESERVATION_EDGES,
    BudgetConfig,
    BudgetState,
    Reservation,
    ReservationStatus,
    initial_state,
)

__all__ = [
    "ALERT_SEVERITY",
    "CLOCK_SKEW",
    "GENESIS_HASH",
    "RESERVATION_EDGES",
    "Alert",
    "BudgetConfig",
    "BudgetState",
    "LedgerEvent",
    "Reservation",
    "ReservationStatus",
    "alerts_for",
    "apply",
    "decide",
    "drift_alert",
    "evolve",
    "initial_state",
]


def apply(
    state: BudgetState, command: Command, now: datetime
) -> tuple[BudgetState, LedgerEvent, tuple[Alert, ...]]:
    """Decide, evolve and derive alerts once, on an unsealed event (no hash): for the pure
    tests and benchmarks; the consumer seals the event between decide and evolve."""
    event = decide(state, command, now)
    after = evolve(state, event)
    return after, event, alerts_for(state, after, event)
