"""`rebuild`: recompute the projections from the ledger and swap them in atomically.

One transaction as the owner role: LOCK the projection tables IN EXCLUSIVE MODE (readers keep
reading the old rows until commit; the consumer's upsert waits and applies right after, so
nothing is lost — its ledger rows are not visible to this snapshot, and it upserts the state
after them), replay the ledger through `evolve`, DELETE and COPY the projections, commit.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import psycopg
import structlog

from ledger.budget import BudgetState, evolve, initial_state
from ledger.db import copy_rows
from ledger.store import replay_digits
from projections.decode import decode_event
from projections.rows import balance_row, reservation_row
from projections.store import queries
from schemas.events import rfc3339_utc

log = structlog.get_logger("rebuild")


class RebuildFailed(Exception):
    """A budget's history could not be replayed; nothing was rebuilt (the projections stand)."""


def rebuild(
    conn: psycopg.Connection,
    tenant: str | None = None,
    budget: str | None = None,
) -> tuple[int, int]:
    """Rebuild balances and reservations (all, one tenant, or one budget); returns (budgets,
    reservations) written. `conn` must be the owner (it deletes projection rows).

    Each budget is read with the digits its `budget_opened` recorded, never the currency table.
    Raises RebuildFailed, writing nothing, if a budget's history does not
    replay (`reconcile` then names the broken event).
    """
    q = queries()
    params = {"tenant": tenant, "budget": budget}
    with conn.transaction():
        # The lock comes first so the replay's snapshot already includes every committed batch.
        conn.execute(q["lock_projections"])
        updated_at = rfc3339_utc(conn.execute("SELECT now()").fetchone()[0])  # type: ignore[index]
        # Two COPYs cannot interleave on one connection, so the rows (the size of the
        # projections, not of the ledger) are collected first; the ledger itself is streamed.
        balances: list[tuple[object, ...]] = []
        reservations: list[tuple[object, ...]] = []
        with conn.cursor(name="rebuild_stream") as src:
            src.itersize = 20_000
            src.execute(q["rebuild_stream"], params)
            for state in _replay(src):
                balances.append(balance_row(state, updated_at))
                reservations.extend(reservation_row(state, r) for r in state.reservations.values())
        conn.execute(q["delete_balances"], params)
        conn.execute(q["delete_reservations"], params)
        copy_rows(conn, q["copy_balances"], balances)
        copy_rows(conn, q["copy_reservations"], reservations)
    log.info(
        "rebuilt",
        budgets=len(balances),
        reservations=len(reservations),
        tenant=tenant,
        budget=budget,
    )
    return len(balances), len(reservations)


def _replay(src: psycopg.Cursor[Any]) -> Iterator[BudgetState]:
    """Yield each budget's final state, replaying its events in sequence order."""
    state: BudgetState | None = None
    for tenant_id, budget_id, text in src:
        if state is None or state.budget_id != budget_id or state.tenant_id != tenant_id:
            if state is not None:
                yield state
            state = initial_state(tenant_id, budget_id)
        try:
            wire = orjson.loads(text)
            state = evolve(state, decode_event(wire, replay_digits(state, wire)))
        except Exception as exc:
            raise RebuildFailed(
                f"budget {tenant_id}:{budget_id}: event {state.sequence + 1} does not replay "
                f"({type(exc).__name__}: {exc}); run reconcile for details"
            ) from exc
    if state is not None:
        yield state
