"""`/v1/tenants/{tid}/budgets...`: budgets, their utilization (now or at a time) and their
reservations. Every handler reads through the request's tenant-bound session."""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import psycopg
from fastapi import APIRouter, HTTPException, Path, Query, Response
from fastapi.exceptions import RequestValidationError
from pydantic import AwareDatetime

from budget_ledger.entrypoints.api.auth import (
    ID_PATTERN,
    Access,
    ReadSession,
    TenantId,
    hot_read,
)
from budget_ledger.entrypoints.api.models import (
    AUTH_ERRORS,
    BudgetOut,
    BudgetPage,
    Problem,
    ReservationOut,
    ReservationPage,
    UtilizationOut,
    model_response,
)
from budget_ledger.projections.api_reads import (
    MAX_PAGE,
    BudgetView,
    as_of_read,
    balances_at,
    budget_read,
    budget_view,
    get_budget,
    list_budgets,
    list_reservations,
)

router = APIRouter(
    prefix="/v1/tenants/{tid}/budgets",
    tags=["budgets"],
    responses={
        400: {"model": Problem, "description": "a cursor that is not one of this list"},
        **AUTH_ERRORS,
    },
)
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "no such budget of this tenant"}
}

BudgetId = Annotated[str, Path(pattern=ID_PATTERN, description="The budget")]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description="entries per page")]
Cursor = Annotated[
    str | None, Query(max_length=400, description="`next_cursor` of the previous page")
]


def encode_cursor(last_id: str | None) -> str | None:
    """An opaque page cursor for the last id of a page."""
    if last_id is None:
        return None
    return base64.urlsafe_b64encode(last_id.encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> str:
    """The id a cursor stands for ("" for the first page); 400 when it is not a cursor."""
    if not cursor:
        return ""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        text = base64.b64decode(padded, altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise HTTPException(400, "cursor is not a cursor of this list") from None
    if "\x00" in text or encode_cursor(text) != cursor:
        raise HTTPException(400, "cursor is not a cursor of this list")
    return text


def in_utc(name: str, value: datetime) -> datetime:
    """A query time in UTC; a 422 like any invalid parameter when it has no UTC equivalent."""
    try:
        return value.astimezone(UTC)
    except OverflowError:
        error = {"type": "value_error", "loc": ("query", name), "msg": "out of range", "input": ""}
        raise RequestValidationError([error]) from None


def budget_or_404(conn: psycopg.Connection, tid: str, bid: str) -> BudgetView:
    """The tenant's opened budget `bid` (404 otherwise)."""
    return _or_404(get_budget(conn, tid, bid))


def _found(row: tuple[Any, ...] | None) -> BudgetView:
    """The budget of `budget_read`'s row (404 when there is none)."""
    return _or_404(None if row is None else budget_view(row))


def _or_404(budget: BudgetView | None) -> BudgetView:
    if budget is None:
        raise HTTPException(404, "no such budget")
    return budget


@router.get("", response_model=BudgetPage, summary="the tenant's budgets, a page at a time")
def budgets(
    tid: TenantId, conn: ReadSession, limit: Limit = 100, cursor: Cursor = None
) -> BudgetPage:
    """Opened budgets with balances and utilization, in budget_id order (keyset pagination)."""
    page, last = list_budgets(conn, tid, decode_cursor(cursor), limit)
    return BudgetPage(budgets=[BudgetOut.of(b) for b in page], next_cursor=encode_cursor(last))


@router.get("/{bid}", response_model=BudgetOut, responses=_NOT_FOUND, summary="one budget")
async def budget(tid: TenantId, bid: BudgetId, access: Access) -> Response:
    """Balances, limits, currency, period start and `next_reset_at` (null for rolling)."""
    (row,) = await hot_read(access, [budget_read(tid, bid)])
    return model_response(BudgetOut.of(_found(row)))


@router.get(
    "/{bid}/utilization",
    response_model=UtilizationOut,
    responses=_NOT_FOUND,
    summary="balances and cap flags, now or at a point in time",
)
async def utilization(
    tid: TenantId,
    bid: BudgetId,
    access: Access,
    as_of: Annotated[
        AwareDatetime | None,
        Query(description="RFC 3339 with offset: the balances after the last event by then"),
    ] = None,
) -> Response:
    """With `as_of`, the balances in the budget's last ledger event recorded at or before it
    (404 when it had none by then), with the cap flags of the limits in force then."""
    if as_of is None:
        (row,) = await hot_read(access, [budget_read(tid, bid)])
        budget = _found(row)
        return model_response(UtilizationOut.current(budget))
    at_time = in_utc("as_of", as_of)
    row, at = await hot_read(access, [budget_read(tid, bid), as_of_read(tid, bid, at_time)])
    budget = _found(row)
    if at is None:
        raise HTTPException(404, "the budget has no ledger event at or before as_of")
    return model_response(UtilizationOut.at(budget, balances_at(budget, at), at_time))


@router.get(
    "/{bid}/reservations",
    response_model=ReservationPage,
    responses=_NOT_FOUND,
    summary="the budget's reservations, a page at a time",
)
def reservations(
    tid: TenantId,
    bid: BudgetId,
    conn: ReadSession,
    status: Annotated[Literal["reserved", "charged", "released", "expired"] | None, Query()] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> ReservationPage:
    """Reservations in ref_id order (keyset pagination), optionally of one status."""
    budget = budget_or_404(conn, tid, bid)
    page, last = list_reservations(conn, budget, status, decode_cursor(cursor), limit)
    return ReservationPage(
        reservations=[ReservationOut.of(r, budget.digits) for r in page],
        next_cursor=encode_cursor(last),
    )
