"""Budget state loaded from the projections instead of replaying the ledger (docs/scaling.md).

The balance row (with the snapshot columns of migration 007) and the open reservations of a
budget are written in the same transaction as its ledger rows, so they are its state at every
committed position. `load_states` reads them for all budgets a batch needs in one statement;
`state_from_projection` (pure) turns them into a compacted `BudgetState` (open reservations
only). A row without a usable snapshot falls back to `ledger.store.load_budgets` (full replay,
the one read path for history). Settled reservations are fetched by `lookup_settled`, once per
batch, only for the refs the batch's commands name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from functools import cache
from typing import Any

import immutables
import orjson
import psycopg

from budget_ledger.ledger.budget import BudgetConfig, BudgetState, initial_state
from budget_ledger.ledger.history import ReplayFailed
from budget_ledger.ledger.sql import load_queries
from budget_ledger.ledger.state import (
    Monitor,
    Reservation,
    ReservationStatus,
    compact,
    with_reservations,
)
from budget_ledger.ledger.store import load_budgets

BudgetKey = tuple[str, str]
# (tenant_id, budget_id, ref_id) of a reservation.
RefKey = tuple[str, str, str]

# `balance_row` / `copy_staging_balances` column positions.
_OPENED, _CURRENCY, _FUNDED, _RESERVED, _CHARGED, _AVAILABLE, _LIMIT = 3, 2, 4, 5, 6, 7, 8
_SEQUENCE, _LAST_HASH, _PERIOD_START, _CONFIG = 10, 11, 12, 13
_DIGITS, _ABOVE_SOFT, _ABOVE_HARD, _CAP_ALERTED, _SNAPSHOT_SEQ = 15, 16, 17, 18, 19
_MONITORS = 20  # migration 016; a row shorter than this (an older layout) has none
_STATUSES = {s.value: s for s in ReservationStatus}


@cache
def _queries() -> dict[str, str]:
    return load_queries("budget_ledger.projections")


def _time(text: str | None) -> datetime | None:
    # The RFC 3339 text `projections.rows` writes; the codec reads event times the same way.
    return None if text is None else datetime.fromisoformat(text)


def reservation_from_row(row: Sequence[Any]) -> Reservation:
    """A `Reservation` from a `reservation_row` without its first two columns (tenant, budget):
    ref_id, status, amount, charged, expires_at (RFC 3339 text), command_id, created/updated seq."""
    ref, status, amount, charged, expires, command_id, created, updated = row
    return Reservation(
        ref, amount, _STATUSES[status], charged, _time(expires), command_id, created, updated
    )


def monitors_from_json(text: str | bytes | None) -> immutables.Map[str, Monitor]:
    """The monitors of a `projections.rows.monitors_json` column (empty for NULL)."""
    if text is None:
        return _NO_MONITORS
    return immutables.Map(
        (mid, Monitor(m["metric"], m["operator"], m["threshold"], m["armed"]))
        for mid, m in orjson.loads(text).items()
    )


_NO_MONITORS: immutables.Map[str, Monitor] = immutables.Map()


def state_from_projection(
    balance: Sequence[Any], open_reservations: Iterable[Sequence[Any]]
) -> BudgetState | None:
    """The compacted state of a budget from its balance row (`balance_row` layout) and its open
    reservation rows (see `reservation_from_row`); None when the row holds no usable snapshot
    (written before migration 007, or by a consumer that did not write the snapshot columns)."""
    sequence = balance[_SEQUENCE]
    if balance[_SNAPSHOT_SEQ] is None or balance[_SNAPSHOT_SEQ] != sequence:
        return None
    config = balance[_CONFIG]
    reservations: dict[str, Reservation] = {}
    expiring: dict[str, datetime] = {}
    statuses, parse = _STATUSES, datetime.fromisoformat
    # Inlined `reservation_from_row`: this loop is the load's cost (one pass per open one).
    for ref, status, amount, charged, expires, command_id, created, updated in open_reservations:
        when = None if expires is None else parse(expires)
        reservations[ref] = Reservation(
            ref, amount, statuses[status], charged, when, command_id, created, updated
        )
        if when is not None and status == "reserved":
            expiring[ref] = when
    state = BudgetState(
        tenant_id=balance[0],
        budget_id=balance[1],
        opened=balance[_OPENED],
        currency=balance[_CURRENCY],
        config=None if config is None else BudgetConfig(**orjson.loads(config)),
        funded_in_period=balance[_FUNDED],
        reserved_total=balance[_RESERVED],
        charged_in_period=balance[_CHARGED],
        sequence=sequence,
        last_hash=balance[_LAST_HASH],
        period_start=_time(balance[_PERIOD_START]),
        reservations=immutables.Map(reservations),
        cap_reached_alerted=balance[_CAP_ALERTED],
        digits=balance[_DIGITS],
        expiring=immutables.Map(expiring),
        above_soft=balance[_ABOVE_SOFT],
        above_hard=balance[_ABOVE_HARD],
        monitors=monitors_from_json(balance[_MONITORS] if len(balance) > _MONITORS else None),
    )
    if state.available != balance[_AVAILABLE] or state.limit != balance[_LIMIT]:
        return None  # the row contradicts itself: do not decide on it (replay instead)
    return state


def with_settled(state: BudgetState, settled: Iterable[Reservation]) -> BudgetState:
    """``state`` with settled reservation records merged back in (they hold no money and are
    not expiring, so only the reservations map changes); `compact` removes them again."""
    held = state.reservations
    merged = held.mutate()
    for res in settled:
        if res.ref_id not in held:  # an open one in memory is newer than any record
            merged[res.ref_id] = res
    if len(merged) == len(held):
        return state
    return with_reservations(state, merged.finish())


def load_states(
    conn: psycopg.Connection, keys: list[BudgetKey]
) -> dict[BudgetKey, BudgetState | ReplayFailed]:
    """The compacted state of each budget: from its projection rows (one statement for all);
    new when it has no balance row; replayed from the ledger (`ledger.store.load_budgets`, a
    second statement for those only) when its row has no usable snapshot."""
    out: dict[BudgetKey, BudgetState | ReplayFailed] = {}
    if not keys:
        return out
    rows = conn.execute(
        _queries()["load_budget_snapshots"],
        {"tenants": [k[0] for k in keys], "budgets": [k[1] for k in keys]},
    ).fetchall()
    replay: list[BudgetKey] = []
    for row in rows:
        key = (row[0], row[1])
        opened = orjson.loads(row[-1]) if row[-1] is not None else ()
        state = state_from_projection(row[:-1], opened)
        if state is None:
            replay.append(key)
        else:
            out[key] = state
    if replay:
        for key, found in load_budgets(conn, replay).items():
            out[key] = found if isinstance(found, ReplayFailed) else compact(found)
    for key in keys:
        out.setdefault(key, initial_state(*key))
    return out


def lookup_settled(conn: psycopg.Connection, keys: list[RefKey]) -> Mapping[RefKey, Reservation]:
    """The settled reservations among ``keys`` (by primary key, one statement for all)."""
    if not keys:
        return {}
    rows = conn.execute(
        _queries()["select_settled_reservations"], {"keys": orjson.dumps(keys).decode()}
    ).fetchall()
    return {(r[0], r[1], r[2]): reservation_from_row(r[2:]) for r in rows}
