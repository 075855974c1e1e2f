"""The scaling benchmark's history: commands of each budget made as domain values, folded by the
domain itself (decide, seal onto the hash chain, evolve) and COPYed into the ledger and the
projections by one writer per worker process; the monthly partitions a filled span needs."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from budget_ledger.ledger.budget import BudgetState, decide, evolve, initial_state
from budget_ledger.ledger.commands import (
    Amount,
    Charge,
    Command,
    Fund,
    OpenBudget,
    Release,
    Reserve,
)
from budget_ledger.ledger.partitioning import partition_for
from budget_ledger.ledger.state import compact
from budget_ledger.schemas.codec import seal

HOT = ("scale-hot", "hot-0")
TOPIC = "scale.commands"
PARTITIONS = 12
CHUNK = 20_000


def _with_db(dsn: str, name: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{name}"))


@dataclass
class _Writer:
    """One worker's COPY buffers and Kafka coordinates (its own topic: offsets never clash)."""

    conn: psycopg.Connection
    topic: str
    ledger_rows: list[tuple[object, ...]]
    reservation_rows: list[tuple[object, ...]]
    offsets: dict[int, int]
    written: int = 0
    balance_rows: list[tuple[object, ...]] = field(default_factory=list)

    def flush(self) -> None:
        from budget_ledger.ledger import store
        from budget_ledger.projections.store import upsert_projections

        with self.conn.transaction():
            store.append_ledger_rows(self.conn, self.ledger_rows)
            if self.reservation_rows or self.balance_rows:
                upsert_projections(self.conn, self.balance_rows, self.reservation_rows)
        self.written += len(self.ledger_rows)
        self.ledger_rows.clear()
        self.reservation_rows.clear()
        self.balance_rows.clear()


def _money(minor: int) -> Amount:
    return Amount(minor, f"{minor // 100}.{minor % 100:02d}")


def _base(key: tuple[str, str], n: int) -> dict[str, Any]:
    return {
        "command_id": f"{key[1]}-c{n}",
        "tenant_id": key[0],
        "budget_id": key[1],
        "issued_at": None,
        "metadata": None,
    }


def _open(key: tuple[str, str]) -> OpenBudget:
    return OpenBudget(
        **_base(key, 0),
        currency="USD",
        digits=2,
        period="rolling",
        hard_cap=None,
        soft_cap=None,
        soft_threshold_pct=80,
        hard_threshold_pct=95,
        period_allowance=None,
        rollover=False,
        timezone="UTC",
        reservation_ttl_seconds=None,
    )


def budget_commands(key: tuple[str, str], n: int) -> Iterator[Command]:
    """`n` commands for one budget: open, fund, then reserve/charge/release cycles (a refill
    fund every 500 commands); the last two reservations stay open."""
    yield _open(key)
    yield Fund(**_base(key, 1), amount=_money(10**11), currency="USD")
    i = 2
    ref = 0
    while i < n:
        if i % 500 == 0:
            yield Fund(**_base(key, i), amount=_money(10**9), currency="USD")
        elif i % 2 == 0 or i >= n - 2:
            ref += 1
            yield Reserve(**_base(key, i), ref_id=f"r{ref}", amount=_money(500 + i % 97),
                          currency="USD", expires_at=None)  # fmt: skip
        elif i % 6 == 1:
            yield Release(**_base(key, i), ref_id=f"r{ref}")
        else:
            yield Charge(**_base(key, i), ref_id=f"r{ref}", amount=None)
        i += 1


