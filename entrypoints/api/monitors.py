"""`/v1/tenants/{tid}/budgets/{bid}/monitors`: a budget's balance monitors (docs/api.md,
"Monitors"). Setting or removing one publishes a `set_monitor` / `remove_monitor` command through
the writes' own path (`writes._write`: Idempotency-Key, signing, `?wait`); the list is read from
the balance projection, with each monitor's armed/fired state as of the budget's last event.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any, Final

from fastapi import APIRouter, HTTPException, Path, Request
from fastapi.responses import JSONResponse

from budget_ledger.entrypoints.api import writes
from budget_ledger.entrypoints.api.auth import ReadSession, TenantId
from budget_ledger.entrypoints.api.budgets import BudgetId, budget_or_404
from budget_ledger.entrypoints.api.models import MonitorList, MonitorOut, Problem
from budget_ledger.entrypoints.api.writes import IdempotencyKey, Wait, Writer
from budget_ledger.ledger.state import Monitor
from budget_ledger.projections.monitor_reads import budget_monitors
from budget_ledger.schemas.codec import pct_text
from budget_ledger.schemas.money import to_decimal_str

router = APIRouter(
    prefix="/v1/tenants/{tid}/budgets/{bid}/monitors",
    tags=["monitors"],
    # The writes' answers (401, 403, 409, 422, ...); their 200 (an event) on the writes only.
    responses={k: v for k, v in writes.router.responses.items() if k != 200},
)
_APPLIED: Final[dict[int | str, dict[str, Any]]] = {200: writes.router.responses[200]}

# Monitor ids in a path: what the command's id rule allows (no whitespace, at most 128).
MonitorId = Annotated[str, Path(pattern=r"^\S{1,128}$", description="The monitor")]


def _generated_id(command_id: str) -> str:
    # From the Idempotency-Key, so a retry of the same request sends the same command.
    return "m-" + hashlib.sha256(command_id.encode()).hexdigest()[:20]


def _set_body_doc() -> dict[str, Any]:
    doc = writes._body_doc("set_monitor", writes._ON_BUDGET)
    schema = doc["requestBody"]["content"]["application/json"]["schema"]
    schema["required"] = [k for k in schema["required"] if k != "monitor_id"]
    schema["properties"]["monitor_id"] = {
        **schema["properties"]["monitor_id"],
        "description": "optional: generated from the Idempotency-Key when left out",
    }
    return doc


_WRITE: Final[dict[str, Any]] = writes._WRITE


@router.post(
    "",
    **_WRITE,
    responses=_APPLIED,
    openapi_extra=_set_body_doc(),
    summary="add or replace a balance monitor (fires balance_monitor alerts)",
)
async def set_monitor(
    request: Request, tid: TenantId, bid: BudgetId, caller: Writer,
    idempotency_key: IdempotencyKey, wait: Wait = None,
) -> JSONResponse:  # fmt: skip
    """`set_monitor`: `metric` `operator` `threshold` (money, or a percent for
    utilization_pct); `monitor_id` generated from the Idempotency-Key when left out."""
    return await writes._write(
        request, caller, "set_monitor", idempotency_key, wait, {"budget_id": bid},
        defaults={"monitor_id": _generated_id(idempotency_key)},
    )  # fmt: skip


@router.delete(
    "/{monitor_id}",
    **_WRITE,
    responses=_APPLIED,
    summary="remove a balance monitor",
)
async def remove_monitor(
    request: Request, tid: TenantId, bid: BudgetId, monitor_id: MonitorId, caller: Writer,
    idempotency_key: IdempotencyKey, wait: Wait = None,
) -> JSONResponse:  # fmt: skip
    """`remove_monitor` (a monitor the budget does not have is refused: monitor_not_found)."""
    path = {"budget_id": bid, "monitor_id": monitor_id}
    return await writes._write(
        request, caller, "remove_monitor", idempotency_key, wait, path, body=b"{}"
    )


def _out(mid: str, m: Monitor, digits: int) -> MonitorOut:
    pct = m.metric == "utilization_pct"
    threshold = pct_text(m.threshold) if pct else to_decimal_str(m.threshold, digits)
    return MonitorOut(
        monitor_id=mid,
        metric=m.metric,
        operator=m.operator,
        threshold=threshold,
        armed=m.armed,
        state="armed" if m.armed else "fired",
    )


@router.get(
    "",
    response_model=MonitorList,
    responses={404: {"model": Problem, "description": "no such budget of this tenant"}},
    summary="the budget's balance monitors and their armed/fired state",
)
def list_monitors(tid: TenantId, bid: BudgetId, conn: ReadSession) -> MonitorList:
    """Monitors by monitor_id, from the balance projection (as of the budget's last event)."""
    budget = budget_or_404(conn, tid, bid)
    found = budget_monitors(conn, tid, bid)
    if found is None:
        raise HTTPException(404, "no such budget")
    sequence, monitors = found
    return MonitorList(
        budget_id=bid,
        currency=budget.currency,
        sequence=sequence,
        monitors=[_out(mid, m, budget.digits) for mid, m in sorted(monitors.items())],
    )
