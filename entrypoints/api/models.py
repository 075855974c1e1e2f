"""Response bodies of the API (they make the OpenAPI document): money as decimal text with the
budget's own digits, times as RFC 3339 UTC text, exactly as on the wire."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import Response
from pydantic import BaseModel, Field

from budget_ledger.projections.api_reads import BalancesAt, BudgetView, ReservationView
from budget_ledger.schemas.events import rfc3339_utc
from budget_ledger.schemas.money import to_decimal_str

Money = str  # decimal text, e.g. "12.50"


def model_response(model: BaseModel) -> Response:
    """`model` as JSON, the body FastAPI would render for it, serialized once by pydantic (FastAPI
    validates a returned model against the response model again; a returned Response it sends)."""
    return Response(model.model_dump_json(by_alias=True), media_type="application/json")


def _time(dt: datetime | None) -> str | None:
    return None if dt is None else rfc3339_utc(dt)


def _money(minor: int | None, digits: int) -> Money | None:
    return None if minor is None else to_decimal_str(minor, digits)


class BudgetConfigOut(BaseModel):
    """Limits of a budget."""

    period: str
    hard_cap: Money | None
    soft_cap: Money | None
    soft_threshold_pct: int
    hard_threshold_pct: int
    period_allowance: Money | None
    rollover: bool
    timezone: str
    reservation_ttl_seconds: int | None


class BudgetOut(BaseModel):
    """A budget's balances after its last event, its limits and its period."""

    tenant_id: str
    budget_id: str
    currency: str
    funded: Money
    reserved: Money
    charged: Money
    available: Money
    limit: Money
    utilization_pct: str = Field(description="committed / limit, percent with 2 decimals")
    soft_cap_exceeded: bool
    hard_cap_approaching: bool
    sequence: int
    period_start: str | None
    next_reset_at: str | None = Field(description="the next period boundary; null for rolling")
    config: BudgetConfigOut
    updated_at: str

    @classmethod
    def of(cls, b: BudgetView) -> BudgetOut:
        """Render a budget."""
        d, c = b.digits, b.config
        return cls(
            tenant_id=b.tenant_id,
            budget_id=b.budget_id,
            currency=b.currency,
            funded=to_decimal_str(b.funded, d),
            reserved=to_decimal_str(b.reserved, d),
            charged=to_decimal_str(b.charged, d),
            available=to_decimal_str(b.available, d),
            limit=to_decimal_str(b.limit, d),
            utilization_pct=b.utilization_pct,
            soft_cap_exceeded=b.soft_cap_exceeded,
            hard_cap_approaching=b.hard_cap_approaching,
            sequence=b.sequence,
            period_start=_time(b.period_start),
            next_reset_at=_time(b.next_reset_at),
            config=BudgetConfigOut(
                period=c.period,
                hard_cap=_money(c.hard_cap, d),
                soft_cap=_money(c.soft_cap, d),
                soft_threshold_pct=c.soft_threshold_pct,
                hard_threshold_pct=c.hard_threshold_pct,
                period_allowance=_money(c.period_allowance, d),
                rollover=c.rollover,
                timezone=c.timezone,
                reservation_ttl_seconds=c.reservation_ttl_seconds,
            ),
            updated_at=rfc3339_utc(b.updated_at),
        )


class BudgetPage(BaseModel):
    """One page of budgets; pass `next_cursor` as `cursor` for the next (null: the last)."""

    budgets: list[BudgetOut]
    next_cursor: str | None


class UtilizationOut(BaseModel):
    """Balances and cap flags after the budget's last event (or its last event at `as_of`)."""

    tenant_id: str
    budget_id: str
    currency: str
    funded: Money
    reserved: Money
    charged: Money
    available: Money
    limit: Money
    utilization_pct: str
    soft_cap_exceeded: bool
    hard_cap_approaching: bool
    sequence: int
    as_of: str | None = Field(description="the requested time, null for the current balances")
    recorded_at: str | None = Field(description="when the event of these balances was recorded")

    @classmethod
    def current(cls, b: BudgetView) -> UtilizationOut:
        """The budget's balances now."""
        return cls._of(b, b, None, None)

    @classmethod
    def at(cls, b: BudgetView, at: BalancesAt, as_of: datetime) -> UtilizationOut:
        """The budget's balances after its last event at or before `as_of`."""
        return cls._of(b, at, rfc3339_utc(as_of), rfc3339_utc(at.recorded_at))

    @classmethod
    def _of(
        cls, b: BudgetView, src: BudgetView | BalancesAt, as_of: str | None, recorded_at: str | None
    ) -> UtilizationOut:
        d = b.digits  # the budget's own digits, whichever balances are shown
        return cls(
            tenant_id=b.tenant_id,
            budget_id=b.budget_id,
            currency=b.currency,
            funded=to_decimal_str(src.funded, d),
            reserved=to_decimal_str(src.reserved, d),
            charged=to_decimal_str(src.charged, d),
            available=to_decimal_str(src.available, d),
            limit=to_decimal_str(src.limit, d),
            utilization_pct=src.utilization_pct,
            soft_cap_exceeded=src.soft_cap_exceeded,
            hard_cap_approaching=src.hard_cap_approaching,
            sequence=src.sequence,
            as_of=as_of,
            recorded_at=recorded_at,
        )


