"""`/v1/tenants/{tid}/commands/{command_id}`: the outcome of a command."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from budget_ledger.entrypoints.api.auth import ID_PATTERN, ReadSession, TenantId
from budget_ledger.entrypoints.api.models import CommandOut, Problem
from budget_ledger.projections.api_reads import command_outcome

router = APIRouter(
    prefix="/v1/tenants/{tid}/commands",
    tags=["commands"],
    responses={
        401: {"model": Problem, "description": "no, unknown or revoked API key"},
        403: {"model": Problem, "description": "another tenant, or a missing scope"},
    },
)

CommandId = Annotated[str, Path(pattern=ID_PATTERN, description="The command's command_id")]


@router.get("/{command_id}", response_model=CommandOut, summary="a command's outcome")
def command(tid: TenantId, command_id: CommandId, conn: ReadSession) -> CommandOut:
    """The ledger event the command produced (accepted or refused), else `pending`.

    A dead-lettered command never reaches the ledger: it stays `pending` here (its reason is
    on the DLQ topic; docs/api.md)."""
    outcome = command_outcome(conn, tid, command_id)
    if outcome is None:
        return CommandOut(command_id=command_id, status="pending")
    return CommandOut(
        command_id=command_id,
        status="recorded",
        budget_id=outcome.budget_id,
        sequence=outcome.sequence,
        type=outcome.type,
        event=outcome.event,
    )
