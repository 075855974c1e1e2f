"""Send one command and report the ledger's answer on a terminal (`send --wait`, `adjust`)."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import orjson

from budget_ledger.consumers.client import (
    CommandDeadLettered,
    CommandNotDelivered,
    LedgerClient,
    Refused,
)
from budget_ledger.ledger.settings import Settings
from budget_ledger.schemas.commands import CommandInvalid
from budget_ledger.schemas.signing import Signer

EXIT_APPLIED = 0
EXIT_REFUSED = 1


def parse_object(raw: bytes) -> dict[str, Any]:
    """Raw JSON as a command's field mapping; CommandInvalid("json", ...) when it is not one."""
    try:
        fields = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise CommandInvalid("json", f"invalid JSON: {exc}") from None
    if not isinstance(fields, dict):
        raise CommandInvalid("json", "a command is a JSON object")
    return fields


def send_and_wait(
    settings: Settings, command: Mapping[str, Any], timeout: float, signer: Signer | None = None
) -> int:
    """Publish `command` (a privileged one signed by `signer`, default this process's key), wait
    for its outcome and print it; return 0 when applied, 1 when refused or dead-lettered.
    Raises CommandInvalid before sending, OutcomeTimeout after."""
    with LedgerClient(settings, signer=signer) as client:
        ref = client.send(command)
        where = f"{ref.command_id} ({ref.tenant_id}:{ref.budget_id})"
        try:
            outcome = client.await_outcome(ref, timeout=timeout)
        except (CommandDeadLettered, CommandNotDelivered) as exc:
            print(f"{where} not applied: {exc}", file=sys.stderr)
            return EXIT_REFUSED
    if isinstance(outcome, Refused):
        detail = outcome.event.get("data", {}).get("detail")
        print(
            f"{where} refused: {outcome.reason}" + (f" ({detail})" if detail else ""),
            file=sys.stderr,
        )
        return EXIT_REFUSED
    b = outcome.balances
    print(
        f"{where} {outcome.event_type} (sequence {outcome.sequence}): funded={b.funded} "
        f"reserved={b.reserved} charged={b.charged} available={b.available} "
        f"utilization={b.utilization_pct}%"
    )
    return EXIT_APPLIED
