"""The HTTP API's read side: tenant-bound sessions and the reads of budgets, balances at a point
in time, reservations and command outcomes (named queries in `api_queries.sql`).

Amounts come back in minor units with the budget's own digits (recorded by its budget_opened,
never today's currency table); the API renders them with `schemas.money`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

import orjson
import psycopg
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from budget_ledger.ledger.db import connect
from budget_ledger.ledger.evolve import config_from_data
from budget_ledger.ledger.periods import period_end
from budget_ledger.ledger.sql import load_queries
from budget_ledger.ledger.state import BudgetConfig, above_hard, above_soft, limit_of
from budget_ledger.schemas.codec import event_from_wire, opened_digits

MAX_PAGE = 1000


@cache
def queries() -> dict[str, str]:
    """The named queries of `projections/api_queries.sql`."""
    return load_queries("budget_ledger.projections", "api_queries.sql")


@contextmanager
def read_transaction(pool: ConnectionPool) -> Iterator[psycopg.Connection]:
    """A read-only transaction on a pooled connection (running as the API's reader role), with
    no tenant yet: row-level security shows it no rows until `bind_tenant`."""
    with pool.connection() as conn:
        # psycopg then begins with BEGIN READ ONLY: no statement of its own for it. (Its
        # transaction() block costs more CPU than the two lines it saves at 500 requests/s.)
        conn.read_only = True
        try:
            yield conn
        except BaseException:
            conn.rollback()
            raise
        else:
            conn.commit()
        finally:
            conn.read_only = None  # the pool's other users write (webhook subscriptions)


def bind_tenant(conn: psycopg.Connection, tenant_id: str) -> None:
    """Set `ledger.tenant_id` for the rest of the current transaction only."""
    # set_config(..., true) is SET LOCAL with a bound parameter: it ends with the transaction,
    # so the pooled connection never carries one request's tenant into the next.
    conn.execute("SELECT set_config('ledger.tenant_id', %s, true)", (tenant_id,))


@contextmanager
def keyed_session(
    pool: ConnectionPool, key_id: str, digest: bytes, tenant_id: str, scope: str
) -> Iterator[tuple[tuple[Any, ...] | None, psycopg.Connection]]:
    """A read-only transaction opened with the row of key `key_id` and, when `digest` is its
    hash and it is active, may act for `tenant_id` and holds `scope`, bound to that tenant.

    Yields the key's row (None: no such key), its last column the bound tenant (None: not
    bound, and row-level security shows the transaction no rows). The key look-up and the
    binding are one statement (a round trip fewer than `verify_key` and `bind_tenant`).
    """
    params = _key_params(key_id, digest, tenant_id, scope)
    with read_transaction(pool) as conn:
        yield conn.execute(queries()["open_session"], params).fetchone(), conn


def _key_params(key_id: str, digest: bytes, tenant_id: str, scope: str) -> dict[str, Any]:
    return {"key_id": key_id, "digest": digest, "tenant": tenant_id, "scope": scope}


# One read of `keyed_reads`: a named query of `api_queries.sql` and its parameters.
Read = tuple[str, dict[str, Any]]


async def keyed_reads(
    pool: AsyncConnectionPool,
    key_id: str,
    digest: bytes,
    tenant_id: str,
    scope: str,
    reads: Sequence[Read],
) -> tuple[tuple[Any, ...] | None, list[tuple[Any, ...] | None]]:
    """The row of key `key_id`, as `keyed_session` yields it, and the first row of each read, in
    one read-only transaction (`db.read_only_pool`) sent as one pipeline: its start, the key
    statement, the reads and the commit in one round trip (one wake-up of the backend, not four).

    Sending the reads before the key is checked is safe: they run after the key statement, and
    a key that fails it leaves them without a tenant, so row-level security shows them no rows.
    """
    params = _key_params(key_id, digest, tenant_id, scope)
    async with pool.connection() as conn:
        try:
            async with conn.pipeline():
                key = await conn.execute(queries()["open_session"], params)
                cursors = [await conn.execute(queries()[name], args) for name, args in reads]
                await conn.commit()
        except BaseException:
            await conn.rollback()
            raise
        return await key.fetchone(), [await cur.fetchone() for cur in cursors]


def budget_read(tenant_id: str, budget_id: str) -> Read:
    """The read of one budget's balance row (`budget_view` maps its row)."""
    return "get_budget", {"tenant": tenant_id, "budget": budget_id}


def as_of_read(tenant_id: str, budget_id: str, as_of: datetime) -> Read:
    """The read of a budget's balances at a point in time (`balances_at` maps its row)."""
    return "event_as_of", {"tenant": tenant_id, "budget": budget_id, "as_of": as_of}


@contextmanager
def tenant_session(pool: ConnectionPool, tenant_id: str) -> Iterator[psycopg.Connection]:
    """A read-only transaction bound to one tenant: row-level security shows it this tenant's
    rows only, even to a query that forgets its tenant filter (what every API request runs)."""
    with read_transaction(pool) as conn:
        bind_tenant(conn, tenant_id)
        yield conn


@contextmanager
def tenant_connection(dsn: str, role: str, tenant_id: str) -> Iterator[psycopg.Connection]:
    """A connection of its own (never pooled), as `role`, bound to one tenant for its whole
    life: for work that runs its own transactions, like the reconciler's replay."""
    with connect(dsn, role=role) as conn:
        # Session-wide (is_local false), which is why the connection is closed afterwards
        # instead of going back to a pool.
        conn.execute("SELECT set_config('ledger.tenant_id', %s, false)", (tenant_id,))
        conn.commit()
        yield conn


