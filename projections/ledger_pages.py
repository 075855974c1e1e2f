"""One budget's ledger entries in a time window, newest first, a page at a time.

Keyset pagination on (recorded_at, sequence) over the index ledger_budget_pages: a page costs
one index range scan in the partitions of the window's months, however long the history (no
OFFSET). Run it on a connection with the caller's rights: as `ledger_reader` with
`ledger.tenant_id` set (the HTTP API), row-level security limits it to that tenant.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg

from budget_ledger.ledger.store import queries

MAX_PAGE = 1000


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One ledger row as a reader sees it (amounts in minor units; `event` is its JSON)."""

    tenant_id: str
    budget_id: str
    sequence: int
    type: str
    command_id: str
    ref_id: str | None
    currency: str | None
    amount: int | None
    funded: int
    reserved: int
    charged: int
    available: int
    recorded_at: datetime
    hash: str
    event: str


@dataclass(frozen=True, slots=True)
class PageCursor:
    """Where the next page starts: strictly older than this (recorded_at, sequence)."""

    recorded_at: datetime
    sequence: int

    def token(self) -> str:
        """An opaque text form for a URL (`<ISO time>~<sequence>`)."""
        return f"{self.recorded_at.isoformat()}~{self.sequence}"

    @classmethod
    def from_token(cls, token: str) -> PageCursor:
        """Parse `token()`; ValueError when it is not one."""
        at, sep, seq = token.rpartition("~")
        parsed = datetime.fromisoformat(at) if sep else None
        if parsed is None or parsed.tzinfo is None or not seq.isdigit():
            raise ValueError("not a page cursor")
        return cls(parsed, int(seq))


@dataclass(frozen=True, slots=True)
class LedgerPage:
    """Entries newest first, and the cursor of the next page (None: this was the last)."""

    entries: list[LedgerEntry]
    next: PageCursor | None


def ledger_page(
    conn: psycopg.Connection,
    tenant_id: str,
    budget_id: str,
    since: datetime,
    until: datetime,
    *,
    after: PageCursor | None = None,
    limit: int = 100,
) -> LedgerPage:
    """Entries of one budget recorded in [since, until), newest first, `limit` per page; pass the
    returned `next` as `after` for the following page."""
    if since.tzinfo is None or until.tzinfo is None:
        raise ValueError("since and until must be timezone-aware")
    if not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be between 1 and {MAX_PAGE}")
    # The first page starts below (until, 0): every sequence is > 0, so that is recorded_at < until.
    start = PageCursor(until, 0) if after is None or after.recorded_at >= until else after
    rows = conn.execute(
        queries()["ledger_page"],
        {
            "tenant": tenant_id,
            "budget": budget_id,
            "since": since,
            "before_at": start.recorded_at,
            "before_seq": start.sequence,
            "limit": limit + 1,  # one more tells whether a next page exists
        },
    ).fetchall()
    entries = [LedgerEntry(*row) for row in rows[:limit]]
    more = len(rows) > limit
    last = entries[-1] if entries else None
    cursor = PageCursor(last.recorded_at, last.sequence) if more and last else None
    return LedgerPage(entries, cursor)
