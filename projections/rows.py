"""Projection rows derived from budget state: what the balance and reservation tables hold."""

from __future__ import annotations

import orjson

from ledger.budget import BudgetConfig, BudgetState, Reservation

BalanceRow = tuple[object, ...]
ReservationRow = tuple[object, ...]


_CONFIG_CACHE: dict[int, tuple[BudgetConfig, str]] = {}


def _config_json(config: BudgetConfig) -> str:
    hit = _CONFIG_CACHE.get(id(config))
    if hit is not None and hit[0] is config:
        return hit[1]
    text = orjson.dumps(config).decode()
    if len(_CONFIG_CACHE) >= 100_000:
        _CONFIG_CACHE.clear()
    _CONFIG_CACHE[id(config)] = (config, text)
    return text


def balance_row(state: BudgetState, updated_at: str) -> BalanceRow:
    """The `budget_balances` row of a budget, in `copy_staging_balances` column order."""
    # orjson writes a dataclass exactly as its asdict() (flat fields, in order), without the
    # deep copy; the config object is shared by every state of a budget, so cache by identity.
    config = _config_json(state.config) if state.config is not None else None
    return (
        state.tenant_id,
        state.budget_id,
        state.currency,
        state.opened,
        state.funded,
        state.reserved,
        state.charged,
        state.available,
        state.limit,
        state.utilization_pct,
        state.sequence,
        state.last_hash,
        state.period_start,
        config,
        updated_at,
    )


def reservation_row(state: BudgetState, reservation: Reservation) -> ReservationRow:
    """The `reservations` row of one reservation, in `copy_staging_reservations` column order."""
    return (
        state.tenant_id,
        state.budget_id,
        reservation.ref_id,
        reservation.status,
        reservation.amount,
        reservation.charged,
        reservation.expires_at,
        reservation.command_id,
        reservation.created_seq,
        reservation.updated_seq,
    )
