"""Drift: the replayed state of a budget compared with its projection rows, field by field.

The expected rows are made by the consumer's own `projections.rows` functions, so a projection
is compared with exactly what the consumer would have written for the replayed state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from budget_ledger.ledger.frozen import picklable
from budget_ledger.projections.replay import BudgetReplay
from budget_ledger.projections.rows import balance_row, reservation_row

BALANCE_FIELDS = (
    "tenant_id",
    "budget_id",
    "currency",
    "opened",
    "funded",
    "reserved",
    "charged",
    "available",
    "budget_limit",
    "utilization_pct",
    "sequence",
    "last_hash",
    "period_start",
    "config",
    "digits",
    "above_soft",
    "above_hard",
    "cap_reached_alerted",
    "snapshot_seq",
    "monitors",
)
# The state snapshot columns (migration 007): NULL in a row written before it, which is no
# drift (the consumer loads that budget by replay); compared once the row has a snapshot.
SNAPSHOT_FIELDS = frozenset(
    {"digits", "above_soft", "above_hard", "cap_reached_alerted", "snapshot_seq"}
)
_UPDATED_AT = 14  # balance_row's column that is not compared
_SNAPSHOT_SEQ = BALANCE_FIELDS.index("snapshot_seq")
RESERVATION_FIELDS = (
    "tenant_id",
    "budget_id",
    "ref_id",
    "status",
    "amount",
    "charged",
    "expires_at",
    "command_id",
    "created_seq",
    "updated_seq",
)
_LOADS = orjson.loads


@dataclass(frozen=True, slots=True)
class Drift:
    """A projection field that differs from the replay; `difference` = actual - expected."""

    tenant_id: str
    budget_id: str
    table: str  # "budget_balances" | "reservations" | "ledger"
    key: str  # the budget, or the reservation's ref_id, or the event's sequence
    field: str
    expected: Any
    actual: Any
    difference: int | None = None


picklable(Drift)  # the workers send their drifts to the parent pickled


def compare(budget: BudgetReplay) -> list[Drift]:
    """Drift between a budget's replayed state and the projection rows read for it."""
    s = budget.state
    t, b = s.tenant_id, s.budget_id
    drifts: list[Drift] = []
    if budget.events == 0 and s.sequence == 0:  # no ledger row (not: none since a checkpoint)
        return [Drift(t, b, "budget_balances", b, "row", "absent", "present")]
    row = balance_row(s, None)
    expected = row[:_UPDATED_AT] + row[_UPDATED_AT + 1 :]  # updated_at is not compared
    if budget.balance is None:
        drifts.append(Drift(t, b, "budget_balances", b, "row", "present", "absent"))
    elif _same_balance(expected, budget.balance):
        pass  # the common case: one tuple comparison instead of twenty field by field
    else:
        no_snapshot = budget.balance[_SNAPSHOT_SEQ] is None  # written before migration 007
        for name, exp, act in zip(BALANCE_FIELDS, expected, budget.balance, strict=True):
            if name == "config" or name == "monitors":
                exp = None if exp is None else _LOADS(exp)  # type: ignore[arg-type]
            elif no_snapshot and name in SNAPSHOT_FIELDS:
                continue
            if exp != act:
                drifts.append(Drift(t, b, "budget_balances", b, name, exp, act, _diff(exp, act)))
    seen = set()
    # Replayed from a checkpoint: reservations settled at or before it were verified by the run
    # that wrote it, and their projection rows were not read (docs/reconciler.md).
    after = budget.settled_after
    for ref, res in s.reservations.items():
        if after and res.updated_seq <= after and res.status != "reserved":
            continue
        seen.add(ref)
        exp_row = reservation_row(s, res)
        act_row = budget.reservations.get(ref)
        if act_row is None:
            drifts.append(Drift(t, b, "reservations", ref, "row", "present", "absent"))
            continue
        if tuple(act_row) == exp_row[2:]:
            continue  # the common case, in one C-level comparison
        for name, exp, act in zip(RESERVATION_FIELDS[2:], exp_row[2:], act_row, strict=True):
            if exp != act:
                drifts.append(Drift(t, b, "reservations", ref, name, exp, act, _diff(exp, act)))
    for ref in budget.reservations.keys() - seen:
        drifts.append(Drift(t, b, "reservations", ref, "row", "absent", "present"))
    return drifts


_CONFIG = BALANCE_FIELDS.index("config")
_MONITORS = BALANCE_FIELDS.index("monitors")
_PARSED: dict[str, Any] = {}


def _parsed(text: Any) -> Any:
    """A config or monitors JSON text as the projection row reads back (cached: budgets share
    a few configs)."""
    if text is None:
        return None
    hit = _PARSED.get(text)
    if hit is None:
        if len(_PARSED) >= 10_000:
            _PARSED.clear()
        hit = _PARSED[text] = _LOADS(text)
    return hit


def _same_balance(expected: tuple[Any, ...], actual: tuple[Any, ...]) -> bool:
    """Whether the balance row equals the expected one in every compared field (a row without
    the snapshot columns takes the field-by-field path, which skips them)."""
    if len(actual) != len(expected) or actual[_SNAPSHOT_SEQ] is None:
        return False
    return (
        expected[:_CONFIG] == actual[:_CONFIG]
        and expected[_CONFIG + 1 : _MONITORS] == actual[_CONFIG + 1 : _MONITORS]
        and _parsed(expected[_CONFIG]) == actual[_CONFIG]
        and _parsed(expected[_MONITORS]) == actual[_MONITORS]
    )


def _diff(expected: Any, actual: Any) -> int | None:
    if isinstance(expected, int) and isinstance(actual, int) and not isinstance(expected, bool):
        return actual - expected
    return None


def balance_from_row(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """A `reconcile_balances` row in BALANCE_FIELDS order."""
    cur, opened, limit, pct, seq, last_hash, period_start, config, *snapshot = _LOADS(row[6])
    return (
        row[0],
        row[1],
        cur,
        opened,
        row[2],
        row[3],
        row[4],
        row[5],
        limit,
        pct,
        seq,
        last_hash,
        period_start,
        config,
        *snapshot,
    )