def _step(w: _Writer, state: BudgetState, command: Command, now: datetime) -> BudgetState:
    """Decide, seal, fold one command (as `ledger.record` does, without the wire parsing);
    buffer its ledger row and the projection row of a reservation it settled."""
    from budget_ledger.projections.rows import reservation_row

    unsealed = decide(state, command, now)
    event, text = seal(unsealed, state.digits if state.opened else 2)
    after = evolve(state, event)
    key = f"{state.tenant_id}:{state.budget_id}".encode()
    part = partition_for(key, PARTITIONS)
    offset = w.offsets.get(part, 0)
    w.offsets[part] = offset + 1
    w.ledger_rows.append(
        (event.tenant_id, event.budget_id, event.sequence, event.type, event.command_id,
         hashlib.sha256(event.command_id.encode()).hexdigest(), event.ref_id, event.currency,
         event.amount, event.funded, event.reserved, event.charged, event.available, w.topic,
         part, offset, text, event.recorded_at, event.prev_hash,
         event.hash, event.reason, event.utilization_bp)
    )  # fmt: skip
    ref = event.ref_id
    if ref is not None and event.type in ("reservation_charged", "reservation_released"):
        # Settled: its projection row is final; the state keeps only open reservations.
        w.reservation_rows.append(reservation_row(after, after.reservations[ref]))
        after = compact(after, (ref,))
    return after


def _worker(
    dsn: str,
    keys: list[tuple[str, str]],
    per_budget: int,
    start: datetime,
    span: timedelta,
    topic: str,
) -> tuple[int, dict[int, int]]:
    """Write the histories of `keys` round-robin (all budgets advance together in time)."""
    from budget_ledger.ledger.db import connect

    conn = connect(dsn)
    w = _Writer(conn, topic, [], [], {})
    streams = {k: budget_commands(k, per_budget) for k in keys}
    states = {k: initial_state(*k) for k in keys}
    total = per_budget * len(keys)
    done = 0
    rounds_per_budget = per_budget
    # A single budget's stream goes in chunks; many budgets advance one command per round.
    stride = max(1, CHUNK // len(keys)) if len(keys) < CHUNK else 1
    for _ in range(0, rounds_per_budget, stride):
        for k in keys:
            stream = streams[k]
            for _ in range(stride):
                command = next(stream, None)
                if command is None:
                    break
                now = start + span * (done / total)
                states[k] = _step(w, states[k], command, now)
                done += 1
            if len(w.ledger_rows) >= CHUNK:
                w.flush()
    w.flush()
    _write_projections(conn, states.values(), start + span)
    conn.close()
    return w.written, w.offsets


def _write_projections(conn: psycopg.Connection, states: Iterable[BudgetState],
                       updated_at: datetime) -> None:  # fmt: skip
    """The balance rows and open reservations of `states`, a transaction per chunk (the
    session's staging tables empty at each commit: one transaction for all would re-merge every
    earlier chunk's rows again with each chunk)."""
    from budget_ledger.projections.rows import balance_row, reservation_row
    from budget_ledger.projections.store import upsert_projections

    chunk: list[BudgetState] = []
    for state in [*states, None]:
        if state is not None:
            chunk.append(state)
        if chunk and (state is None or len(chunk) >= CHUNK):
            opened = [reservation_row(s, r) for s in chunk for r in s.reservations.values()]
            with conn.transaction():
                upsert_projections(conn, [balance_row(s, updated_at) for s in chunk], opened)
            chunk = []


def _run_worker(args: tuple[Any, ...]) -> tuple[str, int, dict[int, int]]:
    written, offsets = _worker(*args)
    return args[5], written, offsets


def _prepare_partitions(url: str, start: datetime, end: datetime) -> None:
    """Monthly partitions for the filled span before the current month (the migration creates
    the current month and those ahead): named and secured as `ledger_ensure_partitions` does."""
    month = datetime(start.year, start.month, 1, tzinfo=UTC)
    current = datetime(end.year, end.month, 1, tzinfo=UTC)
    with psycopg.connect(url, autocommit=True) as conn:
        while month < current:
            after = datetime(month.year + month.month // 12, month.month % 12 + 1, 1, tzinfo=UTC)
            name = f"ledger_y{month:%Y}m{month:%m}"
            conn.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} PARTITION OF ledger FOR VALUES FROM ({}) TO ({})"
                ).format(sql.Identifier(name), sql.Literal(month), sql.Literal(after))
            )
            conn.execute("SELECT ledger_secure_partition(%s::regclass)", (name,))
            month = after
