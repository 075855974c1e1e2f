"""`POST /v1/tenants/{tid}/budgets/{bid}/reconcile` (operator): replay one budget from the
ledger with the reconciler's own code (projections.shard.replay_shard, this tenant and budget,
as the API's reader role bound to the tenant), and answer its drift per field, its chain
status and, for a funded drift, the adjust that would fix it (not sent)."""

from __future__ import annotations

from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, Field

from budget_ledger.entrypoints.api.auth import Caller, TenantId, require_briefly
from budget_ledger.entrypoints.api.budgets import BudgetId
from budget_ledger.entrypoints.api.models import AUTH_ERRORS, Problem
from budget_ledger.ledger.settings import Settings
from budget_ledger.projections.api_reads import get_budget, tenant_connection, tenant_session
from budget_ledger.projections.drift import Drift
from budget_ledger.projections.reconcile_options import ReconcileOptions
from budget_ledger.projections.shard import replay_shard
from budget_ledger.schemas.money import to_decimal_str

router = APIRouter(
    prefix="/v1/tenants/{tid}/budgets",
    tags=["reconcile"],
    responses={
        **AUTH_ERRORS,
        404: {"model": Problem, "description": "no such budget of this tenant"},
        503: {"model": Problem, "description": "the database is unavailable"},
    },
)

# Fields holding money in minor units, per table: rendered as decimal text.
_MONEY: Final = {
    "budget_balances": frozenset({"funded", "reserved", "charged", "available", "budget_limit"}),
    "reservations": frozenset({"amount", "charged"}),
}


class DriftOut(BaseModel):
    """A projection field that differs from the replay of the ledger."""

    table: str = Field(description="budget_balances or reservations")
    key: str = Field(description="the budget, or the reservation's ref_id")
    field: str = Field(description="the column, or `row` for a row present on one side only")
    expected: Any = Field(description="what the ledger's replay gives")
    stored: Any = Field(description="what the projection holds")
    difference: str | None = Field(default=None, description="stored - expected, for numbers")


class ChainOut(BaseModel):
    """The budget's hash chain: `ok`, or `broken` at its first bad link."""

    status: str = Field(description="ok or broken")
    sequence: int | None = None
    problem: str | None = None


class AdjustFix(BaseModel):
    """The body of `POST .../adjust` that would fix a funded drift (not sent)."""

    amount: str = Field(description="signed decimal text: stored funded - expected funded")
    reason: str


class ReconcileOut(BaseModel):
    """What replaying the budget from its ledger found."""

    tenant_id: str
    budget_id: str
    events: int = Field(description="ledger events replayed")
    clean: bool = Field(description="no drift and an unbroken chain")
    chain: ChainOut
    mac_checked: bool = Field(description="MACs were verified (the API holds LEDGER_CHAIN_KEYS)")
    drift: list[DriftOut]
    adjust: AdjustFix | None = Field(
        default=None, description="for a funded drift: the adjust that would fix it (not sent)"
    )


Operator = Annotated[Caller, Depends(require_briefly("operator"))]


@router.post(
    "/{bid}/reconcile", response_model=ReconcileOut, summary="replay and verify one budget"
)
def reconcile(request: Request, tid: TenantId, bid: BudgetId, caller: Operator) -> ReconcileOut:
    """Replay the budget's ledger through the rules, verify its hash chain, compare the
    projections; nothing is written (no checkpoint, no alert, no adjust)."""
    settings: Settings = request.app.state.settings
    with tenant_session(request.app.state.pool, tid) as conn:
        budget = get_budget(conn, tid, bid)
    if budget is None:
        raise HTTPException(404, "no such budget")
    # The reconciler's own replay, as the API's reader role bound to this tenant (row-level
    # security, migration 015): one shard, this tenant and budget only, read-only.
    keys = settings.chain_keyring()
    opts = ReconcileOptions(tenant=tid, budget=bid, progress=False, chain_keys=keys)
    with tenant_connection(settings.api_dsn(), settings.api_database_role, tid) as conn:
        result = replay_shard(conn, opts)
    broken = result.broken[0] if result.broken else None
    drifts = [_drift(d, budget.digits) for d in result.drifts]
    return ReconcileOut(
        tenant_id=tid,
        budget_id=bid,
        events=result.events,
        clean=broken is None and not drifts,
        chain=ChainOut(status="ok")
        if broken is None
        else ChainOut(status="broken", sequence=broken.sequence, problem=broken.problem),
        mac_checked=keys is not None,
        drift=drifts,
        adjust=_fix(result.drifts, budget.digits),
    )


def _money(table: str, name: str, value: Any, digits: int) -> Any:
    if name in _MONEY.get(table, ()) and isinstance(value, int) and not isinstance(value, bool):
        return to_decimal_str(value, digits)
    return value


def _drift(d: Drift, digits: int) -> DriftOut:
    difference = None
    if d.difference is not None:
        money = d.field in _MONEY.get(d.table, ())
        difference = to_decimal_str(d.difference, digits) if money else str(d.difference)
    return DriftOut(
        table=d.table,
        key=d.key,
        field=d.field,
        expected=_money(d.table, d.field, d.expected, digits),
        stored=_money(d.table, d.field, d.actual, digits),
        difference=difference,
    )


def _fix(drifts: list[Drift], digits: int) -> AdjustFix | None:
    """An adjust of (stored - expected) funded: appended to the ledger, it makes the ledger's
    funded what the projection shows (docs/api.md says when a rebuild is the better fix)."""
    for d in drifts:
        if d.table == "budget_balances" and d.field == "funded" and d.difference:
            return AdjustFix(
                amount=to_decimal_str(d.difference, digits),
                reason=(
                    f"reconcile: funded drift, ledger {to_decimal_str(d.expected, digits)}, "
                    f"stored {to_decimal_str(d.actual, digits)}"
                ),
            )
    return None
