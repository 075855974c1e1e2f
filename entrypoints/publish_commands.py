"""Sub-commands that publish one command to the ledger: `send` and the audited `adjust`."""

from __future__ import annotations

import argparse
import sys
import uuid

from budget_ledger.entrypoints.errors import EXIT_OK, CliError
from budget_ledger.ledger.settings import Settings


def cmd_send(args: argparse.Namespace, settings: Settings) -> int:
    """Publish one command (JSON from the argument or stdin), keyed `tenant_id:budget_id`;
    with --wait, print the ledger's answer and exit 1 when it refused the command."""
    from budget_ledger.consumers.client import (
        SigningUnavailable,
        send_raw_command,
        settings_signer,
    )
    from budget_ledger.schemas.commands import CommandInvalid

    raw = args.json if args.json not in (None, "-") else sys.stdin.read()
    signer = settings_signer(settings, args.principal, args.tenant_scope)
    try:
        if args.wait:
            from budget_ledger.consumers.client import OutcomeTimeout
            from budget_ledger.entrypoints.outcome import parse_object, send_and_wait

            try:
                fields = parse_object(raw.encode("utf-8"))
                return send_and_wait(settings, fields, args.timeout, signer)
            except (OutcomeTimeout, TimeoutError) as exc:
                raise CliError(f"{exc}; is the consumer (and relay) running?") from None
        try:
            key = send_raw_command(settings, raw.encode("utf-8"), signer=signer)
        except TimeoutError as exc:
            raise CliError(
                f"{exc}; check LEDGER_KAFKA_BOOTSTRAP and the Kafka credentials"
            ) from None
    except CommandInvalid as exc:
        raise CliError(f"invalid command ({exc.error_class}): {exc.reason}") from None
    except SigningUnavailable as exc:
        raise CliError(str(exc)) from None
    print(f"sent to {settings.topic_commands} key={key}")
    return EXIT_OK


def cmd_adjust(args: argparse.Namespace, settings: Settings) -> int:
    """Publish an audited `adjust` command (signed amount, reason) for one budget, signed as the
    operator, and wait for the ledger's answer (`--wait [SECONDS]`, the default): exit 0 when
    applied (the new balances are printed), 1 when refused or dead-lettered (the reason is
    printed), 2 when no answer came in time. The ledger records the signed principal as the
    operator."""
    from budget_ledger.consumers.client import (
        LedgerClient,
        OutcomeTimeout,
        SigningUnavailable,
        settings_signer,
    )
    from budget_ledger.entrypoints.outcome import send_and_wait
    from budget_ledger.schemas.commands import CommandInvalid

    signer = settings_signer(settings, args.operator, args.tenant_scope)
    if signer is None:
        raise CliError("adjust must be signed: set LEDGER_SIGNING_KEYS and LEDGER_SIGNING_KEY_ID")
    command = {
        "type": "adjust",
        "command_id": args.command_id or f"adjust-{uuid.uuid4()}",
        "tenant_id": args.tenant,
        "budget_id": args.budget,
        "amount": args.amount,
        "reason": args.reason,
        "operator": signer.principal,
    }
    # `--wait SECONDS` bounds the wait; a bare `--wait` (or none) waits up to --timeout.
    timeout = args.wait_seconds if args.wait_seconds else args.timeout
    try:
        if args.wait:
            return send_and_wait(settings, command, timeout, signer)
        with LedgerClient(settings, signer=signer) as client:
            client.send(command, track=False)
            client.flush()
    except CommandInvalid as exc:
        raise CliError(f"invalid adjust ({exc.error_class}): {exc.reason}") from None
    except SigningUnavailable as exc:
        raise CliError(str(exc)) from None
    except (OutcomeTimeout, TimeoutError) as exc:
        raise CliError(
            f"{exc}; the adjustment {command['command_id']} may still be applied later - "
            "check that `budget-ledger consume` and `relay` run, then look at the ledger"
        ) from None
    print(
        f"sent adjust {command['command_id']} to {settings.topic_commands} "
        f"key={args.tenant}:{args.budget}"
    )
    return EXIT_OK


def add_send(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `send`."""
    p = sub.add_parser("send", help="publish one command", description=cmd_send.__doc__)
    p.add_argument(
        "json", nargs="?", default=None, help="the command as JSON; '-' or omitted reads stdin"
    )
    p.add_argument("--wait", action="store_true", help="wait for the ledger's answer")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait (default 30)")
    _add_signing_arguments(p, "--principal")
    p.set_defaults(handler=cmd_send)


def _add_signing_arguments(p: argparse.ArgumentParser, flag: str) -> None:
    p.add_argument(
        flag,
        default=None,
        help="who signs a privileged command (default LEDGER_SIGNING_PRINCIPAL, else the login)",
    )
    p.add_argument(
        "--tenant-scope",
        default="*",
        help="the tenant the signature is limited to (default '*': any tenant)",
    )


def _seconds(text: str) -> float:
    value = float(text)
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError("SECONDS must be > 0 and at most 3600")
    return value


def add_adjust(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `adjust`."""
    p = sub.add_parser(
        "adjust", help="publish an audited correction", description=cmd_adjust.__doc__
    )
    p.add_argument("--tenant", required=True)
    p.add_argument("--budget", required=True)
    p.add_argument("--amount", required=True, help="signed decimal, e.g. 12.50 or -3.00")
    p.add_argument("--reason", required=True)
    p.add_argument("--command-id", default=None, help="idempotency key (default: a new UUID)")
    _add_signing_arguments(p, "--operator")
    waiting = p.add_mutually_exclusive_group()
    waiting.add_argument(
        "--wait",
        dest="wait_seconds",
        nargs="?",
        type=_seconds,
        const=0.0,
        default=0.0,
        metavar="SECONDS",
        help="wait for the ledger's answer, at most SECONDS (default: --timeout); exit 1 with "
        "the reason when it refuses or dead-letters the adjustment (the default)",
    )
    waiting.add_argument(
        "--no-wait",
        dest="wait",
        action="store_false",
        help="exit once Kafka has the command (exit code 0)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        help="seconds to wait for the ledger's answer (default 30)",
    )
    p.set_defaults(handler=cmd_adjust)