class ReservationOut(BaseModel):
    """One reservation: reserved, then charged (fully or partly), released or expired."""

    ref_id: str
    status: str
    amount: Money
    charged: Money
    expires_at: str | None
    command_id: str
    created_seq: int
    updated_seq: int

    @classmethod
    def of(cls, r: ReservationView, digits: int) -> ReservationOut:
        """Render a reservation with its budget's digits."""
        return cls(
            ref_id=r.ref_id,
            status=r.status,
            amount=to_decimal_str(r.amount, digits),
            charged=to_decimal_str(r.charged, digits),
            expires_at=_time(r.expires_at),
            command_id=r.command_id,
            created_seq=r.created_seq,
            updated_seq=r.updated_seq,
        )


class ReservationPage(BaseModel):
    """One page of reservations; pass `next_cursor` as `cursor` for the next (null: the last)."""

    reservations: list[ReservationOut]
    next_cursor: str | None


class CommandOut(BaseModel):
    """A command's outcome: `recorded` with its ledger event (accepted or refused), or
    `pending` (not in the ledger yet; a dead-lettered command answers `DeadLetteredOut`)."""

    command_id: str
    status: Literal["recorded", "pending"]
    budget_id: str | None = None
    sequence: int | None = None
    type: str | None = None
    event: dict[str, Any] | None = Field(default=None, description="the event as on the wire")


class DeadLetteredOut(BaseModel):
    """The ledger dead-lettered the command (bad signature, idempotency conflict, invalid
    message, ...): it did not reach the ledger; the API sends its Idempotency-Key no more."""

    command_id: str
    status: Literal["dead_lettered"] = "dead_lettered"
    error_class: str = Field(description="e.g. unauthorized, idempotency_conflict, schema")
    reason: str
    recorded_at: str = Field(description="when the consumer dead-lettered it (RFC 3339 UTC)")


class AlertOut(BaseModel):
    """One alert as on the alerts topic (its `recorded_at` is the time of the event that raised
    it): percentages and money as decimal text."""

    alert_id: str
    type: str
    severity: str
    tenant_id: str
    budget_id: str
    utilization_pct: str
    threshold: str
    sequence: int
    recorded_at: str
    data: dict[str, Any]


class AlertPageOut(BaseModel):
    """Alerts newest first; pass `next_cursor` as `cursor` for older ones (null: no more)."""

    alerts: list[AlertOut]
    next_cursor: str | None


class Problem(BaseModel):
    """An error: what went wrong, in one line."""

    detail: str


# The answers every keyed endpoint may give before its handler runs (auth.py).
AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "no, unknown or revoked API key"},
    403: {"model": Problem, "description": "another tenant, or a missing scope"},
}


class WriteAccepted(BaseModel):
    """A write's command is in Kafka (`pending`: its outcome is not known yet), or was already
    in the ledger (`recorded`: a retry; `GET .../commands/{command_id}` shows its event)."""

    command_id: str
    status: Literal["pending", "recorded"]


class RefusalOut(BaseModel):
    """The ledger refused the command by its rules: the refusal event and its reason."""

    command_id: str
    reason: str = Field(description="a refusal reason, e.g. insufficient_funds")
    detail: Any = Field(default=None, description="what the rule found (text or an object)")
    event: dict[str, Any] = Field(description="the refusal event as on the wire")


class ValidationProblem(BaseModel):
    """Invalid input, as FastAPI reports it: a list of errors, each with `loc`, `msg`, `type`."""

    detail: list[dict[str, Any]]


