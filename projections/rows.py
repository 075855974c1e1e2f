"""Projection rows derived from budget state: what the balance and reservation tables hold."""

from __future__ import annotations

from datetime import datetime

import immutables
import orjson

from budget_ledger.ledger.budget import BudgetConfig, BudgetState, Reservation
from budget_ledger.ledger.state import Monitor
from budget_ledger.schemas.codec import pct_text
from budget_ledger.schemas.events import rfc3339_utc

BalanceRow = tuple[object, ...]
ReservationRow = tuple[object, ...]


# Configs rendered recently (one budget's states share one config object). Small on purpose: it
# holds each config alive, and at 100,000 entries it held ~36 MB (tracemalloc), mostly for
# budgets the consumer had evicted (docs/scaling.md, "Consumer memory"); a batch touches at
# most a few thousand.
_CONFIG_CACHE_SIZE = 8_192
_CONFIG_CACHE: dict[int, tuple[BudgetConfig, str]] = {}


def _config_json(config: BudgetConfig) -> str:
    hit = _CONFIG_CACHE.get(id(config))
    if hit is not None and hit[0] is config:
        return hit[1]
    text = orjson.dumps(config).decode()
    if len(_CONFIG_CACHE) >= _CONFIG_CACHE_SIZE:
        _CONFIG_CACHE.clear()
    _CONFIG_CACHE[id(config)] = (config, text)
    return text


def monitors_json(monitors: immutables.Map[str, Monitor]) -> str | None:
    """The ``monitors`` column (migration 016): monitor_id -> {metric, operator, threshold,
    armed}, keys sorted; None (SQL NULL) for a budget without monitors."""
    if not monitors:
        return None
    doc = {
        mid: {"metric": m.metric, "operator": m.operator, "threshold": m.threshold,
              "armed": m.armed}
        for mid, m in sorted(monitors.items())
    }  # fmt: skip
    return orjson.dumps(doc).decode()


def balance_row(state: BudgetState, updated_at: datetime | None) -> BalanceRow:
    """The `budget_balances` row of a budget, in `copy_staging_balances` column order (times
    as the RFC 3339 text the reconciler reads back; ``updated_at`` None only for comparing).

    Columns 15-19 (migration 007) are the rest of the state, so that
    `projections.state_loading` can load it without a replay; ``snapshot_seq`` says at which
    sequence they were written (always this row's own). The last is the monitors (016)."""
    # orjson writes a dataclass exactly as its asdict() (flat fields, in order), without the
    # deep copy; the config object is shared by every state of a budget, so cache by identity.
    config = _config_json(state.config) if state.config is not None else None
    return (
        state.tenant_id,
        state.budget_id,
        state.currency,
        state.opened,
        state.funded_in_period,
        state.reserved_total,
        state.charged_in_period,
        state.available,
        state.limit,
        pct_text(state.utilization_bp),
        state.sequence,
        state.last_hash,
        None if state.period_start is None else rfc3339_utc(state.period_start),
        config,
        updated_at,
        state.digits,
        state.above_soft,
        state.above_hard,
        state.cap_reached_alerted,
        state.sequence,
        monitors_json(state.monitors) if state.monitors else None,
    )


def reservation_row(state: BudgetState, reservation: Reservation) -> ReservationRow:
    """The `reservations` row of one reservation, in `copy_staging_reservations` column order."""
    return (
        state.tenant_id,
        state.budget_id,
        reservation.ref_id,
        reservation.status.value,
        reservation.reserved_amount,
        reservation.charged_amount,
        None if reservation.expires_at is None else rfc3339_utc(reservation.expires_at),
        reservation.command_id,
        reservation.created_seq,
        reservation.updated_seq,
    )
