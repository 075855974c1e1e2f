"""`/v1/tenants/{tid}/budgets/{bid}/ledger`: a budget's ledger entries, newest first, a page at a
time (keyset pagination by projections.ledger_pages over the partitioned ledger's page index)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, HTTPException, Query
from pydantic import AwareDatetime, BaseModel

from budget_ledger.entrypoints.api.auth import ReadSession, TenantId
from budget_ledger.entrypoints.api.budgets import (
    BudgetId,
    Cursor,
    Limit,
    budget_or_404,
    decode_cursor,
    encode_cursor,
    in_utc,
)
from budget_ledger.entrypoints.api.models import AUTH_ERRORS, Problem
from budget_ledger.projections.ledger_pages import PageCursor, ledger_page

router = APIRouter(
    prefix="/v1/tenants/{tid}/budgets",
    tags=["ledger"],
    responses={
        400: {"model": Problem, "description": "a cursor that is not one of this list"},
        **AUTH_ERRORS,
        404: {"model": Problem, "description": "no such budget of this tenant"},
    },
)

# Default bounds of a range: the input limits accept no time outside 2000-2200.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)
# With `type`, one request reads at most this many pages of `limit` rows: a rare type answers
# with fewer entries (even none) and a next_cursor, so no request walks a whole history.
TYPE_SCAN_PAGES = 10


class LedgerEntryOut(BaseModel):
    """One ledger event as on the wire: amounts decimal text, balances after it, its hash."""

    sequence: int
    type: str
    command_id: str
    command_type: str | None
    ref_id: str | None
    currency: str | None
    amount: str | None
    reason: str | None
    data: dict[str, Any]
    funded: str
    reserved: str
    charged: str
    available: str
    utilization_pct: str
    recorded_at: str
    metadata: dict[str, Any] | None
    prev_hash: str
    hash: str


class LedgerPageOut(BaseModel):
    """Entries newest first; pass `next_cursor` as `cursor` for older ones (null: no more)."""

    entries: list[LedgerEntryOut]
    next_cursor: str | None


@router.get("/{bid}/ledger", response_model=LedgerPageOut, summary="the budget's ledger entries")
def entries(
    tid: TenantId,
    bid: BudgetId,
    conn: ReadSession,
    since: Annotated[
        AwareDatetime | None, Query(alias="from", description="inclusive, RFC 3339 with offset")
    ] = None,
    until: Annotated[
        AwareDatetime | None, Query(alias="to", description="exclusive, RFC 3339 with offset")
    ] = None,
    event_type: Annotated[
        str | None, Query(alias="type", max_length=64, description="one event type")
    ] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> LedgerPageOut:
    """Entries recorded in [from, to), newest first; stable while new events are appended."""
    start = EARLIEST if since is None else in_utc("from", since)
    end = LATEST if until is None else in_utc("to", until)
    budget_or_404(conn, tid, bid)
    after = None
    if cursor:
        try:
            after = PageCursor.from_token(decode_cursor(cursor))
        except ValueError:
            raise HTTPException(400, "cursor is not a cursor of this list") from None
    found: list[dict[str, Any]] = []
    for _ in range(TYPE_SCAN_PAGES if event_type else 1):
        page = ledger_page(conn, tid, bid, start, end, after=after, limit=limit)
        for entry in page.entries:
            if event_type is None or entry.type == event_type:
                found.append(orjson.loads(entry.event))
                if event_type is not None and len(found) == limit:
                    # Stop at this entry: the next page starts right below it.
                    after = PageCursor(entry.recorded_at, entry.sequence)
                    more = entry is not page.entries[-1] or page.next is not None
                    return _page(found, after if more else None)
        after = page.next
        if after is None:
            break
    return _page(found, after)


def _page(found: list[dict[str, Any]], after: PageCursor | None) -> LedgerPageOut:
    return LedgerPageOut(
        entries=[LedgerEntryOut.model_validate(e) for e in found],
        next_cursor=None if after is None else encode_cursor(after.token()),
    )