# --- reports (entrypoints/api/reports.py; rendered by entrypoints/report_render.py) -------------


class ReportBalancesOut(BaseModel):
    """Balances after the budget's last event before a time (sequence 0: none by then)."""

    sequence: int
    funded: Money
    reserved: Money
    charged: Money
    available: Money
    utilization_pct: str
    recorded_at: str | None


class ReportTypeOut(BaseModel):
    """Events of one type: how many, and the sum of their `amount`."""

    count: int
    amount: Money


class BudgetReportOut(BaseModel):
    """One budget over [from, to): balances at both ends, events per type, refusals per reason,
    the highest utilization after an event in the range (null: no event), alerts per type."""

    tenant_id: str
    budget_id: str
    currency: str
    from_: str = Field(alias="from")
    to: str
    opening: ReportBalancesOut
    closing: ReportBalancesOut
    event_count: int
    events: dict[str, ReportTypeOut]
    refusals: dict[str, int]
    peak_utilization_pct: str | None
    alerts_raised: dict[str, int]


class ReportSumsOut(BaseModel):
    """Balances summed over budgets."""

    funded: Money
    reserved: Money
    charged: Money
    available: Money


class ReportTotalsOut(BaseModel):
    """Sums over the tenant report's budgets of one currency."""

    currency: str
    budgets: int
    opening: ReportSumsOut
    closing: ReportSumsOut
    event_count: int
    events: dict[str, ReportTypeOut]
    refusals: dict[str, int]
    alerts_raised: dict[str, int]


class TenantReportOut(BaseModel):
    """Every budget of the tenant (that had an event before its range ended), then the totals
    per currency. With `period`, `from` and `to` are null and each budget has its own range."""

    tenant_id: str
    from_: str | None = Field(alias="from")
    to: str | None
    period: str | None
    budgets: list[BudgetReportOut]
    totals: list[ReportTotalsOut]


# --- webhooks (entrypoints/api/webhooks.py, docs/webhooks.md) ------------------------------------


class WebhookOut(BaseModel):
    """A webhook endpoint (its signing secret is never shown again after creation)."""

    id: str
    url: str
    alert_kinds: list[str] | None = Field(description="null: every kind")
    budget_id: str | None = Field(description="null: every budget")
    created_at: str
    disabled_at: str | None
    disabled_reason: str | None
    failing_since: str | None = Field(description="first failed attempt since the last success")


class WebhookCreated(WebhookOut):
    """The new endpoint and its Standard Webhooks signing secret, shown this once."""

    secret: str = Field(description="`whsec_<base64>`: verify `webhook-signature` with it")


class WebhookList(BaseModel):
    """The tenant's endpoints, oldest first."""

    webhooks: list[WebhookOut]


class WebhookAttemptOut(BaseModel):
    """One HTTP attempt of a delivery (`status_code` null: no answer)."""

    attempt: int
    attempted_at: str
    status_code: int | None
    latency_ms: int
    error: str | None


class WebhookDeliveryOut(BaseModel):
    """One alert's delivery to the endpoint, with its attempts (oldest first)."""

    id: int
    alert_id: str = Field(description="the `webhook-id` header the receiver de-duplicates on")
    alert_type: str
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    next_attempt_at: str | None = Field(description="when pending: the next attempt is due")
    last_status: int | None
    last_error: str | None
    latency_ms: int | None
    created_at: str
    updated_at: str
    log: list[WebhookAttemptOut]


class WebhookDeliveryPage(BaseModel):
    """Deliveries newest first; pass `next_cursor` as `cursor` for older ones (null: no more)."""

    deliveries: list[WebhookDeliveryOut]
    next_cursor: str | None


class RedeliverOut(BaseModel):
    """How many of the endpoint's alerts were queued again."""

    queued: int


class MonitorOut(BaseModel):
    """A balance monitor: `metric operator threshold`, and whether it is armed (its condition
    does not hold: it fires on the next crossing) or fired (the condition holds since it fired)."""

    monitor_id: str
    metric: Literal["available", "utilization_pct", "reserved", "charged", "funded"]
    operator: Literal["<", "<=", ">", ">="]
    threshold: str = Field(description="money in the budget's currency, or a percent")
    armed: bool
    state: Literal["armed", "fired"]


class MonitorList(BaseModel):
    """The monitors of one budget, by monitor_id, as of its last event (`sequence`)."""

    budget_id: str
    currency: str
    sequence: int
    monitors: list[MonitorOut]
