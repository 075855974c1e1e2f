"""The edge between wire commands and the rules: a parsed command becomes a domain command,
its amounts scaled to minor units with the budget's own digits (never re-read by the rules)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from budget_ledger.ledger import commands as dc
from budget_ledger.schemas import commands as wc
from budget_ledger.schemas.money import POW10


def scaled(text: str, digits: int) -> dc.Amount:
    """``text`` (already pattern-checked by the schema) in minor units at ``digits``; ``minor``
    is None when it has more decimals than that."""
    whole, _, frac = text.partition(".")
    if len(frac) == digits and digits and whole[0] != "-":
        return dc.Amount(int(whole + frac), text)  # the common spelling, "12.50" in cents
    if len(frac) > digits:
        return dc.Amount(None, text)
    negative = whole.startswith("-")
    minor = int(whole.lstrip("-")) * POW10[digits] + (int(frac.ljust(digits, "0")) if digits else 0)
    return dc.Amount(-minor if negative else minor, text)


def _optional(text: str | None, digits: int) -> dc.Amount | None:
    return None if text is None else scaled(text, digits)


def _open(c: wc.OpenBudget, digits: int, currencies: Mapping[str, int]) -> dc.OpenBudget:
    # The budget does not exist yet: its digits are the currency table's, recorded from now on.
    own = currencies.get(c.currency)
    scale = 0 if own is None else own
    return dc.OpenBudget(
        c.command_id, c.tenant_id, c.budget_id, c.issued_at, c.metadata,
        currency=c.currency,
        digits=own,
        period=c.period,
        hard_cap=_optional(c.hard_cap, scale),
        soft_cap=_optional(c.soft_cap, scale),
        soft_threshold_pct=c.soft_threshold_pct,
        hard_threshold_pct=c.hard_threshold_pct,
        period_allowance=_optional(c.period_allowance, scale),
        rollover=c.rollover,
        timezone=c.timezone,
        reservation_ttl_seconds=c.reservation_ttl_seconds,
    )  # fmt: skip


def _configure(
    c: wc.ConfigureBudget, digits: int, currencies: Mapping[str, int]
) -> dc.ConfigureBudget:
    changes: dict[str, Any] = c.changes()
    for name in ("hard_cap", "soft_cap", "period_allowance"):
        if changes.get(name) is not None:
            changes[name] = scaled(changes[name], digits)
    return dc.ConfigureBudget(
        c.command_id, c.tenant_id, c.budget_id, c.issued_at, c.metadata, changes
    )


def _fund(c: wc.Fund, digits: int, currencies: Mapping[str, int]) -> dc.Fund:
    return dc.Fund(
        c.command_id, c.tenant_id, c.budget_id, c.issued_at, c.metadata,
        scaled(c.amount, digits), c.currency,
    )  # fmt: skip


def _reserve(c: wc.Reserve, digits: int, currencies: Mapping[str, int]) -> dc.Reserve:
    return dc.Reserve(
        c.command_id, c.tenant_id, c.budget_id, c.issued_at, c.metadata,
        c.ref_id, scaled(c.amount, digits), c.currency, c.expires_at,
    )  # fmt: skip


def _charge(c: wc.Charge, digits: int, currencies: Mapping[str, int]) -> dc.Charge:
    return dc.Charge(
        c.command_id, c.tenant_id, c.budget_id, c.issued_at, c.metadata,
        c.ref_id, _optional(c.amount, digits),
    )  # fmt: skip


def _release(c: wc.Release, digits: int, currencies: Mapping[str, int]) -> dc.Release:
    return dc.Release(c.command_id, c.tenant_id, c.budget_id, c.issued_at, c.metadata, c.ref_id)


def _expire(
    c: wc.ExpireReservations, digits: int, currencies: Mapping[str, int]
) -> dc.ExpireReservations:
    return dc.ExpireReservations(
        c.command_id, c.tenant_id, c.budget_id, c.issued_at, c.metadata, c.as_of
    )


def _close(c: wc.ClosePeriod, digits: int, currencies: Mapping[str, int]) -> dc.ClosePeriod:
    return dc.ClosePeriod(
        c.command_id, c.tenant_id, c.budget_id, c.issued_at, c.metadata, c.period_end
    )


def _adjust(c: wc.Adjust, digits: int, currencies: Mapping[str, int]) -> dc.Adjust:
    return dc.Adjust(
        c.command_id, c.tenant_id, c.budget_id, c.issued_at, c.metadata,
        scaled(c.amount, digits), c.reason, c.operator,
    )  # fmt: skip


def _set_monitor(c: wc.SetMonitor, digits: int, currencies: Mapping[str, int]) -> dc.SetMonitor:
    # A percent threshold is basis points (2 digits), whatever the currency.
    scale = 2 if c.metric == "utilization_pct" else digits
    return dc.SetMonitor(
        c.command_id, c.tenant_id, c.budget_id, c.issued_at, c.metadata,
        c.monitor_id, c.metric, c.operator, scaled(c.threshold, scale),
    )  # fmt: skip


def _remove_monitor(
    c: wc.RemoveMonitor, digits: int, currencies: Mapping[str, int]
) -> dc.RemoveMonitor:
    return dc.RemoveMonitor(
        c.command_id, c.tenant_id, c.budget_id, c.issued_at, c.metadata, c.monitor_id
    )


_TRANSLATORS: Final[dict[str, Callable[[Any, int, Mapping[str, int]], dc.Command]]] = {
    "open_budget": _open,
    "configure_budget": _configure,
    "fund": _fund,
    "reserve": _reserve,
    "charge": _charge,
    "release": _release,
    "expire_reservations": _expire,
    "close_period": _close,
    "adjust": _adjust,
    "set_monitor": _set_monitor,
    "remove_monitor": _remove_monitor,
}


def domain_command(command: wc.Command, digits: int, currencies: Mapping[str, int]) -> dc.Command:
    """``command`` for the rules: amounts in minor units at ``digits`` (the budget's own, from
    its ``budget_opened``); an ``open_budget`` takes its digits from ``currencies``."""
    return _TRANSLATORS[command.type](command, digits, currencies)
