"""`/v1/tenants/{tid}/webhooks`: a tenant's webhook endpoints, their delivery log and
redelivery (write scope; docs/webhooks.md). Reads run on the reader role under row-level
security; changes go through the SECURITY DEFINER functions of migration 013, which act only for
the tenant bound to the transaction once the key was verified."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from psycopg_pool import ConnectionPool
from pydantic import AfterValidator, AwareDatetime, BaseModel, Field

from budget_ledger.consumers.ssrf import registration_problem
from budget_ledger.consumers.webhook_deliverer import DISABLED_ALERT
from budget_ledger.consumers.webhook_signing import new_secret
from budget_ledger.entrypoints.api.auth import (
    ID_PATTERN,
    Caller,
    TenantId,
    db_pool,
    require_briefly,
)
from budget_ledger.entrypoints.api.budgets import Cursor, decode_cursor, encode_cursor, in_utc
from budget_ledger.entrypoints.api.models import (
    AUTH_ERRORS,
    Problem,
    RedeliverOut,
    ValidationProblem,
    WebhookAttemptOut,
    WebhookCreated,
    WebhookDeliveryOut,
    WebhookDeliveryPage,
    WebhookList,
    WebhookOut,
)
from budget_ledger.ledger.sql import load_queries
from budget_ledger.projections.api_reads import bind_tenant, read_transaction
from budget_ledger.schemas.events import ALERT_TYPES, rfc3339_utc

MAX_DELIVERIES_PAGE = 200
# Every alert kind of the ledger, and the deliverer's own; a new kind is accepted as it is added.
KINDS: tuple[str, ...] = (*ALERT_TYPES, DISABLED_ALERT)


def _known_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"not an alert kind; one of {', '.join(KINDS)}")
    return kind


WebhookKind = Annotated[
    str, Field(json_schema_extra={"enum": list(KINDS)}), AfterValidator(_known_kind)
]

router = APIRouter(
    prefix="/v1/tenants/{tid}/webhooks",
    tags=["webhooks"],
    responses={
        **AUTH_ERRORS,
        422: {"model": ValidationProblem, "description": "an invalid body or parameter"},
    },
)

Writer = Annotated[Caller, Depends(require_briefly("write"))]
EndpointId = Annotated[str, Path(pattern=r"^whe_[0-9a-f]{24}$", description="The endpoint")]


class WebhookIn(BaseModel):
    """A new endpoint: its https URL, the alert kinds it wants (null: all), and a budget."""

    url: str = Field(min_length=1, max_length=2048, description="https://... (see docs)")
    alert_kinds: list[WebhookKind] | None = Field(default=None, min_length=1, max_length=16)
    budget_id: str | None = Field(default=None, pattern=ID_PATTERN)


def _q() -> dict[str, str]:
    return load_queries("budget_ledger.consumers", "webhook_queries.sql")


def _write(pool: ConnectionPool, tenant: str, query: str, params: dict[str, Any]) -> Any:
    """Run one of migration 013's functions in a read-write transaction bound to `tenant`."""
    with pool.connection() as conn, conn.transaction():
        bind_tenant(conn, tenant)
        row = conn.execute(_q()[query], params).fetchone()
    return None if row is None else row[0]


def _time(dt: datetime | None) -> str | None:
    return None if dt is None else rfc3339_utc(dt)


def _endpoint(row: tuple[Any, ...]) -> WebhookOut:
    eid, url, kinds, budget, created, disabled, reason, failing = row
    return WebhookOut(
        id=eid, url=url, alert_kinds=kinds, budget_id=budget, created_at=rfc3339_utc(created),
        disabled_at=_time(disabled), disabled_reason=reason, failing_since=_time(failing),
    )  # fmt: skip


def _endpoint_or_404(conn: psycopg.Connection, tenant: str, endpoint: str) -> WebhookOut:
    row = conn.execute(_q()["api_get"], {"tenant": tenant, "endpoint": endpoint}).fetchone()
    if row is None:
        raise HTTPException(404, "no such webhook endpoint")
    return _endpoint(row)


@router.post(
    "",
    status_code=201,
    response_model=WebhookCreated,
    responses={400: {"model": Problem, "description": "a body that is not JSON"}},
    summary="register an endpoint (answers its signing secret, once)",
)
def create(request: Request, tid: TenantId, body: WebhookIn, caller: Writer) -> WebhookCreated:
    """Register an endpoint for the tenant's alerts. The URL must be https (with
    LEDGER_WEBHOOK_ALLOW_PRIVATE=true, http to loopback too); a loopback, private, link-local
    or metadata host is refused here and, after resolving its name, at every delivery."""
    allow = request.app.state.settings.webhook_allow_private
    problem = registration_problem(body.url, allow)
    if problem is not None:
        raise HTTPException(422, [{"loc": ["body", "url"], "msg": problem, "type": "value_error"}])
    endpoint, secret = f"whe_{secrets.token_hex(12)}", new_secret()
    kinds = None if body.alert_kinds is None else sorted(set(body.alert_kinds))
    _write(db_pool(request), tid, "api_create", {
        "endpoint": endpoint, "url": body.url, "kinds": kinds, "budget": body.budget_id,
        "secret": secret,
    })  # fmt: skip
    with read_transaction(db_pool(request)) as conn:
        bind_tenant(conn, tid)
        out = _endpoint_or_404(conn, tid, endpoint)
    return WebhookCreated(**out.model_dump(), secret=secret)


