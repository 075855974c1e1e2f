"""The balance monitors of a budget as the projection holds them (migration 016), for the API."""

from __future__ import annotations

from functools import cache

import immutables
import psycopg

from budget_ledger.ledger.sql import load_queries
from budget_ledger.ledger.state import Monitor
from budget_ledger.projections.state_loading import monitors_from_json


@cache
def _queries() -> dict[str, str]:
    return load_queries("budget_ledger.projections", "monitor_queries.sql")


def budget_monitors(
    conn: psycopg.Connection, tenant_id: str, budget_id: str
) -> tuple[int, immutables.Map[str, Monitor]] | None:
    """The sequence of an opened budget's last event and its monitors with their armed flags
    then (None: no such opened budget visible to this session)."""
    row = conn.execute(
        _queries()["budget_monitors"], {"tenant": tenant_id, "budget": budget_id}
    ).fetchone()
    if row is None:
        return None
    return int(row[0]), monitors_from_json(row[1])