@dataclass(frozen=True, slots=True)
class BudgetView:
    """A budget's balance row as the API shows it (money in minor units, `digits` its own)."""

    tenant_id: str
    budget_id: str
    currency: str
    digits: int
    funded: int
    reserved: int
    charged: int
    available: int
    limit: int
    utilization_pct: str
    sequence: int
    period_start: datetime | None
    config: BudgetConfig
    updated_at: datetime

    @property
    def committed(self) -> int:
        """Reserved plus charged in the current period."""
        return self.reserved + self.charged

    @property
    def soft_cap_exceeded(self) -> bool:
        """At or above the soft threshold (`soft_cap`, else its percent of the limit)."""
        return above_soft(self.config, self.limit, self.committed)

    @property
    def hard_cap_approaching(self) -> bool:
        """At or above `hard_threshold_pct` of the limit."""
        return above_hard(self.config, self.limit, self.committed)

    @property
    def next_reset_at(self) -> datetime | None:
        """The next period boundary (None for rolling budgets)."""
        if self.period_start is None:
            return None
        return period_end(self.period_start, self.config.period, self.config.timezone)


def budget_view(row: tuple[Any, ...]) -> BudgetView:
    """A balance row of `list_budgets`, `get_budget` or `budget_read` as the API shows it."""
    (tenant, budget, currency, funded, reserved, charged, available, limit, pct, seq) = row[:10]
    period_start, config, updated_at, digits, opened = row[10:]
    return BudgetView(
        tenant,
        budget,
        currency,
        digits if digits is not None else opened_digits(orjson.loads(opened)),
        funded,
        reserved,
        charged,
        available,
        limit,
        pct,
        seq,
        None if period_start is None else datetime.fromisoformat(period_start),
        BudgetConfig(**orjson.loads(config)),
        updated_at,
    )


def list_budgets(
    conn: psycopg.Connection, tenant_id: str, after: str = "", limit: int = 100
) -> tuple[list[BudgetView], str | None]:
    """One page of the tenant's budgets in budget_id order after `after`, and the budget_id to
    pass as `after` for the next page (None: this was the last)."""
    _check_limit(limit)
    rows = conn.execute(
        queries()["list_budgets"], {"tenant": tenant_id, "after": after, "limit": limit + 1}
    ).fetchall()
    page = [budget_view(r) for r in rows[:limit]]
    return page, (page[-1].budget_id if len(rows) > limit else None)


def get_budget(conn: psycopg.Connection, tenant_id: str, budget_id: str) -> BudgetView | None:
    """One opened budget of the tenant (None: unknown to this tenant)."""
    row = conn.execute(
        queries()["get_budget"], {"tenant": tenant_id, "budget": budget_id}
    ).fetchone()
    return None if row is None else budget_view(row)


@dataclass(frozen=True, slots=True)
class BalancesAt:
    """A budget's balances after one ledger event (money in minor units)."""

    sequence: int
    funded: int
    reserved: int
    charged: int
    available: int
    limit: int
    utilization_pct: str
    recorded_at: datetime
    soft_cap_exceeded: bool
    hard_cap_approaching: bool


def balances_at(budget: BudgetView, row: tuple[Any, ...]) -> BalancesAt:
    """The balances and cap flags of `as_of_read`'s row for `budget`."""
    seq, funded, reserved, charged, available, recorded_at, event, config_event = row
    wire = orjson.loads(event)
    config = None
    if config_event is not None:
        # The configuration event's money is decimal text: decode it like every reader of
        # history does, with the budget's own digits.
        config = config_from_data(event_from_wire(orjson.loads(config_event), budget.digits).data)
    limit = limit_of(config, funded)
    committed = reserved + charged
    return BalancesAt(
        seq,
        funded,
        reserved,
        charged,
        available,
        limit,
        wire["utilization_pct"],
        recorded_at,
        above_soft(config, limit, committed),
        above_hard(config, limit, committed),
    )


@dataclass(frozen=True, slots=True)
class ReservationView:
    """One reservation (money in minor units)."""

    ref_id: str
    status: str
    amount: int
    charged: int
    expires_at: datetime | None
    command_id: str
    created_seq: int
    updated_seq: int


def list_reservations(
    conn: psycopg.Connection,
    budget: BudgetView,
    status: str | None = None,
    after: str = "",
    limit: int = 100,
) -> tuple[list[ReservationView], str | None]:
    """One page of a budget's reservations in ref_id order after `after` (optionally of one
    status), and the ref_id to pass as `after` for the next page (None: the last)."""
    _check_limit(limit)
    rows = conn.execute(
        queries()["list_reservations"],
        {
            "tenant": budget.tenant_id,
            "budget": budget.budget_id,
            "status": status,
            "after": after,
            "limit": limit + 1,
        },
    ).fetchall()
    page = [ReservationView(*r) for r in rows[:limit]]
    return page, (page[-1].ref_id if len(rows) > limit else None)


@dataclass(frozen=True, slots=True)
class CommandOutcome:
    """The ledger event a command produced, as its stored wire dict, and the fingerprint of the
    command (ledger.idempotency) recorded with it."""

    budget_id: str
    sequence: int
    type: str
    event: dict[str, Any]
    fingerprint: str = ""


def command_outcome(
    conn: psycopg.Connection, tenant_id: str, command_id: str
) -> CommandOutcome | None:
    """The outcome event of a command (None: not in the ledger, yet or ever)."""
    row = conn.execute(
        queries()["command_outcome"], {"tenant": tenant_id, "command_id": command_id}
    ).fetchone()
    if row is None:
        return None
    seq, budget_id, etype, event, fingerprint = row
    return CommandOutcome(budget_id, seq, etype, orjson.loads(event), fingerprint)


def _check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be between 1 and {MAX_PAGE}")
