"""What an amount and a configuration may be: exact at the budget's digits, within what the
ledger stores (`MAX_MINOR`), and consistent (soft below hard). Refusals as (reason, detail)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from budget_ledger.ledger.commands import Amount
from budget_ledger.ledger.events import Detail, LedgerEvent, Money
from budget_ledger.ledger.reasons import Reason
from budget_ledger.ledger.state import MAX_MINOR, BudgetConfig, BudgetState

#: Config fields that hold money (minor units).
MONEY_CONFIG_FIELDS: Final = ("hard_cap", "soft_cap", "period_allowance")
# Accepted events whose amount adds money somewhere (the others only move or remove it).
_ADDING_EVENTS: Final = frozenset(
    {"budget_opened", "budget_funded", "budget_adjusted", "funds_reserved"}
)


def above_max(name: str, value: int, digits: int) -> Detail:
    """The refusal detail of a ``name`` that would pass the stored maximum."""
    return (
        f"{name} would be ",
        Money(value, digits),
        ", above the ledger's maximum ",
        Money(MAX_MINOR, digits),
    )


def amount_refusal(name: str, amount: Amount, digits: int) -> tuple[Reason, Detail] | None:
    """Why ``amount`` cannot be taken (too precise, or above what the ledger stores), if so."""
    if amount.minor is None:
        return Reason.INVALID_AMOUNT, (f"{name} {amount.text} is too precise",)
    if not -MAX_MINOR <= amount.minor <= MAX_MINOR:
        return Reason.AMOUNT_OUT_OF_RANGE, (
            f"{name} {amount.text} exceeds the ledger's maximum amount ",
            Money(MAX_MINOR, digits),
        )
    return None


def range_problem(s: BudgetState, ev: LedgerEvent) -> Detail | None:
    """Why accepting ``ev`` would store a value past `MAX_MINOR`, if it would (a balance
    already above it from before this rule may still shrink)."""
    digits = s.digits if s.opened else int(ev.data.get("minor_units", 0))
    if ev.funded > MAX_MINOR and ev.funded > s.funded_in_period:
        return above_max("funded", ev.funded, digits)
    committed = ev.reserved + ev.charged
    if committed > MAX_MINOR and committed > s.committed:
        return above_max("committed", committed, digits)
    if ev.type in _ADDING_EVENTS and ev.amount is not None and abs(ev.amount) > MAX_MINOR:
        return above_max("the amount", abs(ev.amount), digits)
    return None


def config_invalid(cfg: BudgetConfig) -> str | None:
    """Why ``cfg`` is inconsistent, if it is."""
    if cfg.hard_cap is not None and cfg.soft_cap is not None and cfg.soft_cap > cfg.hard_cap:
        return "soft_cap is above hard_cap"
    if cfg.soft_threshold_pct > cfg.hard_threshold_pct:
        return "soft_threshold_pct is above hard_threshold_pct"
    return None


def config_values(fields: Mapping[str, Any], digits: int) -> dict[str, Any] | tuple[Reason, Detail]:
    """``fields`` with money as minor units, or the refusal of the first unusable amount."""
    out = dict(fields)
    for name in MONEY_CONFIG_FIELDS:
        value = out.get(name)
        if isinstance(value, Amount):
            refusal = amount_refusal(name, value, digits)
            if refusal is not None:
                return refusal
            out[name] = value.minor
    return out
