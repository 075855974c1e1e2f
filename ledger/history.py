"""The one read path for history: stored events, decoded by the codec with the digits their
budget was opened with, folded through `evolve`.

`fold` is the single step every reader uses (loading budgets for the consumer, rebuild, the
reconciler's verifying replay); `replay` is the loop over a stream of stored events.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from budget_ledger.ledger.budget import BudgetState, evolve, initial_state
from budget_ledger.ledger.frozen import picklable
from budget_ledger.schemas.codec import event_from_wire, opened_digits

#: A stored event as the readers fetch it: (tenant_id, budget_id, event JSON text).
StoredEvent = tuple[str, str, str]


@dataclass(frozen=True, slots=True)
class ReplayFailed:
    """A budget whose stored history could not be folded back into a state (an evolver bug or
    a corrupt event): nothing may be decided or rebuilt from it until the cause is fixed."""

    tenant_id: str
    budget_id: str
    sequence: int
    reason: str


picklable(ReplayFailed)


def replay_digits(state: BudgetState, wire: Mapping[str, Any]) -> int:
    """Minor digits to decode `wire`, the next stored event of `state`'s budget, with.

    The budget's own digits (recorded by its `budget_opened`), never the currency table: a
    change of `LEDGER_CURRENCIES` must not rescale history.
    """
    if state.opened:
        return state.digits
    if wire.get("type") == "budget_opened":
        return opened_digits(wire)
    return 0  # events of a budget not opened yet carry no currency and only zero balances


def fold(state: BudgetState, wire: Mapping[str, Any]) -> BudgetState:
    """``state`` after the stored event ``wire`` (raises if it does not decode or fold)."""
    return evolve(state, event_from_wire(wire, replay_digits(state, wire)))


def replay(rows: Iterable[StoredEvent]) -> Iterator[BudgetState | ReplayFailed]:
    """The final state of each budget in ``rows`` (ordered by budget, then sequence), or where
    its history first failed to replay; one budget's failure does not stop the others."""
    state: BudgetState | None = None
    failed = False
    for tenant_id, budget_id, text in rows:
        if state is None or state.budget_id != budget_id or state.tenant_id != tenant_id:
            if state is not None and not failed:
                yield state
            state, failed = initial_state(tenant_id, budget_id), False
        if failed:
            continue  # the rest of a failed budget's history cannot be folded onto anything
        try:
            state = fold(state, orjson.loads(text))
        except Exception as exc:  # an evolver bug or a corrupt event: this budget only
            failed = True
            seq = state.sequence + 1
            reason = f"replaying event {seq} raised {type(exc).__name__}: {exc}"
            yield ReplayFailed(tenant_id, budget_id, seq, reason)
    if state is not None and not failed:
        yield state
