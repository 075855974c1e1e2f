"""The single writer's step for one command: translate it with the budget's digits, decide,
seal the event onto the budget's hash chain, fold it, derive alerts, and encode what is written.

Pure (no I/O): the consumer calls it per command; the tests and benchmarks use it to run the
rules exactly as the consumer does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from budget_ledger.ledger.budget import Alert, BudgetState, LedgerEvent, alerts_for, decide, evolve
from budget_ledger.ledger.frozen import quick_init
from budget_ledger.schemas.codec import alert_to_wire, seal
from budget_ledger.schemas.commands import Command
from budget_ledger.schemas.to_domain import domain_command


@quick_init
@dataclass(frozen=True, slots=True)
class Recorded:
    """What one command leaves: the state after it, its sealed event (and the text the ledger
    stores for it), and its alerts (and their wire dicts)."""

    state: BudgetState
    event: LedgerEvent
    text: str
    alerts: tuple[Alert, ...]
    alert_wires: tuple[dict[str, Any], ...]


def record(
    state: BudgetState, command: Command, now: datetime, currencies: Mapping[str, int]
) -> Recorded:
    """Apply ``command`` to ``state`` as the ledger's single writer does."""
    unsealed = decide(state, domain_command(command, state.digits, currencies), now)
    after_digits = state.digits if state.opened else _opened_digits(unsealed)
    event, text = seal(unsealed, after_digits)
    after = evolve(state, event)
    alerts = alerts_for(state, after, event)
    alert_wires = tuple(alert_to_wire(a, after.digits) for a in alerts) if alerts else ()
    return Recorded(after, event, text, alerts, alert_wires)


def _opened_digits(event: LedgerEvent) -> int:
    # Only budget_opened gives an unopened budget a currency (and so digits) to write with.
    return int(event.data["minor_units"]) if event.type == "budget_opened" else 0
