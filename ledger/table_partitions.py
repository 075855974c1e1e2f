"""The ledger table's monthly partitions (migration 008): create the coming months, list them.

Not Kafka partitions (that is `ledger/partitioning.py`). The work is done by the database
function `ledger_ensure_partitions`, so the migration, the CLI, the consumer at start-up and the
daily CronJob all create exactly the same partitions; this module calls it and reads the catalog.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg

from budget_ledger.ledger.store import queries

DEFAULT_MONTHS_AHEAD = 3


@dataclass(frozen=True, slots=True)
class EnsuredMonth:
    """One month `ensure` looked at: its partition, bounds and outcome ("created", "exists",
    "skipped: ..." when its rows sit in the DEFAULT partition, "covered: ..." by another)."""

    name: str
    range_from: datetime
    range_to: datetime
    outcome: str


@dataclass(frozen=True, slots=True)
class PartitionInfo:
    """One partition of the ledger: bounds, estimated rows (None before ANALYZE), bytes."""

    name: str
    bounds: str
    estimated_rows: int | None
    total_bytes: int
    has_sequence_key: bool


def ensure_partitions(
    conn: psycopg.Connection, months_ahead: int = DEFAULT_MONTHS_AHEAD
) -> list[EnsuredMonth]:
    """Create the missing monthly partitions from this UTC month to `months_ahead` later.

    Runs in the caller's transaction; the caller commits. Idempotent.
    """
    rows = conn.execute(queries()["ensure_ledger_partitions"], {"ahead": months_ahead}).fetchall()
    return [EnsuredMonth(str(n), f, t, str(o)) for n, f, t, o in rows]


def list_partitions(conn: psycopg.Connection) -> list[PartitionInfo]:
    """Every partition of the ledger, in bound order (legacy first, DEFAULT last)."""
    rows = conn.execute(queries()["list_ledger_partitions"]).fetchall()
    return [PartitionInfo(str(n), str(b), e, int(s), bool(k)) for n, b, e, s, k in rows]


def default_partition_rows(conn: psycopg.Connection) -> int:
    """Rows that found no monthly partition (owner only: partitions are not granted to anyone)."""
    row = conn.execute(queries()["count_default_partition_rows"]).fetchone()
    return int(row[0]) if row else 0
