"""`/v1/tenants/{tid}/commands/{command_id}`: the outcome of a command."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from budget_ledger.entrypoints.api.auth import ID_PATTERN, ReadSession, TenantId
from budget_ledger.entrypoints.api.models import AUTH_ERRORS, CommandOut, DeadLetteredOut
from budget_ledger.projections.alert_reads import DeadLetter, dead_letter
from budget_ledger.projections.api_reads import command_outcome
from budget_ledger.schemas.events import rfc3339_utc

router = APIRouter(
    prefix="/v1/tenants/{tid}/commands",
    tags=["commands"],
    responses={
        **AUTH_ERRORS,
    },
)

CommandId = Annotated[str, Path(pattern=ID_PATTERN, description="The command's command_id")]


@router.get(
    "/{command_id}", response_model=CommandOut | DeadLetteredOut, summary="a command's outcome"
)
def command(
    tid: TenantId, command_id: CommandId, conn: ReadSession
) -> CommandOut | DeadLetteredOut:
    """The ledger event the command produced (accepted or refused); else `dead_lettered` with
    the reason when the ledger dead-lettered it; else `pending`."""
    outcome = command_outcome(conn, tid, command_id)
    if outcome is None:
        # The ledger first: a command id dead-lettered once (e.g. a retry that reused it with
        # another body) may also have its recorded event, and that is its outcome.
        dead = dead_letter(conn, tid, command_id)
        if dead is not None:
            return dead_lettered(command_id, dead)
        return CommandOut(command_id=command_id, status="pending")
    return CommandOut(
        command_id=command_id,
        status="recorded",
        budget_id=outcome.budget_id,
        sequence=outcome.sequence,
        type=outcome.type,
        event=outcome.event,
    )


def dead_lettered(command_id: str, dead: DeadLetter) -> DeadLetteredOut:
    """The answer for a dead-lettered command."""
    return DeadLetteredOut(
        command_id=command_id,
        error_class=dead.error_class,
        reason=dead.reason,
        recorded_at=rfc3339_utc(dead.recorded_at),
    )
