"""The HTTP API's reads of what the consumer records beside the ledger (migration 012): the
alert history, newest first a page at a time, and the dead letter of a command id.

Run on a tenant session (`api_reads.tenant_session`): row-level security limits both to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import psycopg

from budget_ledger.projections.api_reads import MAX_PAGE, queries


@dataclass(frozen=True, slots=True)
class AlertCursor:
    """Where the next page starts: strictly older than this alert's keyset."""

    recorded_at: datetime
    budget_id: str
    sequence: int
    type: str
    monitor_id: str = ""  # a balance_monitor alert's monitor (migration 016); "" for the others

    def token(self) -> str:
        """An opaque text form (JSON), for `encode_cursor`."""
        keys: list[Any] = [self.recorded_at.isoformat(), self.budget_id, self.sequence, self.type]
        if self.monitor_id:  # only then: the cursors of other alerts keep their form
            keys.append(self.monitor_id)
        return orjson.dumps(keys).decode()

    @classmethod
    def from_token(cls, token: str) -> AlertCursor:
        """Parse `token()`; ValueError when it is not one."""
        try:
            at, budget, seq, atype, *rest = orjson.loads(token)
            parsed = datetime.fromisoformat(at)
        except (orjson.JSONDecodeError, TypeError, ValueError):
            raise ValueError("not an alert cursor") from None
        if parsed.tzinfo is None or not isinstance(budget, str) or not isinstance(atype, str):
            raise ValueError("not an alert cursor")
        if len(rest) > 1 or (rest and (not isinstance(rest[0], str) or not rest[0])):
            raise ValueError("not an alert cursor")
        if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq < 2**63:
            raise ValueError("not an alert cursor")
        return cls(parsed, budget, seq, atype, rest[0] if rest else "")


@dataclass(frozen=True, slots=True)
class AlertPage:
    """Alerts newest first (each its wire dict), and the cursor of the next page (None: last)."""

    alerts: list[tuple[dict[str, Any], datetime]]
    next: AlertCursor | None


def alert_page(
    conn: psycopg.Connection,
    tenant_id: str,
    since: datetime,
    until: datetime,
    *,
    budget_id: str | None = None,
    after: AlertCursor | None = None,
    limit: int = 100,
) -> AlertPage:
    """One page of the tenant's alerts (or one budget's) recorded in [since, until)."""
    if not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be between 1 and {MAX_PAGE}")
    rows = conn.execute(
        queries()["alert_page"],
        {
            "tenant": tenant_id,
            "budget": budget_id,
            "since": since,
            "until": until,
            "after_at": after.recorded_at if after else None,
            "after_budget": after.budget_id if after else None,
            "after_seq": after.sequence if after else None,
            "after_type": after.type if after else None,
            "after_monitor": after.monitor_id if after else None,
            "limit": limit + 1,
        },
    ).fetchall()
    page = rows[:limit]
    alerts = [(orjson.loads(payload), at) for _, _, _, at, payload, _ in page]
    last = page[-1] if len(rows) > limit else None
    cursor = None if last is None else AlertCursor(last[3], last[0], last[1], last[2], last[5])
    return AlertPage(alerts, cursor)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Why the ledger dead-lettered a command (it never reached the ledger)."""

    command_type: str | None
    error_class: str
    reason: str
    recorded_at: datetime


def dead_letter(conn: psycopg.Connection, tenant_id: str, command_id: str) -> DeadLetter | None:
    """The (first) dead letter of a command id (None: never dead-lettered)."""
    row = conn.execute(
        queries()["dead_letter"], {"tenant": tenant_id, "command_id": command_id}
    ).fetchone()
    return None if row is None else DeadLetter(*row)
