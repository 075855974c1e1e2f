"""Projection rows derived from budget state: what the balance and reservation tables hold."""

from __future__ import annotations

import dataclasses

import orjson

from ledger.budget import BudgetState, Reservation

BalanceRow = tuple[object, ...]
ReservationRow = tuple[object, ...]


def balance_row(state: BudgetState, updated_at: str) -> BalanceRow:
    """The `budget_balances` row of a budget, in `copy_staging_balances` column order."""
    config = (
        orjson.dumps(dataclasses.asdict(state.config)).decode() if state.config is not None else None
    )
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