@router.get("", response_model=WebhookList, summary="the tenant's endpoints (no secrets)")
def list_webhooks(request: Request, tid: TenantId, caller: Writer) -> WebhookList:
    """Every endpoint of the tenant, oldest first, with its health (`failing_since`,
    `disabled_at`)."""
    with read_transaction(db_pool(request)) as conn:
        bind_tenant(conn, tid)
        rows = conn.execute(_q()["api_list"], {"tenant": tid}).fetchall()
    return WebhookList(webhooks=[_endpoint(r) for r in rows])


@router.delete(
    "/{eid}",
    status_code=204,
    response_class=Response,
    responses={404: {"model": Problem, "description": "no such endpoint of this tenant"}},
    summary="delete an endpoint and its delivery log",
)
def delete(request: Request, tid: TenantId, eid: EndpointId, caller: Writer) -> Response:
    """Delete the endpoint; its pending deliveries are dropped with it."""
    if not _write(db_pool(request), tid, "api_delete", {"endpoint": eid}):
        raise HTTPException(404, "no such webhook endpoint")
    return Response(status_code=204)


@router.get(
    "/{eid}/deliveries",
    response_model=WebhookDeliveryPage,
    responses={
        400: {"model": Problem, "description": "a cursor that is not one of this list"},
        404: {"model": Problem, "description": "no such endpoint of this tenant"},
    },
    summary="the endpoint's delivery log, newest first",
)
def deliveries(
    request: Request,
    tid: TenantId,
    eid: EndpointId,
    caller: Writer,
    limit: Annotated[int, Query(ge=1, le=MAX_DELIVERIES_PAGE)] = 50,
    cursor: Cursor = None,
) -> WebhookDeliveryPage:
    """Each delivery (one alert) with its status and attempts: time, status code, latency."""
    text = decode_cursor(cursor)
    if text and not (text.isdigit() and len(text) < 19):
        raise HTTPException(400, "cursor is not a cursor of this list")
    before = int(text) if text else 2**63 - 1
    q = _q()
    with read_transaction(db_pool(request)) as conn:
        bind_tenant(conn, tid)
        _endpoint_or_404(conn, tid, eid)
        rows = conn.execute(
            q["api_deliveries"], {"tenant": tid, "endpoint": eid, "before": before, "limit": limit}
        ).fetchall()
        logs: dict[int, list[WebhookAttemptOut]] = {}
        for did, n, at, code, ms, err in conn.execute(
            q["api_attempts"], {"tenant": tid, "ids": [r[0] for r in rows]}
        ).fetchall():
            logs.setdefault(did, []).append(
                WebhookAttemptOut(attempt=n, attempted_at=rfc3339_utc(at), status_code=code,
                                  latency_ms=ms, error=err)
            )  # fmt: skip
    out = [
        WebhookDeliveryOut(
            id=did, alert_id=aid, alert_type=kind, status=status, attempts=attempts,
            next_attempt_at=_time(nxt) if status == "pending" else None, last_status=code,
            last_error=err, latency_ms=ms, created_at=rfc3339_utc(created),
            updated_at=rfc3339_utc(updated), log=logs.get(did, []),
        )
        for did, aid, kind, status, attempts, nxt, code, err, ms, created, updated in rows
    ]  # fmt: skip
    last = str(rows[-1][0]) if len(rows) == limit else None
    return WebhookDeliveryPage(deliveries=out, next_cursor=encode_cursor(last))


@router.post(
    "/{eid}/redeliver",
    response_model=RedeliverOut,
    responses={404: {"model": Problem, "description": "no such endpoint of this tenant"}},
    summary="send the endpoint's alerts since a time again",
)
def redeliver(
    request: Request,
    tid: TenantId,
    eid: EndpointId,
    caller: Writer,
    since: Annotated[AwareDatetime, Query(description="RFC 3339 with offset")],
) -> RedeliverOut:
    """Queue again every alert of the alert history recorded since `since` that matches the
    endpoint (same `webhook-id` as before: receivers de-duplicate)."""
    start = in_utc("since", since)
    with read_transaction(db_pool(request)) as conn:
        bind_tenant(conn, tid)
        _endpoint_or_404(conn, tid, eid)
    queued = _write(db_pool(request), tid, "api_redeliver", {"endpoint": eid, "since": start})
    return RedeliverOut(queued=int(queued or 0))
