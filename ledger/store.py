"""The Postgres event store: the append-only ledger, consumer positions and the outbox."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Final

import orjson
import psycopg

from budget_ledger.ledger.budget import BudgetState, initial_state
from budget_ledger.ledger.db import copy_rows
from budget_ledger.ledger.history import ReplayFailed, replay
from budget_ledger.ledger.sql import load_queries

BudgetKey = tuple[str, str]
CommandKey = tuple[str, str]


class Fenced(Exception):
    """Another consumer moved a partition's position on: this one no longer owns it."""


@cache
def queries() -> dict[str, str]:
    """The event store's named queries (`ledger/queries.sql`)."""
    return load_queries("budget_ledger.ledger")


#: The PostgreSQL types of `copy_ledger`'s columns, in its order (a binary COPY needs them), and
#: of the two that `copy_ledger_mac` adds.
LEDGER_COPY_TYPES: Final = (
    "text", "text", "int8", "text", "text", "text", "text", "text", "int8", "int8", "int8",
    "int8", "int8", "text", "int4", "int8", "json", "timestamptz", "text", "text", "text",
    "numeric",
)  # fmt: skip
_MAC_TYPES: Final = ("text", "text")


def append_ledger_rows(
    conn: psycopg.Connection, rows: Sequence[Sequence[object]], keyed: bool = False
) -> None:
    """COPY a batch's ledger rows (`consumers.processor` layout; with the MAC columns when
    `keyed`) in binary, in the caller's transaction."""
    if keyed:
        copy_rows(conn, queries()["copy_ledger_mac"], rows, LEDGER_COPY_TYPES + _MAC_TYPES)
    else:
        copy_rows(conn, queries()["copy_ledger"], rows, LEDGER_COPY_TYPES)


@dataclass(frozen=True, slots=True)
class StoredPosition:
    """A consumer's stored position in one partition and what identifies its topic."""

    partition: int
    next_offset: int
    topic_id: str | None
    # The topic name the ledger rows of this position carry (`name@topic_id` after a re-creation).
    ledger_topic: str


def ensure_positions(
    conn: psycopg.Connection, group: str, topic: str, partitions: Sequence[int]
) -> dict[int, StoredPosition]:
    """Create missing position rows; return every partition's stored position."""
    q = queries()
    with conn.transaction():
        with conn.cursor() as cur:
            cur.executemany(
                q["ensure_position"],
                [{"group": group, "topic": topic, "partition": p} for p in partitions],
            )
        rows = conn.execute(
            q["select_positions"], {"group": group, "topic": topic, "partitions": list(partitions)}
        ).fetchall()
    return {int(p): StoredPosition(int(p), int(o), tid, lt) for p, o, tid, lt in rows}


def ensure_relay_cursors(
    conn: psycopg.Connection, ledger_topic: str, partitions: Sequence[int]
) -> None:
    """Create the relay cursors of (ledger topic, partition) that do not exist yet."""
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            queries()["ensure_relay_cursor"],
            [{"topic": ledger_topic, "partition": p} for p in partitions],
        )


def record_topic_id(
    conn: psycopg.Connection, group: str, topic: str, partition: int, topic_id: str
) -> None:
    """Remember the topic id of a position the first time it is seen (never overwrites)."""
    conn.execute(
        queries()["record_topic_id"],
        {"group": group, "topic": topic, "partition": partition, "topic_id": topic_id},
    )


def lookup_prior(
    conn: psycopg.Connection, keys: list[CommandKey]
) -> dict[CommandKey, tuple[str, str]]:
    """Fingerprint and event JSON of every (tenant, command_id) already in the ledger."""
    if not keys:
        return {}
    rows = conn.execute(
        queries()["select_prior_commands"], {"keys": orjson.dumps(keys).decode()}
    ).fetchall()
    return {(t, c): (fp, ev) for t, c, fp, ev in rows}


def load_budgets(
    conn: psycopg.Connection,
    keys: list[BudgetKey],
) -> dict[BudgetKey, BudgetState | ReplayFailed]:
    """The state of each budget, replayed from its ledger events (`ledger.history.replay`); a
    budget without events is new. One whose history fails to replay is a `ReplayFailed`."""
    out: dict[BudgetKey, BudgetState | ReplayFailed] = {}
    if not keys:
        return out
    with conn.cursor() as cur:
        cur.execute(
            queries()["select_budget_events"],
            {"tenants": [k[0] for k in keys], "budgets": [k[1] for k in keys]},
        )
        for result in replay(cur):
            out[(result.tenant_id, result.budget_id)] = result
    for key in keys:
        out.setdefault(key, initial_state(*key))
    return out


def advance_positions(
    conn: psycopg.Connection, group: str, topic: str, positions: Mapping[int, tuple[int, int]]
) -> None:
    """Compare-and-set every partition's position (expected -> new); raise Fenced if any moved.

    One statement for all partitions (sorted, so concurrent writers lock rows in one order).
    """
    if not positions:
        return
    parts = sorted(positions)
    rows = conn.execute(
        queries()["advance_positions"],
        {
            "group": group,
            "topic": topic,
            "partitions": parts,
            "expected": [positions[p][0] for p in parts],
            "next": [positions[p][1] for p in parts],
        },
    ).fetchall()
    if len(rows) != len(parts):
        moved = sorted(set(parts) - {int(r[0]) for r in rows})
        partition = moved[0] if moved else parts[0]
        raise Fenced(
            f"partition {partition} of {topic} is no longer at offset {positions[partition][0]}"
        )
