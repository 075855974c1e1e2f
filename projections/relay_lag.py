"""The publication check: ledger events of each command partition the relay has not sent yet."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg

from budget_ledger.projections.store import queries


@dataclass(frozen=True, slots=True)
class Unpublished:
    """Ledger events of one command partition that the relay has not published yet."""

    partition: int
    relay_offset: int
    ledger_max_offset: int
    pending: int
    oldest: datetime | None
    overdue: bool


def check_unpublished(conn: psycopg.Connection, grace_seconds: float) -> list[Unpublished]:
    """Partitions whose ledger events are not all published; overdue past the grace period."""
    now = datetime.now(UTC)
    found = []
    for partition, cursor, max_offset, pending, oldest in conn.execute(
        queries()["unpublished_events"]
    ):
        if pending:
            overdue = oldest is not None and (now - oldest).total_seconds() > grace_seconds
            found.append(Unpublished(partition, cursor, max_offset, pending, oldest, overdue))
    return found
