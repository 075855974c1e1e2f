"""`rebuild`: recompute the projections from the ledger and swap them in atomically.

One transaction as the owner role: LOCK the projection tables IN EXCLUSIVE MODE (readers keep
reading the old rows until commit; the consumer's upsert waits and applies right after, so
nothing is lost — its ledger rows are not visible to this snapshot, and it upserts the state
after them), replay the ledger through `evolve`, DELETE and COPY the projections, commit.
"""

from __future__ import annotations

import psycopg
import structlog

from budget_ledger.ledger.db import copy_rows, stream_rows
from budget_ledger.ledger.history import ReplayFailed, replay
from budget_ledger.projections.rows import balance_row, reservation_row
from budget_ledger.projections.store import queries

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
        updated_at = conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
        conn.execute(q["rebuild_in_index_order"])
        # Two COPYs cannot interleave on one connection, so the rows (the size of the
        # projections, not of the ledger) are collected first; the ledger itself is streamed.
        balances: list[tuple[object, ...]] = []
        reservations: list[tuple[object, ...]] = []
        for state in replay(stream_rows(conn, q["rebuild_stream"], params, "rebuild_stream")):
            if isinstance(state, ReplayFailed):
                raise RebuildFailed(
                    f"budget {state.tenant_id}:{state.budget_id}: event {state.sequence} does"
                    f" not replay ({state.reason}); run reconcile for details"
                )
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
