"""`/v1/tenants/{tid}/alerts`: the tenant's alert history, newest first, a page at a time (the
`alerts` table the consumer writes in its batch transaction; projections.alert_reads)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from pydantic import AwareDatetime

from budget_ledger.entrypoints.api.auth import ID_PATTERN, ReadSession, TenantId
from budget_ledger.entrypoints.api.budgets import (
    Cursor,
    Limit,
    decode_cursor,
    encode_cursor,
    in_utc,
)
from budget_ledger.entrypoints.api.ledger import EARLIEST, LATEST
from budget_ledger.entrypoints.api.models import AUTH_ERRORS, AlertOut, AlertPageOut, Problem
from budget_ledger.projections.alert_reads import AlertCursor, alert_page

router = APIRouter(
    prefix="/v1/tenants/{tid}/alerts",
    tags=["alerts"],
    responses={
        400: {"model": Problem, "description": "a cursor that is not one of this list"},
        **AUTH_ERRORS,
    },
)


@router.get("", response_model=AlertPageOut, summary="the tenant's alerts, newest first")
def alerts(
    tid: TenantId,
    conn: ReadSession,
    budget_id: Annotated[
        str | None, Query(pattern=ID_PATTERN, description="one budget's alerts only")
    ] = None,
    since: Annotated[
        AwareDatetime | None, Query(alias="from", description="inclusive, RFC 3339 with offset")
    ] = None,
    until: Annotated[
        AwareDatetime | None, Query(alias="to", description="exclusive, RFC 3339 with offset")
    ] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> AlertPageOut:
    """Alerts recorded in [from, to) (the time of the event that raised them), newest first;
    each is the alert as on the alerts topic. Stable while new alerts are recorded."""
    start = EARLIEST if since is None else in_utc("from", since)
    end = LATEST if until is None else in_utc("to", until)
    after = None
    if cursor:
        try:
            after = AlertCursor.from_token(decode_cursor(cursor))
        except ValueError:
            raise HTTPException(400, "cursor is not a cursor of this list") from None
    page = alert_page(conn, tid, start, end, budget_id=budget_id, after=after, limit=limit)
    return AlertPageOut(
        alerts=[AlertOut.model_validate(wire) for wire, _ in page.alerts],
        next_cursor=None if page.next is None else encode_cursor(page.next.token()),
    )
