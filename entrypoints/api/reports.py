"""`/v1/tenants/{tid}/budgets/{bid}/report` and `/v1/tenants/{tid}/report`: range reports as
JSON or CSV (projections/reports.py aggregates in SQL; entrypoints/report_render.py renders).
The tenant report is streamed a budget at a time."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Query
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response, StreamingResponse
from pydantic import AwareDatetime

from budget_ledger.entrypoints.api.auth import ReadSession, TenantId
from budget_ledger.entrypoints.api.budgets import BudgetId, budget_or_404, in_utc
from budget_ledger.entrypoints.api.models import (
    AUTH_ERRORS,
    BudgetReportOut,
    Problem,
    TenantReportOut,
)
from budget_ledger.entrypoints.report_render import (
    coalesced,
    content_disposition,
    csv_chunks,
    csv_filename,
    report_json,
    tenant_json_chunks,
)
from budget_ledger.projections.api_reads import BudgetView
from budget_ledger.projections.reports import RangeSpec, budget_report, tenant_reports

CSV_TYPE = "text/csv; charset=utf-8"
_CSV: dict[str, Any] = {"content": {"text/csv": {"schema": {"type": "string"}}}}

router = APIRouter(
    prefix="/v1/tenants/{tid}",
    tags=["reports"],
    responses={
        **AUTH_ERRORS,
    },
)

Since = Annotated[
    AwareDatetime | None,
    Query(alias="from", description="inclusive, RFC 3339 with offset (with `to`)"),
]
Until = Annotated[
    AwareDatetime | None, Query(alias="to", description="exclusive, RFC 3339 with offset")
]
Period = Annotated[
    Literal["today", "week", "month", "quarter", "year"] | None,
    Query(description="instead of from/to: the current period in the budget's time zone"),
]
Format = Annotated[Literal["json", "csv"], Query(description="json (default) or csv")]


def range_spec(since: datetime | None, until: datetime | None, period: str | None) -> RangeSpec:
    """The requested range; a 422 like any invalid parameter when it is not one."""
    since = None if since is None else in_utc("from", since)
    until = None if until is None else in_utc("to", until)
    try:
        return RangeSpec.of(since, until, period)
    except ValueError as exc:
        error = {"type": "value_error", "loc": ("query", "from"), "msg": str(exc), "input": ""}
        raise RequestValidationError([error]) from None


@router.get(
    "/budgets/{bid}/report",
    response_model=BudgetReportOut,
    responses={200: _CSV, 404: {"model": Problem, "description": "no such budget"}},
    summary="one budget's report over a date range",
)
def budget_report_endpoint(
    tid: TenantId,
    bid: BudgetId,
    conn: ReadSession,
    since: Since = None,
    until: Until = None,
    period: Period = None,
    format: Format = "json",
) -> Response:
    """Opening and closing balances, count and total per event type, refusals per reason, peak
    utilization and alerts raised in [from, to), or in the current `period`."""
    spec = range_spec(since, until, period)
    budget = budget_or_404(conn, tid, bid)
    start, end = spec.for_budget(budget, datetime.now(UTC))
    report = budget_report(conn, budget, start, end)
    if format == "json":
        return Response(orjson.dumps(report_json(report)), media_type="application/json")
    name = csv_filename(tid, bid, spec, start, end)
    return Response(
        b"".join(csv_chunks([report])),
        media_type=CSV_TYPE,
        headers={"Content-Disposition": content_disposition(name)},
    )


@router.get(
    "/report",
    response_model=TenantReportOut,
    responses={200: _CSV},
    summary="every budget's report over a date range, and totals",
)
def tenant_report_endpoint(
    tid: TenantId,
    conn: ReadSession,
    since: Since = None,
    until: Until = None,
    period: Period = None,
    format: Format = "json",
) -> Response:
    """The budget report of each budget of the tenant (budget_id order), streamed; JSON ends
    with totals per currency, CSV is one row per budget."""
    spec = range_spec(since, until, period)
    now = datetime.now(UTC)

    def range_of(budget: BudgetView) -> tuple[datetime, datetime]:
        return spec.for_budget(budget, now)

    # The request's transaction stays open until the response is sent (FastAPI closes
    # dependencies with yield after the body), so the stream reads through it lazily.
    reports = tenant_reports(conn, tid, range_of)
    if format == "json":
        return StreamingResponse(
            coalesced(tenant_json_chunks(tid, spec, reports)), media_type="application/json"
        )
    name = csv_filename(tid, None, spec)
    return StreamingResponse(
        coalesced(csv_chunks(reports)),
        media_type=CSV_TYPE,
        headers={"Content-Disposition": content_disposition(name)},
    )
